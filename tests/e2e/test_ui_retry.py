"""The user's path on the sandbox: `build-cluster/<name>` run as a deployment on the sandbox's worker, a late
node step that fails once, and Retry clicked in the Prefect UI in headless Chromium: only what failed and
what never ran run again, and the retried run ends with a passing smoke test.

The fault: worker-1's `/usr/local/bin/kubelet` is a directory while the build runs, so installing the
kubelet fails in that node's bootstrap step (phase 5 of 6); the directory is removed before Retry.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import yaml

from sandbox.cli import DEMO_PHASES
from tests.e2e.conftest import REPO, SPEC, Sandbox
from tests.ui.conftest import _missing, browser_page, screenshots  # noqa: F401  (fixtures)
from tests.ui.pages import PrefectUI
from tests.ui.retry_checks import check_retry
from tests.ui.stack import RetryingClient, task_runs, wait_flow_run

pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))

LATE = "worker-1"
BLOCKER = "/usr/local/bin/kubelet"


def _groundup(sandbox: Sandbox, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "groundup.cli", *args], cwd=REPO, env=sandbox.env,
                          capture_output=True, text=True, timeout=600)


def _launch_nodes(sandbox: Sandbox) -> None:
    """Network and compute first, so the late node exists to be broken before the run starts."""
    launched = _groundup(sandbox, "build", str(SPEC), "--phases", "network,compute")
    assert launched.returncode == 0, launched.stderr[-3000:]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if sandbox.node_exec(LATE, "systemctl", "is-system-running", "--wait").returncode in (0, 1):
                return
        except KeyError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{LATE} did not boot in 60 s")


def test_retry_clicked_in_the_ui_reruns_the_failed_node_step_and_the_cluster_passes_smoke(
        sandbox: Sandbox, browser_page, screenshots) -> None:  # noqa: F811
    deployed = _groundup(sandbox, "deploy", str(SPEC), "--nightly", "off")
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    spec = yaml.safe_load(SPEC.read_text())
    api_url = sandbox.env["PREFECT_API_URL"]
    api = RetryingClient(base_url=api_url, timeout=30)
    deployment = api.get(f"/deployments/name/build-cluster/{spec['name']}").raise_for_status().json()
    _launch_nodes(sandbox)
    sandbox.node_exec(LATE, "rm", "-f", BLOCKER)
    blocked = sandbox.node_exec(LATE, "mkdir", "-p", f"{BLOCKER}/not-a-binary")
    assert blocked.returncode == 0, blocked.stderr
    try:
        run = api.post(f"/deployments/{deployment['id']}/create_flow_run",
                       json={"parameters": {"spec": spec, "phases": DEMO_PHASES}}).raise_for_status().json()
        failed = wait_flow_run(api, run["id"], timeout=900)
        assert failed["state_type"] == "FAILED", failed["state"]
        assert LATE in failed["state"]["message"] and "bootstrap" in failed["state"]["message"], failed["state"]
    finally:
        sandbox.node_exec(LATE, "rm", "-rf", BLOCKER)
    first_attempt = task_runs(api, run["id"])

    ui = PrefectUI(browser_page, api_url.removesuffix("/api"))
    deployment_page = ui.deployment(deployment["id"])
    assert failed["name"] in deployment_page.runs_in_state("Failed")
    page = deployment_page.open_run(failed["name"])
    page.screenshot_graph(screenshots / "sandbox-build-cluster-failed.png")
    page.retry()
    assert page.wait_for_state("Completed", timeout=900) == "Completed"
    page.screenshot_graph(screenshots / "sandbox-build-cluster-retried.png")

    retried = api.get(f"/flow_runs/{run['id']}").raise_for_status().json()
    assert retried["state_type"] == "COMPLETED" and retried["run_count"] == 2, retried["state"]
    failed_before, executed = check_retry(first_attempt, task_runs(api, run["id"]))
    assert failed_before == {f"bootstrap-{LATE}"}, failed_before
    assert not {name for name in executed if name.startswith(("create-", "distribute-", "certificate"))}, executed
    assert {name for name in executed if name.startswith("smoke")}, "the smoke phase ran after the retry, and passed"
    installed = sandbox.node_exec(LATE, "test", "-f", BLOCKER)
    assert installed.returncode == 0, "the retried bootstrap installed the kubelet"
