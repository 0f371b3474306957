"""The same browser test on the sandbox's full build (every phase, smoke included), ready to switch on.

Not collected here (the sandbox is driven by tests/e2e only). To enable it, the sandbox's owner adds
`tests/e2e/test_ui_retry.py` containing:

    from tests.ui.conftest import browser_page, screenshots  # noqa: F401  (fixtures)
    from tests.ui.sandbox_retry import test_retry_clicked_in_the_ui_on_the_sandbox  # noqa: F401

The fault: sshd stopped on the last worker while the build runs, so its late node steps fail
(boot timeout 5 s); sshd comes back before Retry is clicked in the browser.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import yaml

from tests.ui.pages import PrefectUI
from tests.ui.retry_checks import check_retry
from tests.ui.stack import RetryingClient, task_runs, wait_flow_run


def test_retry_clicked_in_the_ui_on_the_sandbox(sandbox, browser_page, screenshots) -> None:
    from tests.e2e.conftest import REPO, SPEC

    deployed = subprocess.run([sys.executable, "-m", "groundup.cli", "deploy", str(SPEC)], cwd=REPO,
                              env=sandbox.env, capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    spec = yaml.safe_load(SPEC.read_text())
    spec["ssh"] = {**spec.get("ssh", {}), "boot_timeout_s": 5}
    late = f"worker-{int(spec.get('worker_count', 3)) - 1}"
    api_url = sandbox.env["PREFECT_API_URL"]
    api: httpx.Client = RetryingClient(base_url=api_url, timeout=30)
    deployment = api.get(f"/deployments/name/build-cluster/{spec['name']}").raise_for_status().json()

    stopped = sandbox.node_exec(late, "systemctl", "stop", "ssh.service", "ssh.socket")
    assert stopped.returncode == 0, stopped.stderr
    try:
        run = api.post(f"/deployments/{deployment['id']}/create_flow_run",
                       json={"parameters": {"spec": spec}}).raise_for_status().json()
        failed = wait_flow_run(api, run["id"], timeout=900)
        assert failed["state_type"] == "FAILED" and late in failed["state"]["message"], failed["state"]
    finally:
        sandbox.node_exec(late, "systemctl", "start", "ssh.service")
    first_attempt = task_runs(api, run["id"])

    ui = PrefectUI(browser_page, api_url.removesuffix("/api"))
    deployment_page = ui.deployment(deployment["id"])
    assert failed["name"] in deployment_page.runs_in_state("Failed")
    page = deployment_page.open_run(failed["name"])
    page.screenshot_graph(screenshots / "sandbox-build-cluster-failed.png")
    page.retry()
    assert page.wait_for_state("Completed", timeout=900) == "Completed"
    page.screenshot_graph(screenshots / "sandbox-build-cluster-retried.png")

    failed_before, executed = check_retry(first_attempt, task_runs(api, run["id"]))
    assert failed_before and all(late in name for name in failed_before), failed_before
    assert any(name.startswith("smoke") for name in executed), "the smoke phase ran after the retry, and passed"
