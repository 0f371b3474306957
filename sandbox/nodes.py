"""Sandbox nodes: an overlay of the base rootfs per node, a fresh host key, booted by systemd-nspawn.

A node is the sandbox's stand-in for one EC2 instance: real systemd as PID 1 and a real sshd,
listening on the instance's private IP inside the node's own network namespace. A node is named
after its private IP as EC2 names the instance's host (`ip-10-240-0-20`); its disk is the
overlay's upper directory, discarded when the instance terminates.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sandbox.state import atomic_write, known_hosts_path, pid_alive

NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}
"""PID 1 here is not systemd (unified hierarchy); /proc/sys/net writable, as it is the node's own
namespace (the bootstrap sets net.ipv4.ip_forward), the rest of /proc/sys stays read-only."""
SYSCALLS = "add_key keyctl request_key bpf"
CGROUP_HIERARCHIES = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))
"""The host's two controller-less hierarchies (cgroup2 and the named `systemd` one), where each node gets
a cgroup of its own as an EC2 instance has. The host's v1 controller hierarchies are never touched."""
CGROUP_PARENT = "groundup-sandbox"
MACHINE_UNIT = "groundup-sandbox-machine.service"
KERNEL_VALUES = (("vm/overcommit_memory", "1"), ("kernel/panic", "10"), ("kernel/panic_on_oops", "1"))
"""What an EC2 instance's kernel lets kubelet set, which a node's read-only /proc/sys cannot: presented
read-only at these values inside the node (the host's own values are left alone)."""
MACHINE_DIR = "/usr/lib/groundup-sandbox"
REBOOT_EXIT = 133  # systemd-nspawn's exit status when the container asked for a reboot
_booted: dict[int, subprocess.Popen] = {}


@dataclass
class NodeRecord:
    """What the sandbox knows about one node: the instance it plays and its process."""

    name: str
    private_ip: str
    instance_id: str
    region: str
    namespace: str
    root: str
    host_key: str
    state: str = "booting"
    pid: int | None = None
    seen_at: float = 0.0
    ready_at: float | None = None

    @property
    def hostname(self) -> str:
        return self.name

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NodeRecord:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def node_name(private_ip: str) -> str:
    """The host name EC2 gives an instance: `ip-` and its private IP with dashes."""
    return "ip-" + str(private_ip).replace(".", "-")


def node_dir(state: Path, name: str) -> Path:
    return state / "nodes" / name


def is_mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == target for line in handle)


def sandbox_mounts(state: Path) -> list[str]:
    """Every mount point under the sandbox's node directories, deepest first."""
    prefix = str((state / "nodes").resolve()) + "/"
    with open("/proc/self/mountinfo") as handle:
        points = [line.split()[4] for line in handle]
    return sorted({p for p in points if p.startswith(prefix)}, key=len, reverse=True)


def prepare_overlay(state: Path, base: Path, name: str) -> Path:
    """Mount the node's overlay (lower = base rootfs) unless it is mounted; returns the merged dir."""
    root = node_dir(state, name)
    for sub in ("upper", "work", "merged", "containerd"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    merged = root / "merged"
    if not is_mounted(merged):
        options = f"lowerdir={base},upperdir={root / 'upper'},workdir={root / 'work'}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)],
                       check=True, capture_output=True, text=True)
    return merged


def discard_disk(state: Path, name: str) -> None:
    """Unmount the node's overlay and delete its disk (upper dir) and containerd directory."""
    root = node_dir(state, name)
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mountinfo") as handle:
        points = sorted({line.split()[4] for line in handle if line.split()[4].startswith(prefix)},
                        key=len, reverse=True)
    for point in points:
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def new_host_key() -> tuple[bytes, str]:
    """A fresh ed25519 host key: (OpenSSH private key PEM, public key line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public


def ensure_identity(merged: Path, hostname: str, private_ip: str) -> str:
    """Give the node its host name and, once, its own host key; returns the public host key."""
    (merged / "etc/hostname").write_text(hostname + "\n")
    (merged / "etc/hosts").write_text(
        f"127.0.0.1 localhost\n::1 localhost ip6-localhost\n{private_ip} {hostname}\n"
    )
    key_path = merged / "etc/ssh/ssh_host_ed25519_key"
    pub_path = key_path.with_name(key_path.name + ".pub")
    if not key_path.exists() or not pub_path.exists():
        private, public = new_host_key()
        atomic_write(key_path, private, mode=0o600)
        atomic_write(pub_path, f"{public} root@{hostname}\n".encode(), mode=0o644)
    return " ".join(pub_path.read_text().split()[:2])


def node_cgroups(name: str) -> list[Path]:
    """The node's own cgroup in each controller-less hierarchy the host has."""
    return [h / CGROUP_PARENT / name for h in CGROUP_HIERARCHIES if (h / "cgroup.procs").exists()]


def in_node_cgroups(name: str, argv: list[str]) -> list[str]:
    """`argv` started inside the node's own cgroups: a shell moves itself there, then execs it (so the
    process keeps its pid and nspawn nests the node's payload under the node's cgroup, not ours)."""
    procs = []
    for cgroup in node_cgroups(name):
        cgroup.mkdir(parents=True, exist_ok=True)
        procs.append(str(cgroup / "cgroup.procs"))
    if not procs:
        return argv
    move = "".join(f'echo $$ > {p} && ' for p in procs)
    return ["/bin/sh", "-c", f'{move}exec "$@"', "sh", *argv]


def remove_node_cgroups(name: str | None = None) -> None:
    """Remove the node's (or every node's) empty cgroups, deepest first; a busy one is left alone."""
    for hierarchy in CGROUP_HIERARCHIES:
        parent = hierarchy / CGROUP_PARENT
        top = parent / name if name else parent
        if not top.is_dir():
            continue
        for directory in sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
            try:
                directory.rmdir()
            except OSError:
                pass
        for directory in ([top, parent] if name else [top]):
            try:
                directory.rmdir()
            except OSError:
                pass


def machine_unit() -> str:
    """What the instance's machine gives every node at boot, before any other unit: /dev/kmsg (the
    kernel log kubelet's OOM watcher reads) and the kernel values of KERNEL_VALUES, read-only."""
    binds = "".join(f"ExecStart=/bin/mount --bind -o ro {MACHINE_DIR}/sys/{key.replace('/', '.')} /proc/sys/{key}\n"
                    for key, _ in KERNEL_VALUES)
    return ("[Unit]\n"
            "Description=groundup sandbox: what an EC2 instance's machine gives (/dev/kmsg, kernel values)\n"
            "DefaultDependencies=no\nBefore=sysinit.target systemd-sysctl.service\n\n"
            "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
            "ExecStart=/bin/sh -c 'test -c /dev/kmsg || mknod -m 600 /dev/kmsg c 1 11'\n"
            f"{binds}\n[Install]\nWantedBy=sysinit.target\n")


def ensure_machine(merged: Path) -> None:
    """Install the machine unit and its value files into the node's disk (idempotent)."""
    for key, value in KERNEL_VALUES:
        atomic_write(merged / MACHINE_DIR.lstrip("/") / "sys" / key.replace("/", "."), f"{value}\n".encode(),
                     mode=0o444)
    unit = merged / "etc/systemd/system" / MACHINE_UNIT
    atomic_write(unit, machine_unit().encode(), mode=0o644)
    wants = merged / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / MACHINE_UNIT
    if not link.is_symlink():
        link.symlink_to(f"/etc/systemd/system/{MACHINE_UNIT}")


def nspawn_command(merged: Path, machine: str, namespace: str, containerd_dir: Path) -> list[str]:
    """The systemd-nspawn invocation that boots a node (see notes/node-sandbox.md)."""
    return [
        "systemd-nspawn", "-b", "-D", str(merged), "-M", machine,
        "--register=no", "--keep-unit", "--console=read-only",
        f"--network-namespace-path=/run/netns/{namespace}",
        "--capability=all", f"--system-call-filter={SYSCALLS}",
        f"--bind={containerd_dir}:/var/lib/containerd",
    ]


def boot(state: Path, record: NodeRecord) -> int:
    """Start the node's systemd-nspawn in its own session; returns its pid."""
    root = node_dir(state, record.name)
    log = open(root / "nspawn.log", "ab")
    ensure_machine(Path(record.root))
    process = subprocess.Popen(
        in_node_cgroups(record.name, nspawn_command(Path(record.root), record.hostname, record.namespace,
                                                    root / "containerd")),
        env={**os.environ, **NSPAWN_ENV},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    (root / "nspawn.pid").write_text(f"{process.pid}\n")
    _booted[process.pid] = process
    return process.pid


def exit_status(pid: int) -> int | None:
    """How a node this process booted ended (None: still running, or booted by another process)."""
    process = _booted.get(pid)
    if process is None or process.poll() is None:
        return None
    del _booted[pid]
    return process.returncode


def rebooted(pid: int) -> bool:
    """Whether the node at `pid` ended because its own systemd rebooted it."""
    return exit_status(pid) == REBOOT_EXIT


def wait_for_ssh(address: str, port: int = 22, timeout: float = 60.0,
                 pid: int | None = None) -> float:
    """Wait until sshd on the node sends its banner; returns the seconds waited."""
    started = time.monotonic()
    while True:
        try:
            with socket.create_connection((address, port), timeout=2) as sock:
                sock.settimeout(2)
                if sock.recv(4).startswith(b"SSH-"):
                    return time.monotonic() - started
        except OSError:
            pass
        if pid is not None and not pid_alive(pid):
            raise RuntimeError(f"the node at {address} stopped while booting (systemd-nspawn exited)")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"no sshd answered on {address}:{port} within {timeout:.0f} s")
        time.sleep(0.2)


def stop(pid: int | None, timeout: float = 20.0) -> None:
    """Shut one node down (SIGTERM: systemd's clean shutdown), SIGKILL after `timeout`."""
    if pid and pid_alive(pid):
        stop_pids([pid], timeout=timeout)
    process = _booted.pop(pid, None) if pid else None
    if process is not None:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _booted[pid] = process


def nspawn_pids(state: Path) -> list[int]:
    """Every systemd-nspawn process booted from a sandbox node directory, known or not."""
    marker = str((state / "nodes").resolve()) + "/"
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"systemd-nspawn") and any(a.startswith(marker.encode()) for a in argv):
            pids.append(int(proc.name))
    return pids


def stop_pids(pids: list[int], timeout: float = 20.0) -> None:
    """SIGTERM (a clean container shutdown), then SIGKILL what is left after `timeout`."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


def unmount_all(state: Path) -> None:
    for point in sandbox_mounts(state):
        result = subprocess.run(["umount", point], capture_output=True)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", point], capture_output=True)


def remove_node_dirs(state: Path) -> None:
    if sandbox_mounts(state):
        raise RuntimeError("node overlays are still mounted; not removing their directories")
    shutil.rmtree(state / "nodes", ignore_errors=True)


def write_known_hosts(state: Path, nodes: list[NodeRecord]) -> None:
    """Every node's public host key, keyed by private IP, in OpenSSH known_hosts format.

    For independent checks (tests, a user's own `ssh`): the flows read host keys from the console
    output only, as on AWS.
    """
    lines = [f"{n.private_ip} {n.host_key}" for n in sorted(nodes, key=lambda n: n.name)]
    atomic_write(known_hosts_path(state), ("\n".join(lines) + "\n").encode())


def init_pid(nspawn_pid: int) -> int:
    """The node's PID 1 (systemd), as seen from the host: the child of its systemd-nspawn."""
    children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    if not children:
        raise RuntimeError(f"systemd-nspawn {nspawn_pid} has no container process")
    return int(children[0])


def node_exec(nspawn_pid: int, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run a command inside a node from the host, without SSH (tests, break-glass)."""
    return subprocess.run(["nsenter", "-t", str(init_pid(nspawn_pid)), "-m", "-u", "-i", "-n", "-p", "--", *argv],
                          capture_output=True, text=True, timeout=timeout)
