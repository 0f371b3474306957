"""Sandbox fixtures: bring the sandbox up once per session (or reuse a running one) and down at the end.
The session holds the sandbox lock from its first e2e test to its end.

Nodes exist only for instances launched in moto (the sandbox's controller boots them), so tests
that need the cluster's nodes build it first. Flows run in subprocesses with the sandbox's env
file, exactly as `make demo` runs them; the checks here talk to the nodes with OpenSSH's client,
independently of the code under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from groundup.spec import load_spec
from sandbox import lifecycle
from sandbox.controller import read_nodes
from sandbox.lock import sandbox_lock
from sandbox.state import read_record, state_dir

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "clusters" / "sandbox.yaml"


def _skip_reason() -> str | None:
    if sys.platform != "linux":
        return "the sandbox runs on Linux only"
    if os.geteuid() != 0:
        return "the sandbox needs root (network namespaces, overlay mounts, systemd-nspawn)"
    if shutil.which("systemd-nspawn") is None and shutil.which("apt-get") is None:
        return "no systemd-nspawn and no apt-get to install it (Debian package systemd-container)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


class Sandbox:
    """A running sandbox: its state directory, record and environment."""

    def __init__(self, state: Path) -> None:
        self.state = state

    @property
    def record(self) -> dict:
        return read_record(self.state)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "GROUNDUP_"))}
        return {**env, **lifecycle.read_env_file(self.state)}

    def nodes(self) -> dict[str, dict]:
        """The controller's nodes by private IP."""
        return {ip: n.to_dict() for ip, n in read_nodes(self.state).items()}

    def node(self, short_name_or_ip: str) -> dict:
        """The node playing a spec node's instance (clusters/sandbox.yaml), or the node at an IP."""
        ip = short_name_or_ip
        for node in load_spec(SPEC).nodes:
            if node.short_name == short_name_or_ip:
                ip = str(node.private_ip)
        return self.nodes()[ip]

    def node_exec(self, short_name_or_ip: str, *argv: str) -> subprocess.CompletedProcess:
        from sandbox.nodes import node_exec

        return node_exec(self.node(short_name_or_ip)["pid"], list(argv))

    def groundup(self, *args: str, timeout: float = 600, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        """`groundup sandbox ...` in a subprocess with the sandbox's environment."""
        return subprocess.run([sys.executable, "-m", "sandbox.cli", "--state", str(self.state), *args],
                              cwd=REPO, env={**self.env, **(extra_env or {})}, capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture(scope="session")
def sandbox():
    """The sandbox, held for this session alone (`sandbox.lock`): another session or a benchmark waits."""
    with sandbox_lock():
        state = state_dir()
        healthy = lifecycle.status(state)
        running = healthy["up"] and healthy["moto"]["running"] and healthy["prefect"]["running"] \
            and healthy["controller"]["running"] and healthy["mirror"]["running"]
        if not running:
            lifecycle.up(state)
        yield Sandbox(state)
        if not running:
            left = lifecycle.down(state)
            assert not any(left.values()), f"sandbox down left behind: {left}"
