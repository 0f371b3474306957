"""The user's path: `build-cluster/<name>` run as a deployment on the sandbox's worker, a node that
fails, and Retry from the UI (the exact request the Prefect UI sends) re-running only what failed."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import yaml

from groundup.spec import load_spec
from sandbox.cli import DEMO_PHASES
from tests.e2e.conftest import REPO, SPEC, Sandbox

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _api(sandbox: Sandbox) -> httpx.Client:
    return httpx.Client(base_url=sandbox.env["PREFECT_API_URL"], timeout=30)


def _wait_terminal(api: httpx.Client, run_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/flow_runs/{run_id}").raise_for_status().json()
        if run["state_type"] in TERMINAL:
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {run_id} not finished in {timeout} s")


def _task_runs(api: httpx.Client, run_id: str, timeout: float = 30) -> list[dict]:
    """The flow run's task runs once every state has reached the API (task states arrive asynchronously)."""
    body = {"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200}
    deadline = time.monotonic() + timeout
    while True:
        runs = api.post("/task_runs/filter", json=body).raise_for_status().json()
        if all(t["state_type"] in TERMINAL for t in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def test_retry_from_the_ui_reruns_only_the_failed_node_and_the_phases_after_it(sandbox: Sandbox) -> None:
    deployed = subprocess.run([sys.executable, "-m", "groundup.cli", "deploy", str(SPEC)], cwd=REPO,
                              env=sandbox.env, capture_output=True, text=True, timeout=300)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    spec = yaml.safe_load(SPEC.read_text())
    spec["ssh"] = {**spec.get("ssh", {}), "boot_timeout_s": 5}
    api = _api(sandbox)
    deployment = api.get("/deployments/name/build-cluster/groundup-sandbox").raise_for_status().json()
    launched = subprocess.run([sys.executable, "-m", "groundup.cli", "build", str(SPEC), "--phases", "network,compute"],
                              cwd=REPO, env=sandbox.env, capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr[-3000:]
    worker_ip = next(str(n.private_ip) for n in load_spec(SPEC).nodes if n.short_name == "worker-1")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
            worker_ip in sandbox.nodes() and sandbox.node_exec("worker-1", "systemctl", "is-system-running",
                                                               "--wait").returncode in (0, 1)):
        time.sleep(0.5)

    stopped = sandbox.node_exec("worker-1", "systemctl", "stop", "ssh.service", "ssh.socket")
    assert stopped.returncode == 0, stopped.stderr
    try:
        run = api.post(f"/deployments/{deployment['id']}/create_flow_run",
                       json={"parameters": {"spec": spec, "phases": DEMO_PHASES}}).raise_for_status().json()
        first = _wait_terminal(api, run["id"])
        assert first["state_type"] == "FAILED", first["state"]
        assert "worker-1" in first["state"]["message"]
    finally:
        sandbox.node_exec("worker-1", "systemctl", "start", "ssh.service")
    first_runs = {t["id"] for t in _task_runs(api, run["id"])}

    retry = {"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}, "force": True}
    api.post(f"/flow_runs/{run['id']}/set_state", json=retry).raise_for_status()
    second = _wait_terminal(api, run["id"])
    assert second["state_type"] == "COMPLETED", second["state"]
    assert second["run_count"] == 2

    retried = [t for t in _task_runs(api, run["id"]) if t["id"] not in first_runs]
    by_name = {t["name"]: t["state_name"] for t in retried}
    executed = sorted(name for name, state in by_name.items() if state != "Cached")
    later = ("bootstrap-", "create-pod-route-", "remove-stale-pod-routes", "apply-cluster-addons", "smoke-")
    assert [n for n in executed if not n.startswith(later)] == ["distribute-worker-1"], executed
    assert {n.split("-")[0] for n in executed if n.startswith(later)} >= {"bootstrap", "smoke"}, executed
    assert len(by_name) > 40, "every task of every phase was visited, and found cached"
    for cached in ("create-vpc", "create-instance-worker-1", "certificate-authority", "distribute-master-0"):
        matches = [state for name, state in by_name.items() if name.startswith(cached)]
        assert matches == ["Cached"], (cached, by_name)
