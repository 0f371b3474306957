"""What the deployment and browser tests run against, short of the sandbox: a real `prefect server
start` (own PREFECT_HOME, free loopback port, scheduler on), process workers on the `groundup` pool,
and a fault-injecting proxy in front of the session's moto server (`sandbox.faultproxy`: the flows reach it
through `AWS_ENDPOINT_URL`, so no flow code changes to inject a failure)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sandbox.faultproxy import Fault, FaultProxy
from sandbox.moto import free_port
from sandbox.prefect_server import REPO_ROOT, base_environment, start_server, stop_group, wait_healthy

__all__ = ["AWS_TEST_ENV", "Fault", "FaultProxy", "PrefectStack", "RetryingClient", "child_flow_runs",
           "prefect_stack", "task_runs", "wait_flow_run"]

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-2"}


class RetryingClient(httpx.Client):
    """Retries 503 (SQLite busy under concurrent writers), as Prefect's own client does."""

    def request(self, *args, **kwargs) -> httpx.Response:  # type: ignore[override]
        for attempt in range(20):
            response = super().request(*args, **kwargs)
            if response.status_code != 503:
                return response
            time.sleep(0.25 * (attempt + 1))
        return response


# Prefect server and workers ----------------------------------------------------------------------

@dataclass
class PrefectStack:
    """A Prefect server of our own, plus the workers started on it."""

    home: Path
    port: int
    server_pid: int
    workers: list[int] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a process that talks to this server."""
        return {**base_environment(self.home), "PREFECT_API_URL": self.api_url, **extra}

    def api(self) -> httpx.Client:
        return RetryingClient(base_url=self.api_url, timeout=30)

    def start_worker(self, name: str, pool: str, env: dict[str, str], log: Path) -> int:
        """`prefect worker start` on the pool from the repository root, polling every 2 s."""
        import subprocess

        full = {**os.environ, **self.env(), "PREFECT_WORKER_QUERY_SECONDS": "2",
                "PREFECT_WORKER_PREFETCH_SECONDS": "5", **env}
        full.pop("PYTEST_CURRENT_TEST", None)
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", pool,
                 "--type", "process", "--name", name],
                env=full, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=REPO_ROOT,
            )
        self.workers.append(process.pid)
        return process.pid

    def stop_worker(self, pid: int) -> None:
        stop_group(pid, signals=2)
        if pid in self.workers:
            self.workers.remove(pid)

    def stop(self) -> None:
        for pid in list(self.workers):
            self.stop_worker(pid)
        stop_group(self.server_pid)


@contextmanager
def prefect_stack(home: Path) -> Iterator[PrefectStack]:
    """Start `prefect server start` under `home` (its own PREFECT_HOME) and point this process at it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    pid = start_server(home, port, home / "prefect-server.log",
                       env={**os.environ, "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
                            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"})
    stack = PrefectStack(home, port, pid)
    try:
        wait_healthy(port, pid, timeout=180)
        with temporary_settings({PREFECT_API_URL: stack.api_url}):
            yield stack
    finally:
        stack.stop()


# waiting on the API ------------------------------------------------------------------------------

def wait_flow_run(api: httpx.Client, run_id: str, states: set[str] = TERMINAL, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/flow_runs/{run_id}").raise_for_status().json()
        if run["state_type"] in states:
            return run
        time.sleep(0.5)
    raise AssertionError(f"flow run {run_id} did not reach {sorted(states)} in {timeout:.0f} s: {run['state']}")


def task_runs(api: httpx.Client, flow_run_id: str, timeout: float = 30) -> list[dict]:
    """The flow run's task runs once every state has reached the API (states arrive asynchronously)."""
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200}
    deadline = time.monotonic() + timeout
    while True:
        runs = api.post("/task_runs/filter", json=body).raise_for_status().json()
        if runs and all(t["state_type"] in TERMINAL for t in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def child_flow_runs(api: httpx.Client, parent_id: str) -> list[dict]:
    """Subflow runs of a flow run, oldest first."""
    parents = api.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [parent_id]}}}).raise_for_status().json()
    ids = [t["id"] for t in parents]
    if not ids:
        return []
    body = {"flow_runs": {"parent_task_run_id": {"any_": ids}}, "sort": "START_TIME_ASC"}
    return api.post("/flow_runs/filter", json=body).raise_for_status().json()
