"""Bring the sandbox up, take it down, say what runs.

`up` is idempotent: what already runs is kept, what is missing is started (the controller is
restarted and adopts the running nodes). `down` stops every process the sandbox started (found by
a marker in their environment, not only by the record), unmounts every overlay, deletes every
namespace, veth and the bridge, and removes the hosts entries the load balancers wrote.
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

from ipaddress import IPv4Address, IPv4Network

from groundup.releases import MIRROR_INDEX
from groundup.versions import DEFAULT_KUBERNETES_VERSION
from sandbox import netns, nodes, prefect_server, rootfs
from sandbox.controller import (load_balancer_status_path, machine_capacity, nodes_path, open_load_balancers,
                                read_nodes)
from sandbox.moto import free_port, start_moto_server, wait_for_moto
from sandbox.state import (atomic_write, console_dir, instances_path, known_hosts_path, logs_dir,
                           pid_alive, read_record, record_path, write_record)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO_ROOT / "clusters" / "sandbox.yaml"
OWNER_ENV = "GROUNDUP_SANDBOX_OWNER"
MOTO_PORT = 5055
PREFECT_PORT = 4200
MIRROR_PORT = 8080
DEFAULT_REGIONS = ("us-east-2",)


class SandboxError(RuntimeError):
    """The sandbox cannot do what was asked; the message says what to do."""


@dataclass
class UpReport:
    """What `up` did and how long each part took (seconds)."""

    timings: dict[str, float] = field(default_factory=dict)


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
        "GROUNDUP_ALLOWED_NODE_NETWORKS": record["subnet"],
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
    """The recorded or preferred port when free, else any free one. SO_REUSEADDR as the servers set it,
    so a port left in TIME_WAIT by the previous sandbox is reused and the endpoints stay the same."""
    import socket

    for port in (recorded, preferred):
        if port:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                    return port
                except OSError:
                    continue
    return free_port()


def up(state: Path, subnet: IPv4Network = netns.DEFAULT_SUBNET, regions: tuple[str, ...] = DEFAULT_REGIONS,
       with_prefect: bool = True, max_nodes: int | None = None, out=print,
       kubernetes_versions: tuple[str, ...] = (DEFAULT_KUBERNETES_VERSION,)) -> UpReport:
    """Bring the sandbox up (idempotent): bridge, moto, mirror, controller, Prefect server and worker.

    No cluster is named: the controller boots a node for every instance launched in `subnet`.
    """
    report = UpReport()
    started = time.monotonic()
    preflight()
    state.mkdir(parents=True, exist_ok=True)
    logs = logs_dir(state)
    record = read_record(state)
    if record.get("subnet") and record["subnet"] != str(subnet) and netns.link_exists(netns.BRIDGE):
        raise SandboxError(f"the sandbox already runs on {record['subnet']}; run `groundup sandbox down` first")
    t = time.monotonic()
    install_packages()
    report.timings["packages"] = time.monotonic() - t
    if not netns.link_exists(netns.BRIDGE):
        netns.check_range_free(subnet)

    t = time.monotonic()
    out("base rootfs: " + ("cached" if rootfs.is_cached(state) else "building with mmdebstrap (about a minute)"))
    rootfs.build_base(state, logs / "rootfs.log")
    report.timings["rootfs"] = time.monotonic() - t

    capacity = max_nodes or record.get("max_nodes") or machine_capacity()
    ensure_inotify_instances(capacity, record)
    bridge_ip = netns.ensure_bridge(subnet)
    record.update({"subnet": str(subnet), "bridge": netns.BRIDGE, "bridge_address": str(bridge_ip),
                   "regions": list(regions), "region": regions[0], "max_nodes": capacity})
    write_record(state, record)

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

    t = time.monotonic()
    ensure_mirror(state, record, env, logs, bridge_ip, out, kubernetes_versions)
    report.timings["mirror"] = time.monotonic() - t

    _restart_controller(state, record, env, logs)

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


def mirror_root(state: Path) -> Path:
    return state / "mirror"


def ensure_mirror(state: Path, record: dict, env: dict[str, str], logs: Path, bridge_ip, out=print,
                  kubernetes_versions: tuple[str, ...] = (DEFAULT_KUBERNETES_VERSION,)) -> None:
    """Build (or refresh) the release mirror and serve it on the bridge at MIRROR_PORT."""
    from sandbox import mirror

    current = record.get("mirror") or {}
    url = f"http://{bridge_ip}:{MIRROR_PORT}"
    started = time.monotonic()
    with open(logs / "mirror-build.log", "a") as build_log:
        def progress(line: str) -> None:
            print(line, file=build_log, flush=True)
            out(f"  [{time.monotonic() - started:5.0f} s] {line}")
        try:
            result = mirror.build_mirror(mirror_root(state), log=progress, kubernetes_versions=kubernetes_versions)
        except (mirror.MirrorError, RuntimeError, ValueError) as exc:
            raise SandboxError(f"the release mirror cannot be filled: {exc}") from exc
    out(f"release mirror: {len(result['unchanged'])} releases cached, {len(result['built'])} built or fetched "
        f"({result['seconds']:.0f} s)")
    if pid_alive(current.get("pid")) and current.get("url") == url and _http_ok(url + "/" + MIRROR_INDEX):
        return
    prefect_server.stop_group(current.get("pid"))
    with open(logs / "mirror.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.mirror", "serve", "--root", str(mirror_root(state)),
             "--bind", str(bridge_ip), "--port", str(MIRROR_PORT)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=REPO_ROOT,
        )
    record["mirror"] = {"pid": process.pid, "url": url, "root": str(mirror_root(state))}
    deadline = time.monotonic() + 20
    while not _http_ok(url + "/" + MIRROR_INDEX):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SandboxError(f"the release mirror did not start on {url}; see {logs / 'mirror.log'}")
        time.sleep(0.2)


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def _restart_controller(state: Path, record: dict, env: dict[str, str], logs: Path) -> None:
    for name in ("controller", "cloudinit"):
        prefect_server.stop_group((record.pop(name, None) or {}).get("pid"))
    with open(logs / "controller.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.controller", "--state", str(state)],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=REPO_ROOT,
        )
    record["controller"] = {"pid": process.pid}


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
    for name in ("controller", "cloudinit"):
        prefect_server.stop_group((record.get(name) or {}).get("pid"))
    prefect_server.stop_group((record.get("worker") or {}).get("pid"), signals=2)
    for name in ("prefect", "mirror", "moto"):
        prefect_server.stop_group((record.get(name) or {}).get("pid"))
    _remove_load_balancers(state, record, out)
    nodes.stop_pids(nodes.nspawn_pids(state))
    leftovers = owned_pids(state)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    nodes.unmount_all(state)
    nodes.remove_node_cgroups()
    netns.remove_everything(record.get("bridge", netns.BRIDGE))
    if not nodes.sandbox_mounts(state):
        nodes.remove_node_dirs(state)
    original = record.get("inotify_max_user_instances")
    if original:
        INOTIFY_INSTANCES.write_text(f"{original}\n")
    for path in (known_hosts_path(state), instances_path(state), nodes_path(state), env_file(state),
                 record_path(state)):
        path.unlink(missing_ok=True)
    shutil.rmtree(console_dir(state), ignore_errors=True)
    shutil.rmtree(state / "moto", ignore_errors=True)
    if purge:
        for sub in ("prefect", "artifacts", "rootfs", "logs", "mirror"):
            shutil.rmtree(state / sub, ignore_errors=True)
    time.sleep(0.2)
    return leftovers_report(state)


HOST_HOSTS = Path("/etc/hosts")


def _remove_load_balancers(state: Path, record: dict, out=print) -> None:
    """HAProxy, its bridge addresses and the NLB names' blocks in the host's and nodes' /etc/hosts."""
    from sandbox import hostsfile

    balancers = open_load_balancers(state, IPv4Network(record.get("subnet") or netns.DEFAULT_SUBNET))
    if balancers is not None:
        left = balancers.close()
        if any(left.values()):
            out(f"load balancers left behind: {left}")
    hostsfile.remove_from(HOST_HOSTS)
    load_balancer_status_path(state).unlink(missing_ok=True)


def _hosts_leftovers() -> list[str]:
    from sandbox import hostsfile

    return [str(HOST_HOSTS)] if hostsfile.has_block(HOST_HOSTS) else []


def leftovers_report(state: Path) -> dict[str, list]:
    """Whatever of the sandbox still exists on the host."""
    return {
        "processes": sorted(set(owned_pids(state)) | set(nodes.nspawn_pids(state))),
        "mounts": nodes.sandbox_mounts(state),
        "namespaces": netns.sandbox_namespaces(),
        "links": netns.sandbox_links(),
        "hosts": _hosts_leftovers(),
    }


def status(state: Path) -> dict:
    """What runs, as data: instances and their nodes, routes, load balancers, mirror, services."""
    import socket

    record = read_record(state)
    result: dict = {"state_dir": str(state), "up": bool(record.get("subnet")), "subnet": record.get("subnet"),
                    "nodes": [], "routes": {}, "load_balancers": [], "mirror": None}
    for ip, node in sorted(read_nodes(state).items(), key=lambda item: IPv4Address(item[0])):
        ssh = False
        if node.state in ("booting", "running"):
            try:
                with socket.create_connection((ip, 22), timeout=1) as sock:
                    sock.settimeout(1)
                    ssh = sock.recv(4).startswith(b"SSH-")
            except OSError:
                pass
        result["nodes"].append({
            "name": node.name, "ip": ip, "instance_id": node.instance_id, "region": node.region,
            "state": node.state, "pid": node.pid, "running": pid_alive(node.pid), "sshd": ssh,
            "boot_seconds": round(node.ready_at - node.seen_at, 2) if node.ready_at else None,
            "root": node.root,
        })
        if netns.namespace_exists(node.namespace):
            result["routes"][ip] = sorted(f"{d} via {v}" for d, v in netns.sandbox_routes(node.namespace))
    result["instances"] = _instances(record)
    for name in ("moto", "prefect", "worker", "controller", "mirror"):
        entry = record.get(name) or {}
        result[name] = {**entry, "running": pid_alive(entry.get("pid"))}
    if record.get("mirror", {}).get("root"):
        from sandbox import mirror

        try:
            result["mirror"]["contents"] = mirror.contents(Path(record["mirror"]["root"]))
        except Exception as exc:  # the mirror being rebuilt: say so, do not fail status
            result["mirror"]["contents"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        result["load_balancers"] = json.loads(load_balancer_status_path(state).read_text()).get("load_balancers", [])
    except (FileNotFoundError, ValueError):
        result["load_balancers"] = []
    result["env_file"] = str(env_file(state)) if env_file(state).exists() else None
    result["leftovers"] = leftovers_report(state) if not record else None
    return result


def _instances(record: dict) -> list[dict]:
    """Every instance moto knows in the sandbox's regions: id, state, private IP, source/dest check."""
    if not _moto_alive(record):
        return []
    import boto3

    found = []
    for region in record.get("regions", []):
        ec2 = boto3.client("ec2", endpoint_url=record["moto"]["endpoint"], region_name=region,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        reservations = (r for page in ec2.get_paginator("describe_instances").paginate() for r in page["Reservations"])
        for reservation in reservations:
            for instance in reservation["Instances"]:
                name = next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == "Name"), "")
                found.append({"instance_id": instance["InstanceId"], "region": region, "name": name,
                              "state": instance["State"]["Name"], "ip": instance.get("PrivateIpAddress"),
                              "source_dest_check": instance.get("SourceDestCheck", True)})
    return found
