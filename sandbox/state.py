"""Where the sandbox keeps its files and its record of what runs.

Layout under the state directory (`/var/lib/groundup-sandbox` or `$GROUNDUP_SANDBOX_STATE`):

    rootfs/base/            the shared Debian rootfs (never booted itself)
    nodes/<ip-a-b-c-d>/     upper/ (the instance's disk), work/, merged/ (the overlay), containerd/, nspawn.log
    nodes.json              the controller's nodes: private IP -> instance id, state, pid, host key, timings
    known_hosts             every node's public host key by private IP (for independent checks; the
                            flows read host keys from the console output only)
    console/<instance_id>   console output moto serves for that instance
    mirror/                 the release mirror, served on the bridge
    loadbalancers/          HAProxy's files per NLB (sandbox.loadbalancer); loadbalancers.status.json
    sandbox.json            the record: subnet, regions, bridge, service ports and process ids
    env                     the environment `make demo` and the tests source
    logs/                   moto, controller, mirror, prefect server, worker
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from groundup import files

DEFAULT_STATE_DIR = Path("/var/lib/groundup-sandbox")
STATE_ENV = "GROUNDUP_SANDBOX_STATE"


def state_dir() -> Path:
    """The sandbox's state directory."""
    return Path(os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR)


def record_path(root: Path) -> Path:
    return root / "sandbox.json"


def known_hosts_path(root: Path) -> Path:
    return root / "known_hosts"


def instances_path(root: Path) -> Path:
    return root / "instances.json"


def console_dir(root: Path) -> Path:
    return root / "console"


def logs_dir(root: Path) -> Path:
    path = root / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_record(root: Path) -> dict:
    """The sandbox record, empty when the sandbox was never brought up."""
    try:
        return json.loads(record_path(root).read_text())
    except FileNotFoundError:
        return {}


def write_record(root: Path, record: dict) -> None:
    atomic_write(record_path(root), json.dumps(record, indent=2, sort_keys=True).encode())


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file so readers see either the old or the new content, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files.atomic_write(path, data, mode=mode, durable=False)


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
