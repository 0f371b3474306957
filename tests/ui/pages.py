"""Page objects for the Prefect 3 UI (the one `prefect server start` serves): the same code drives
this suite's own server and the sandbox's. Selectors are the UI's own class names and roles."""

from __future__ import annotations

import re
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
RUN_LINK = "a.flow-run-bread-crumbs__flow-run-link"


class PrefectUI:
    """The UI at `base_url` (e.g. http://127.0.0.1:4200), in one Playwright page."""

    def __init__(self, page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url.rstrip("/")

    def deployment(self, deployment_id: str) -> DeploymentPage:
        self.page.goto(f"{self.base_url}/deployments/deployment/{deployment_id}")
        return DeploymentPage(self)

    def flow_run(self, flow_run_id: str) -> FlowRunPage:
        self.page.goto(f"{self.base_url}/runs/flow-run/{flow_run_id}")
        return FlowRunPage(self)


class DeploymentPage:
    """A deployment's page: its runs, newest first."""

    def __init__(self, ui: PrefectUI) -> None:
        self.ui = ui
        self.page = ui.page
        self.page.locator(RUN_LINK).first.wait_for(timeout=30_000)

    def runs_in_state(self, state: str) -> list[str]:
        """Names of the listed runs whose state badge reads `state` (e.g. 'Failed')."""
        items = self.page.locator("div.state-list-item").filter(
            has=self.page.locator(".state-badge", has_text=re.compile(rf"^\s*{state}\s*$")))
        return [items.nth(i).locator(RUN_LINK).inner_text().strip() for i in range(items.count())]

    def open_run(self, name: str) -> FlowRunPage:
        self.page.locator(RUN_LINK, has_text=name).first.click()
        self.page.wait_for_url(re.compile(r"/runs/flow-run/"))
        return FlowRunPage(self.ui)


class FlowRunPage:
    """A flow run's page: state badge, Retry button, task graph."""

    def __init__(self, ui: PrefectUI) -> None:
        self.ui = ui
        self.page = ui.page
        self.badge.wait_for(timeout=30_000)

    @property
    def badge(self):
        return self.page.locator(".page-heading-flow-run__meta .state-badge").first

    @property
    def run_id(self) -> str:
        return self.page.url.rstrip("/").split("/")[-1].split("?")[0]

    def state(self) -> str:
        return self.badge.inner_text().strip()

    def retry(self) -> None:
        """Press Retry (and confirm, if this UI version asks)."""
        self.page.get_by_role("button", name=re.compile(r"^\s*Retry\s*$")).first.click()
        confirm = self.page.locator(".p-modal").get_by_role("button", name=re.compile("Retry|Confirm"))
        try:
            confirm.first.click(timeout=2_000)
        except Exception:  # no confirmation dialog in this UI version
            pass

    def wait_for_state(self, wanted: str | tuple[str, ...], timeout: float = 300) -> str:
        """Wait until the badge reads one of `wanted`, reloading now and then (the UI polls too)."""
        wanted = (wanted,) if isinstance(wanted, str) else wanted
        deadline = time.monotonic() + timeout
        last_reload = time.monotonic()
        while (state := self.state()) not in wanted:
            if time.monotonic() > deadline:
                raise AssertionError(f"flow run {self.run_id} shows {state!r}, not {wanted}, after {timeout:.0f} s")
            if time.monotonic() - last_reload > 15:
                self.page.reload()
                self.badge.wait_for(timeout=30_000)
                last_reload = time.monotonic()
            self.page.wait_for_timeout(1000)
        return state

    def screenshot_graph(self, path: Path) -> Path:
        """The task graph (timeline) as a PNG, after its canvas has drawn."""
        graph = self.page.locator(".flow-run-graphs").first
        graph.locator("canvas").first.wait_for(timeout=30_000)
        self.page.wait_for_timeout(1500)
        path.parent.mkdir(parents=True, exist_ok=True)
        graph.screenshot(path=str(path))
        return path


class RunForm:
    """A deployment's custom Run form: the parameters rendered from their schema."""

    def __init__(self, ui: PrefectUI, deployment_id: str) -> None:
        self.page = ui.page
        self.page.goto(f"{ui.base_url}/deployments/deployment/{deployment_id}/run")
        self.page.get_by_text("Parameters", exact=False).first.wait_for(timeout=30_000)

    def shows(self, text: str, timeout: float = 15_000) -> bool:
        try:
            self.page.get_by_text(text, exact=False).first.wait_for(timeout=timeout)
        except Exception:
            return False
        return True
