"""Bring the sandbox up, take it down, say what runs.

`up` is idempotent: what already runs is kept, what is missing is started. `down` stops every
process the sandbox started (found by a marker in their environment, not only by the record),
unmounts every overlay and deletes every namespace, veth and the bridge.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from groundup.spec import ClusterSpec, load_spec
from sandbox import netns, nodes, prefect_server, rootfs
from sandbox.moto import free_port, start_moto_server, wait_for_moto
from sandbox.state import (atomic_write, console_dir, instances_path, known_hosts_path, logs_dir,
                           pid_alive, read_record, record_path, write_record)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO_ROOT / "clusters" / "sandbox.yaml"
OWNER_ENV = "GROUNDUP_SANDBOX_OWNER"
MOTO_PORT = 5055
PREFECT_PORT = 4200


class SandboxError(RuntimeError):
    """The sandbox cannot do what was asked; the message says what to do."""


@dataclass
class UpReport:
    """What `up` did and how long each part took (seconds)."""

    timings: dict[str, float] = field(default_factory=dict)
    started_nodes: list[str] = field(default_factory=list)


def preflight() -> None:
    """Refuse where the sandbox cannot run."""
    if os.geteuid() != 0:
        raise SandboxError(
            "the sandbox needs root: it creates network namespaces, mounts overlays and boots "
            "systemd-nspawn containers. Run it as root (e.g. `sudo groundup sandbox up`)."
        )
    if sys.platform != "linux":
        raise SandboxError("the sandbox runs on Linux only")


def install_packages() -> None:
    script = REPO_ROOT / "scripts" / "install-sandbox-deps.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SandboxError(f"installing the sandbox's Debian packages failed:\n{result.stderr.strip()}")
    if shutil.which("systemd-nspawn") is None:
        raise SandboxError("systemd-nspawn is not available (Debian package systemd-container)")
    with open("/proc/filesystems") as handle:
        if "overlay" not in handle.read():
            subprocess.run(["modprobe", "overlay"], capture_output=True)


def owned_environment(state: Path) -> dict[str, str]:
    """The environment of every process the sandbox starts: the marker `down` looks for."""
    return {**os.environ, OWNER_ENV: str(state.resolve()), "GROUNDUP_SANDBOX_STATE": str(state)}


def sandbox_environment(state: Path, record: dict) -> dict[str, str]:
    """What clients of the sandbox need: the env file's content."""
    env = {
        "GROUNDUP_SANDBOX_STATE": str(state),
        "AWS_ENDPOINT_URL": record["moto"]["endpoint"],
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": record["region"],
        "GROUNDUP_ARTIFACTS": str(state / "artifacts"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if record.get("prefect"):
        env["PREFECT_API_URL"] = record["prefect"]["api_url"]
        env["PREFECT_HOME"] = str(prefect_server.prefect_home(state))
    return env


def env_file(state: Path) -> Path:
    return state / "env"


def write_env_file(state: Path, env: dict[str, str]) -> Path:
    lines = ["# groundup sandbox: `source` this file (written by `groundup sandbox up`)"]
    lines += [f"export {key}={_shell_quote(value)}" for key, value in sorted(env.items())]
    path = env_file(state)
    atomic_write(path, ("\n".join(lines) + "\n").encode())
    return path


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def read_env_file(state: Path) -> dict[str, str]:
    """The variables of the env file, empty when the sandbox is down."""
    path = env_file(state)
    if not path.exists():
        return {}
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, value = line[len("export "):].split("=", 1)
            env[key] = value[1:-1].replace("'\\''", "'")
    return env


def _moto_alive(record: dict) -> bool:
    moto = record.get("moto") or {}
    if not pid_alive(moto.get("pid")):
        return False
    try:
        wait_for_moto(moto["endpoint"], timeout=2)
    except (OSError, TimeoutError):
        return False
    return True


def _port(preferred: int, recorded: int | None) -> int:
    for port in (recorded, preferred):
        if port:
            import socket

            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue
    return free_port()


def up(spec_path: Path, state: Path, with_prefect: bool = True, out=print) -> UpReport:
    """Bring the sandbox up for the spec's nodes (idempotent)."""
    report = UpReport()
    started = time.monotonic()
    preflight()
    spec = load_spec(spec_path)
    state.mkdir(parents=True, exist_ok=True)
    logs = logs_dir(state)
    record = read_record(state)
    if record.get("cluster") and record["cluster"] != spec.name and _running_nodes(record):
        raise SandboxError(
            f"the sandbox already runs cluster '{record['cluster']}'; run `groundup sandbox down` first"
        )
    t = time.monotonic()
    install_packages()
    report.timings["packages"] = time.monotonic() - t
    if not (record.get("nodes") and netns.link_exists(netns.BRIDGE)):
        netns.check_range_free(spec.subnet_cidr)

    t = time.monotonic()
    out("base rootfs: " + ("cached" if rootfs.is_cached(state) else "building with mmdebstrap (about a minute)"))
    rootfs.build_base(state, logs / "rootfs.log")
    report.timings["rootfs"] = time.monotonic() - t

    ensure_inotify_instances(len(spec.nodes), record)
    t = time.monotonic()
    node_records = start_nodes(spec, state, report)
    report.timings["nodes"] = time.monotonic() - t
    record.update({
        "cluster": spec.name,
        "spec": str(Path(spec_path).resolve()),
        "region": spec.region,
        "subnet": str(spec.subnet_cidr),
        "bridge": netns.BRIDGE,
        "nodes": [n.to_dict() for n in node_records],
    })
    write_record(state, record)
    nodes.write_known_hosts(state, node_records)

    t = time.monotonic()
    env = owned_environment(state)
    if not _moto_alive(record):
        port = _port(MOTO_PORT, (record.get("moto") or {}).get("port"))
        os.environ[OWNER_ENV] = env[OWNER_ENV]
        try:
            server = start_moto_server(state / "moto", port=port, log=logs / "moto.log", console_dir=console_dir(state))
        finally:
            os.environ.pop(OWNER_ENV, None)
        record["moto"] = {"pid": server.process.pid, "port": port, "endpoint": server.endpoint}
        write_record(state, record)
    report.timings["moto"] = time.monotonic() - t

    _restart_cloudinit(state, record, env, logs)

    if with_prefect:
        t = time.monotonic()
        ensure_prefect(state, record, env, logs)
        report.timings["prefect"] = time.monotonic() - t
    write_record(state, record)
    write_env_file(state, sandbox_environment(state, record))
    report.timings["total"] = time.monotonic() - started
    return report


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_PER_NODE = 8


def ensure_inotify_instances(node_count: int, record: dict) -> None:
    """Each node's systemd holds several inotify instances; the default 128 stops about 20 nodes.

    Raised only when too low; the original value is kept in the record and restored by `down`.
    """
    current = int(INOTIFY_INSTANCES.read_text())
    needed = 128 + INOTIFY_PER_NODE * node_count
    if current < needed:
        record.setdefault("inotify_max_user_instances", current)
        INOTIFY_INSTANCES.write_text(f"{needed}\n")


def start_nodes(spec: ClusterSpec, state: Path, report: UpReport) -> list[nodes.NodeRecord]:
    """Network, overlay, identity and boot for every node not already running; waits for sshd."""
    netns.ensure_bridge(spec.subnet_cidr)
    base = rootfs.base_dir(state)
    records = []
    for node in spec.nodes:
        ns = netns.ensure_node_network(node.short_name, node.private_ip, spec.subnet_cidr)
        merged = nodes.prepare_overlay(state, base, node.short_name)
        host_key = nodes.ensure_identity(merged, node.hostname, str(node.private_ip))
        record = nodes.NodeRecord(
            short_name=node.short_name, role=node.role.value, private_ip=str(node.private_ip),
            hostname=node.hostname, namespace=ns, root=str(merged), host_key=host_key,
        )
        pid_file = nodes.node_dir(state, node.short_name) / "nspawn.pid"
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        if not (pid and pid_alive(pid) and pid in nodes.nspawn_pids(state)):
            pid = nodes.boot(state, record)
            report.started_nodes.append(node.short_name)
        record.pid = pid
        records.append(record)
    t = time.monotonic()
    for record in records:
        nodes.wait_for_ssh(record.private_ip, pid=record.pid, timeout=120)
    report.timings["boot_wait"] = time.monotonic() - t
    return records


def _restart_cloudinit(state: Path, record: dict, env: dict[str, str], logs: Path) -> None:
    prefect_server.stop_group((record.get("cloudinit") or {}).get("pid"))
    with open(logs / "cloudinit.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.cloudinit", "--state", str(state)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=REPO_ROOT,
        )
    record["cloudinit"] = {"pid": process.pid}


def ensure_prefect(state: Path, record: dict, env: dict[str, str], logs: Path) -> None:
    current = record.get("prefect") or {}
    if not (pid_alive(current.get("pid")) and prefect_server.healthy(current.get("port", 0))):
        port = _port(PREFECT_PORT, current.get("port"))
        pid = prefect_server.start_server(state, port, logs / "prefect-server.log", env)
        prefect_server.wait_healthy(port, pid)
        record["prefect"] = {"pid": pid, "port": port, "api_url": prefect_server.api_url(port)}
        write_record(state, record)
    client_env = {**env, **sandbox_environment(state, record)}
    prefect_server.ensure_work_pool(client_env)
    worker = record.get("worker") or {}
    if not pid_alive(worker.get("pid")):
        record["worker"] = {"pid": prefect_server.start_worker(client_env, logs / "worker.log")}


def _running_nodes(record: dict) -> list[str]:
    return [n["short_name"] for n in record.get("nodes", []) if pid_alive(n.get("pid"))]


def owned_pids(state: Path) -> list[int]:
    """Every process carrying this sandbox's marker in its environment (not us, not our parents)."""
    marker = f"{OWNER_ENV}={state.resolve()}".encode()
    exclude = set()
    pid = os.getpid()
    while pid > 1:
        exclude.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in exclude:
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def down(state: Path, purge: bool = False, out=print) -> dict[str, list]:
    """Stop and remove everything the sandbox started; returns what is left (should be empty)."""
    preflight()
    record = read_record(state)
    prefect_server.stop_group((record.get("worker") or {}).get("pid"), signals=2)
    for name in ("cloudinit", "prefect", "moto"):
        prefect_server.stop_group((record.get(name) or {}).get("pid"))
    nodes.stop_pids(nodes.nspawn_pids(state))
    leftovers = owned_pids(state)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    nodes.unmount_all(state)
    netns.remove_everything(record.get("bridge", netns.BRIDGE))
    if not nodes.sandbox_mounts(state):
        nodes.remove_node_dirs(state)
    original = record.get("inotify_max_user_instances")
    if original:
        INOTIFY_INSTANCES.write_text(f"{original}\n")
    for path in (known_hosts_path(state), instances_path(state), env_file(state), record_path(state)):
        path.unlink(missing_ok=True)
    shutil.rmtree(console_dir(state), ignore_errors=True)
    shutil.rmtree(state / "moto", ignore_errors=True)
    if purge:
        for sub in ("prefect", "artifacts", "rootfs", "logs"):
            shutil.rmtree(state / sub, ignore_errors=True)
    time.sleep(0.2)
    return leftovers_report(state)


def leftovers_report(state: Path) -> dict[str, list]:
    """Whatever of the sandbox still exists on the host."""
    return {
        "processes": sorted(set(owned_pids(state)) | set(nodes.nspawn_pids(state))),
        "mounts": nodes.sandbox_mounts(state),
        "namespaces": netns.sandbox_namespaces(),
        "links": netns.sandbox_links(),
    }


def status(state: Path) -> dict:
    """What runs, as data: nodes (pid alive, sshd answering), moto, Prefect, worker, agent."""
    import socket

    record = read_record(state)
    result: dict = {"state_dir": str(state), "cluster": record.get("cluster"), "nodes": []}
    for node in record.get("nodes", []):
        try:
            with socket.create_connection((node["private_ip"], 22), timeout=1):
                ssh = True
        except OSError:
            ssh = False
        result["nodes"].append({
            "name": node["short_name"], "ip": node["private_ip"], "pid": node.get("pid"),
            "running": pid_alive(node.get("pid")), "sshd": ssh,
        })
    for name in ("moto", "prefect", "worker", "cloudinit"):
        entry = record.get(name) or {}
        result[name] = {**entry, "running": pid_alive(entry.get("pid"))}
    result["env_file"] = str(env_file(state)) if env_file(state).exists() else None
    instances = instances_path(state)
    result["instances"] = json.loads(instances.read_text()) if instances.exists() else {}
    result["leftovers"] = leftovers_report(state) if not record else None
    return result

