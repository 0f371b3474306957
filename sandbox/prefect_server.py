"""The sandbox's Prefect: a server on loopback (SQLite under the state directory), the `groundup`
process work pool and a worker, so flows run exactly as deployments do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sandbox.state import pid_alive

WORK_POOL = "groundup"
REPO_ROOT = Path(__file__).resolve().parent.parent


def prefect_exe() -> str:
    return str(Path(sys.executable).with_name("prefect"))


def prefect_home(state: Path) -> Path:
    return state / "prefect"


def base_environment(state: Path) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(prefect_home(state)),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # leases on disk: a restarted server still knows them and expires them (in memory, the slots
        # of leases held across a restart stay taken)
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
    }


def start_server(state: Path, port: int, log: Path, env: dict[str, str] | None = None) -> int:
    """Start `prefect server start` on 127.0.0.1:port in its own session; returns its pid."""
    env = {**(env or os.environ), **base_environment(state)}
    env.pop("PREFECT_API_URL", None)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [prefect_exe(), "server", "start", "--host", "127.0.0.1", "--port", str(port),
             "--analytics-off"],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=state,
        )
    return process.pid


def api_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(api_url(port) + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_healthy(port: int, pid: int, timeout: float = 120.0) -> float:
    started = time.monotonic()
    while not healthy(port):
        if not pid_alive(pid):
            raise RuntimeError("the Prefect server exited while starting; see logs/prefect-server.log")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the Prefect server did not become healthy in {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


def ensure_work_pool(env: dict[str, str], name: str = WORK_POOL) -> None:
    """Create the process work pool unless it exists."""
    full = {**os.environ, **env}
    inspect = subprocess.run([prefect_exe(), "work-pool", "inspect", name], env=full,
                             capture_output=True, text=True)
    if inspect.returncode == 0:
        return
    create = subprocess.run([prefect_exe(), "work-pool", "create", name, "--type", "process"],
                            env=full, capture_output=True, text=True)
    if create.returncode != 0 and "already exists" not in create.stdout + create.stderr:
        raise RuntimeError(f"cannot create work pool {name}: {create.stdout}{create.stderr}")


# The local worker asks for work every 2 s, not Prefect's 10: a deployment run starts ~8 s sooner.
WORKER_QUERY_SECONDS = "2"


def start_worker(env: dict[str, str], log: Path, name: str = WORK_POOL) -> int:
    """Start `prefect worker start` on the pool, from the repository root; returns its pid."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [prefect_exe(), "worker", "start", "--pool", name, "--type", "process",
             "--name", "groundup-sandbox-worker"],
            env={**os.environ, "PREFECT_WORKER_QUERY_SECONDS": WORKER_QUERY_SECONDS, **env}, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT,
        )
    return process.pid


def stop_group(pid: int | None, signals: int = 1, timeout: float = 15.0) -> None:
    """Stop a process we started in its own session, and everything it started.

    The worker needs two signals to stop, hence `signals`.
    """
    if not pid:
        return
    for _ in range(signals if pid_alive(pid) else 0):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout / signals
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
