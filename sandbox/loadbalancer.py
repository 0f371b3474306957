"""The sandbox's network load balancers: HAProxy in TCP mode for every moto NLB with a TCP listener.

Reconcile-style: `LoadBalancers.sync(elbv2)` reads moto (load balancers, listeners, target groups,
registered targets) and makes the machine match it:

- one HAProxy master (`haproxy -W -S`) per NLB, bound to an address of the pool on each TCP
  listener's port, one backend per listener with the target group's registered targets (type ip);
- TCP health checks from the target group's settings, clamped by `HealthCheckLimits`: a new target
  gets traffic once a check passed (AWS's "initial"), an unhealthy one none until it answers again;
- registered/deregistered targets are applied through the runtime API (`add server`, `disable
  server`, `del server` once its connections ended), so established connections are kept; a new or
  removed listener or changed health-check settings reload the master gracefully (old worker keeps
  its connections, server states carried over through a server-state file);
- a marked block in every hosts file maps each NLB's DNS name to its address;
- a deleted NLB loses its HAProxy, its address and its hosts line.

Files under the run directory, per NLB (`<id>` is the last part of its ARN): `<id>.cfg`, `<id>.pid`
(the master's pid), `<id>.sock` (runtime API), `<id>.master` (master CLI), `<id>.state`, `<id>.log`;
and `loadbalancers.json` (address of each NLB, hosts files written), so a new `LoadBalancers` on the
same run directory adopts what runs and `close()` cleans up after a crashed controller.
"""

from __future__ import annotations

import csv
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from groundup import files
from sandbox import hostsfile

SANDBOX_CIDR = "10.240.0.0/24"
IDLE_TIMEOUT_S = 350
SERVABLE_PROTOCOLS = ("TCP",)
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class HealthCheckLimits:
    """Upper bounds on the target group's health-check settings, so the sandbox reacts in seconds."""

    max_interval_s: float = 1.0
    max_timeout_s: float = 1.0
    max_healthy_threshold: int = 3
    max_unhealthy_threshold: int = 2


@dataclass(frozen=True)
class HealthCheck:
    """A TCP health check as HAProxy runs it."""

    enabled: bool
    interval_s: float
    timeout_s: float
    rise: int
    fall: int
    port: int | None = None

    @classmethod
    def from_target_group(cls, group: Mapping, limits: HealthCheckLimits) -> HealthCheck:
        """The NLB's check for `group` (DescribeTargetGroups shape), clamped by `limits`."""
        interval = min(float(group.get("HealthCheckIntervalSeconds", 30)), limits.max_interval_s)
        port = group.get("HealthCheckPort", "traffic-port")
        return cls(
            enabled=bool(group.get("HealthCheckEnabled", True)),
            interval_s=interval,
            timeout_s=min(float(group.get("HealthCheckTimeoutSeconds", 10)), limits.max_timeout_s, interval),
            rise=max(1, min(int(group.get("HealthyThresholdCount", 5)), limits.max_healthy_threshold)),
            fall=max(1, min(int(group.get("UnhealthyThresholdCount", 2)), limits.max_unhealthy_threshold)),
            port=None if port in (None, "traffic-port") else int(port),
        )

    def server_arguments(self) -> str:
        if not self.enabled:
            return ""
        port = f" port {self.port}" if self.port else ""
        return f" check inter {_ms(self.interval_s)} rise {self.rise} fall {self.fall}{port}"


@dataclass(frozen=True)
class Target:
    """A registered target of type ip."""

    ip: str
    port: int

    @property
    def server(self) -> str:
        return f"t-{self.ip.replace(':', '_')}-{self.port}"


@dataclass(frozen=True)
class Listener:
    """A TCP listener and what its default action forwards to."""

    port: int
    target_groups: tuple[str, ...]
    health: HealthCheck
    targets: tuple[Target, ...]

    @property
    def backend(self) -> str:
        return f"tcp{self.port}"


@dataclass(frozen=True)
class NetworkLoadBalancer:
    """What moto says one network load balancer should do."""

    arn: str
    name: str
    dns_name: str
    listeners: tuple[Listener, ...]
    skipped: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.arn.rsplit("/", 1)[-1]


def sandbox_address_pool(cidr: str = SANDBOX_CIDR, count: int = 16, top: int = 250) -> list[str]:
    """Addresses for load balancers on the sandbox bridge: `.250`, `.249`, ... downwards."""
    network = ipaddress.ip_network(cidr)
    return [str(network.network_address + host) for host in range(top, top - count, -1)]


@dataclass
class BridgeAddresses:
    """Adds and removes load-balancer addresses (/32) on a bridge: the `claim_address` and
    `release_address` callbacks for `LoadBalancers` in the sandbox."""

    device: str
    netns: str | None = None

    def _ip(self, *args: str) -> subprocess.CompletedProcess:
        prefix = ["ip", "-n", self.netns] if self.netns else ["ip"]
        return subprocess.run([*prefix, *args], capture_output=True, text=True)

    def _has(self, address: str) -> bool:
        shown = self._ip("-4", "-o", "addr", "show", "dev", self.device)
        return shown.returncode == 0 and f" {address}/32 " in shown.stdout

    def claim(self, address: str) -> None:
        if self._has(address):
            return
        result = self._ip("-4", "addr", "add", f"{address}/32", "dev", self.device)
        if result.returncode != 0:
            raise RuntimeError(f"cannot add {address} to {self.device}: {result.stderr.strip()}; "
                               f"is the sandbox bridge up?")

    def release(self, address: str) -> None:
        if not self._has(address):
            return
        result = self._ip("-4", "addr", "del", f"{address}/32", "dev", self.device)
        if result.returncode != 0:
            raise RuntimeError(f"cannot remove {address} from {self.device}: {result.stderr.strip()}")


def read_network_load_balancers(elbv2, limits: HealthCheckLimits = HealthCheckLimits()) -> list[NetworkLoadBalancer]:
    """Every network load balancer in moto with its TCP listeners, their target groups and targets."""
    found = []
    for page in elbv2.get_paginator("describe_load_balancers").paginate():
        for lb in page["LoadBalancers"]:
            if lb.get("Type") != "network":
                continue
            listeners, skipped = [], []
            for listener in elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]:
                served, reason = _read_listener(elbv2, listener, limits)
                if served:
                    listeners.append(served)
                else:
                    skipped.append(reason)
            found.append(NetworkLoadBalancer(lb["LoadBalancerArn"], lb["LoadBalancerName"], lb["DNSName"],
                                             tuple(sorted(listeners, key=lambda x: x.port)), tuple(skipped)))
    return found


def _read_listener(elbv2, listener: Mapping, limits: HealthCheckLimits) -> tuple[Listener | None, str]:
    port, protocol = listener["Port"], listener["Protocol"]
    if protocol not in SERVABLE_PROTOCOLS:
        return None, f"listener {protocol} {port}: the sandbox serves TCP listeners only"
    arns = []
    for action in listener.get("DefaultActions", []):
        if action.get("Type") != "forward":
            continue
        if action.get("TargetGroupArn"):
            arns.append(action["TargetGroupArn"])
        arns += [g["TargetGroupArn"] for g in action.get("ForwardConfig", {}).get("TargetGroups", [])]
    arns = sorted(set(arns))
    if not arns:
        return None, f"listener TCP {port}: its default action forwards to no target group"
    groups = elbv2.describe_target_groups(TargetGroupArns=arns)["TargetGroups"]
    not_ip = [g["TargetGroupName"] for g in groups if g.get("TargetType", "instance") != "ip"]
    if not_ip:
        return None, f"listener TCP {port}: target group {', '.join(not_ip)} is not of type ip (the sandbox serves ip targets)"
    targets = set()
    for group in groups:
        for described in elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])["TargetHealthDescriptions"]:
            if described.get("TargetHealth", {}).get("State") == "draining":
                continue
            target = described["Target"]
            targets.add(Target(target["Id"], int(target.get("Port") or group["Port"])))
    health = HealthCheck.from_target_group(groups[0], limits)
    return Listener(port, tuple(arns), health, tuple(sorted(targets, key=lambda t: (t.ip, t.port)))), ""


def render_config(lb: NetworkLoadBalancer, address: str, paths: LbFiles) -> str:
    """HAProxy's configuration for `lb` on `address` with its registered targets as servers."""
    lines = [
        f"# groundup sandbox: network load balancer {lb.name} ({lb.arn})",
        "global",
        f"    stats socket {paths.sock} mode 600 level admin expose-fd listeners",
        f"    server-state-file {paths.state}",
        "    nbthread 1",
        "    maxconn 4096",
        "",
        "defaults",
        "    mode tcp",
        "    balance roundrobin",
        "    timeout connect 5s",
        f"    timeout client {IDLE_TIMEOUT_S}s",
        f"    timeout server {IDLE_TIMEOUT_S}s",
        "    load-server-state-from-file global",
        "",
    ]
    for listener in lb.listeners:
        lines += [f"frontend {listener.backend}", f"    bind {_host(address)}:{listener.port}",
                  f"    default_backend {listener.backend}", "",
                  f"backend {listener.backend}",
                  f"    # target groups {' '.join(listener.target_groups)}; check {listener.health.server_arguments().strip() or 'off'}",
                  f"    timeout check {_ms(listener.health.timeout_s)}"]
        lines += [f"    server {t.server} {_host(t.ip)}:{t.port}{listener.health.server_arguments()}"
                  for t in listener.targets]
        lines.append("")
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


@dataclass(frozen=True)
class LbFiles:
    """One NLB's files under the run directory."""

    run_dir: Path
    key: str

    def _path(self, suffix: str) -> Path:
        return self.run_dir / f"{self.key}.{suffix}"

    @property
    def cfg(self) -> Path:
        return self._path("cfg")

    @property
    def pid(self) -> Path:
        return self._path("pid")

    @property
    def sock(self) -> Path:
        return self._path("sock")

    @property
    def master(self) -> Path:
        return self._path("master")

    @property
    def state(self) -> Path:
        return self._path("state")

    @property
    def log(self) -> Path:
        return self._path("log")


def haproxy_command(sock: Path, command: str, timeout: float = 3.0) -> str:
    """One command on an HAProxy CLI socket (runtime API or master CLI); its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(sock))
        conn.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def server_stats(sock: Path) -> list[dict[str, str]]:
    """`show stat` rows of the servers (not frontends or backends)."""
    text = haproxy_command(sock, "show stat")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        raise RuntimeError(f"unexpected answer to `show stat` on {sock}: {text[:200]!r}")
    rows = csv.DictReader([lines[0][2:], *lines[1:]])
    return [row for row in rows if row["svname"] not in ("FRONTEND", "BACKEND")]


def _health(row: Mapping[str, str], wanted: bool) -> str:
    """AWS's word for an HAProxy server status."""
    status = row["status"]
    if status.startswith("MAINT") or status == "DRAIN":
        return "initial" if wanted else "draining"
    if status.startswith("UP"):
        return "healthy"
    if status.startswith("DOWN"):
        return "initial" if row["check_status"] == "INI" else "unhealthy"
    if status == "no check":
        return "unavailable"
    return status.lower()


_STATE_FIELDS = ("be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
                 "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state "
                 "srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl "
                 "srv_check_port srv_check_addr srv_agent_addr srv_agent_port")


def initial_server_state(lb: NetworkLoadBalancer, running_state: str = "") -> str:
    """A server-state file (`show servers state` format 1): the rows of `running_state` for servers
    still wanted, and every other checked server as down and not yet checked, so a new worker sends
    it nothing until its health check passes `rise` times. HAProxy matches rows by names."""
    wanted = {(listener.backend, target.server) for listener in lb.listeners for target in listener.targets}
    kept = [line for line in running_state.splitlines()
            if line and not line.startswith("#") and len(line.split()) > 3
            and (line.split()[1], line.split()[3]) in wanted]
    known = {(line.split()[1], line.split()[3]) for line in kept}
    new = [f"0 {listener.backend} 0 {target.server} {target.ip} 0 0 1 1 0 1 0 0 6 0 0 0 - {target.port} - 0 "
           f"{listener.health.port or 0} - - 0"
           for listener in lb.listeners if listener.health.enabled
           for target in listener.targets if (listener.backend, target.server) not in known]
    return "\n".join(["1", f"# {_STATE_FIELDS}", *kept, *new]) + "\n"


@dataclass
class _Running:
    pid: int
    skeleton: str
    process: subprocess.Popen | None = None


@dataclass
class _Record:
    addresses: dict[str, str] = field(default_factory=dict)
    hosts_files: list[str] = field(default_factory=list)


class LoadBalancers:
    """The sandbox's NLBs: HAProxy processes and hosts-file entries kept in line with moto.

    Not thread-safe: one controller calls `sync` (every ~1 s) and, at the end, `close`.
    """

    def __init__(self, run_dir: Path, addresses: Sequence[str],
                 hosts_files: Iterable[Path] | Callable[[], Iterable[Path]], logger: logging.Logger, *,
                 env: Mapping[str, str] | None = None,
                 claim_address: Callable[[str], None] | None = None,
                 release_address: Callable[[str], None] | None = None,
                 limits: HealthCheckLimits = HealthCheckLimits(),
                 haproxy: str | None = None, start_timeout_s: float = 5.0) -> None:
        haproxy = haproxy or shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin") or "haproxy"
        self.run_dir = Path(run_dir)
        longest = LbFiles(self.run_dir.resolve(), "f" * 16).master
        if len(str(longest).encode()) > MAX_SOCKET_PATH:
            raise ValueError(f"run directory {self.run_dir} is too deep for HAProxy's unix sockets "
                             f"({longest} is over {MAX_SOCKET_PATH} bytes): choose a shorter path")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.pool = list(addresses)
        self._hosts_files = hosts_files
        self.log = logger
        self.env = dict(env) if env is not None else None
        self.claim_address = claim_address
        self.release_address = release_address
        self.limits = limits
        self.haproxy = haproxy
        self.start_timeout_s = start_timeout_s
        self._running: dict[str, _Running] = {}
        self._record = self._read_record()
        self._status: dict = {"load_balancers": [], "hosts_files": []}
        self._adopt()

    # -- what the controller calls ----------------------------------------------------------------

    def sync(self, elbv2) -> dict:
        """Make HAProxy and the hosts files match moto's network load balancers; the state for
        `sandbox status` (see `status`)."""
        started = time.monotonic()
        changes: list[str] = []
        wanted = {lb.key: lb for lb in read_network_load_balancers(elbv2, self.limits)}
        for arn in [a for a in self._record.addresses if a.rsplit("/", 1)[-1] not in wanted]:
            changes += self._remove(arn)
        report = []
        for lb in wanted.values():
            entry = {"name": lb.name, "arn": lb.arn, "dns_name": lb.dns_name, "address": None, "pid": None,
                     "state": "", "skipped": list(lb.skipped), "listeners": []}
            report.append(entry)
            try:
                address = self._address(lb, changes)
                entry["address"] = address
                if address is None:
                    entry["state"] = f"no free address (pool of {len(self.pool)} in use)"
                    continue
                if not lb.listeners:
                    changes += self._stop(lb.key, f"{lb.name}: no TCP listener")
                    entry["state"] = "no TCP listener"
                    continue
                changes += self._serve(lb, address)
                entry["pid"] = self._running[lb.key].pid
                entry["state"] = "serving"
                entry["listeners"] = self._listener_status(lb)
            except Exception as error:  # one NLB's failure must not stop the others
                self.log.warning("load balancer %s: %s", lb.name, error)
                entry["state"] = f"failed: {error}"
        changes += self._write_hosts(wanted.values())
        self._write_record()
        for change in changes:
            self.log.info("%s", change)
        self._status = {"load_balancers": report, "hosts_files": sorted(self._record.hosts_files),
                        "changes": changes, "sync_seconds": round(time.monotonic() - started, 3)}
        return self._status

    def status(self) -> dict:
        """What the last `sync` returned: per NLB its DNS name, address, state, HAProxy's pid and per
        listener its port and each target's health as HAProxy sees it (`healthy`, `unhealthy`,
        `initial`, `draining`, `unavailable` when checks are off)."""
        return self._status

    def close(self) -> dict[str, list]:
        """Stop every HAProxy of this run directory, release its addresses, remove the hosts blocks;
        returns `leftovers()`."""
        for key in list(self._running):
            self._stop(key, "closing")
        for pid in self._processes_of_run_dir():
            self.log.warning("stopping HAProxy pid %s of %s that no pid file names", pid, self.run_dir)
            _stop_process(pid)
        self._record = self._read_record()
        for arn in list(self._record.addresses):
            self._release(arn)
        for path in self._all_hosts_files():
            try:
                hostsfile.remove_from(path)
            except (OSError, hostsfile.HostsBlockError) as error:
                self.log.warning("cannot remove the load balancers' block from %s: %s", path, error)
        self._record.hosts_files = []
        self._write_record()
        return self.leftovers()

    def leftovers(self) -> dict[str, list]:
        """HAProxy processes of this run directory still alive, hosts files still holding the block,
        addresses still claimed."""
        record = self._read_record()
        paths = {str(p) for p in self._all_hosts_files()} | set(record.hosts_files)
        return {"processes": self._processes_of_run_dir(),
                "hosts_files": sorted(p for p in paths if hostsfile.has_block(Path(p))),
                "addresses": sorted(record.addresses.values())}

    # -- processes ------------------------------------------------------------------------------

    def _serve(self, lb: NetworkLoadBalancer, address: str) -> list[str]:
        paths = LbFiles(self.run_dir, lb.key)
        skeleton = _skeleton(render_config(lb, address, paths))
        running = self._running.get(lb.key)
        if running is not None and not self._alive(running):
            self.log.warning("HAProxy of %s (pid %s) is gone; starting it again (see %s)", lb.name, running.pid, paths.log)
            self._forget(lb.key)
            running = None
        if running is None:
            self._write_config(lb, address, paths, check=False)
            files.atomic_write(paths.state, initial_server_state(lb).encode(), mode=0o600, durable=False)
            self._start(lb, paths, skeleton)
            return [f"{lb.name}: HAProxy started on {address} ports {_ports(lb)} (pid {self._running[lb.key].pid})"]
        if running.skeleton != skeleton:
            self._dump_server_state(lb, paths)
            self._write_config(lb, address, paths, check=True)
            self._reload(paths)
            running.skeleton = skeleton
            return [f"{lb.name}: HAProxy reloaded (listeners or health checks changed: ports {_ports(lb)})"]
        changes = self._apply_targets(lb, paths)
        if changes:
            self._write_config(lb, address, paths, check=False)
        return changes

    def _start(self, lb: NetworkLoadBalancer, paths: LbFiles, skeleton: str) -> None:
        for stale in (paths.pid, paths.sock, paths.master):
            stale.unlink(missing_ok=True)
        with open(paths.log, "ab") as log:
            process = subprocess.Popen(
                [self.haproxy, "-W", "-S", f"{paths.master},mode,600", "-f", str(paths.cfg), "-p", str(paths.pid)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"HAProxy exited with {process.returncode}: {_tail(paths.log)}")
            try:
                haproxy_command(paths.sock, "show info", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    _stop_group(process.pid, process)
                    raise RuntimeError(f"HAProxy did not answer on {paths.sock} within {self.start_timeout_s:.0f} s: "
                                       f"{_tail(paths.log)}") from None
                time.sleep(0.02)
        self._running[lb.key] = _Running(process.pid, skeleton, process)

    def _reload(self, paths: LbFiles) -> None:
        before = _worker_pid(paths.sock)
        haproxy_command(paths.master, "reload")
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            try:
                if _worker_pid(paths.sock) != before:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"HAProxy did not reload within {self.start_timeout_s:.0f} s: {_tail(paths.log)}")

    def _stop(self, key: str, why: str) -> list[str]:
        running = self._running.pop(key, None)
        if running is None:
            return []
        if self._alive(running):
            _stop_group(running.pid, running.process)
        paths = LbFiles(self.run_dir, key)
        for path in (paths.pid, paths.sock, paths.master, paths.state, paths.cfg):
            path.unlink(missing_ok=True)
        return [f"HAProxy {key} (pid {running.pid}) stopped: {why}"]

    def _forget(self, key: str) -> None:
        running = self._running.pop(key)
        if running.process is not None:
            running.process.poll()

    def _alive(self, running: _Running) -> bool:
        if running.process is not None:
            return running.process.poll() is None
        return _is_haproxy_of(running.pid, self.run_dir)

    def _adopt(self) -> None:
        """Take over the HAProxy processes a previous `LoadBalancers` on this run directory left running."""
        for pid_file in self.run_dir.glob("*.pid"):
            key = pid_file.name[:-len(".pid")]
            try:
                pid = int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if not _is_haproxy_of(pid, self.run_dir):
                continue
            paths = LbFiles(self.run_dir, key)
            skeleton = _skeleton(paths.cfg.read_text()) if paths.cfg.exists() else ""
            self._running[key] = _Running(pid, skeleton)

    def _processes_of_run_dir(self) -> list[int]:
        return sorted(int(p.name) for p in Path("/proc").iterdir()
                      if p.name.isdigit() and _is_haproxy_of(int(p.name), self.run_dir))

    def _write_config(self, lb: NetworkLoadBalancer, address: str, paths: LbFiles, check: bool) -> None:
        text = render_config(lb, address, paths).encode()
        if not check:
            files.atomic_write(paths.cfg, text, mode=0o600, durable=False)
            return
        candidate = paths.run_dir / f".{lb.key}.candidate.cfg"
        candidate.write_bytes(text)
        result = subprocess.run([self.haproxy, "-c", "-q", "-f", str(candidate)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"the new configuration is refused, HAProxy keeps the old one: "
                               f"{(result.stderr or result.stdout).strip()[-500:]}")
        os.replace(candidate, paths.cfg)

    def _dump_server_state(self, lb: NetworkLoadBalancer, paths: LbFiles) -> None:
        """The running servers' states plus new servers as not yet checked, for the reloaded worker."""
        state = haproxy_command(paths.sock, "show servers state")
        files.atomic_write(paths.state, initial_server_state(lb, state).encode(), mode=0o600, durable=False)

    # -- targets ---------------------------------------------------------------------------------

    def _apply_targets(self, lb: NetworkLoadBalancer, paths: LbFiles) -> list[str]:
        """Bring each backend's servers in line with the registered targets through the runtime API."""
        changes = []
        rows = server_stats(paths.sock)
        for listener in lb.listeners:
            current = {row["svname"]: row for row in rows if row["pxname"] == listener.backend}
            wanted = {target.server: target for target in listener.targets}
            where = f"{lb.name} TCP {listener.port}"
            for name, target in wanted.items():
                row = current.get(name)
                if row is None:
                    self._runtime(paths, f"add server {listener.backend}/{name} {_host(target.ip)}:{target.port}"
                                         f"{listener.health.server_arguments()}", "New server registered")
                    self._put_in_service(paths, listener, name)
                    changes.append(f"{where}: target {target.ip}:{target.port} registered")
                elif row["status"].startswith("MAINT"):
                    self._put_in_service(paths, listener, name)
                    changes.append(f"{where}: target {target.ip}:{target.port} registered again")
            for name, row in current.items():
                if name in wanted:
                    continue
                if not row["status"].startswith("MAINT"):
                    self._runtime(paths, f"disable server {listener.backend}/{name}")
                    changes.append(f"{where}: target {row['addr']} deregistered, draining {row['scur']} connection(s)")
                elif row["scur"] in ("", "0"):
                    self._runtime(paths, f"disable health {listener.backend}/{name}")
                    self._runtime(paths, f"del server {listener.backend}/{name}", "Server deleted")
                    changes.append(f"{where}: target {row['addr']} removed")
        return changes

    def _put_in_service(self, paths: LbFiles, listener: Listener, name: str) -> None:
        """Out of maintenance; with health checks, as down until `rise` checks pass (AWS's "initial").
        One CLI line, so no connection is sent to the server between `enable` and `health down`."""
        server = f"{listener.backend}/{name}"
        if listener.health.enabled:
            self._runtime(paths, f"enable health {server}; enable server {server}; set server {server} health down")
        else:
            self._runtime(paths, f"enable server {server}")

    @staticmethod
    def _runtime(paths: LbFiles, command: str, expect: str | None = None) -> None:
        answer = haproxy_command(paths.sock, command).strip()
        if (expect and expect not in answer) or (not expect and answer):
            raise RuntimeError(f"HAProxy refused `{command}`: {answer}")

    def _listener_status(self, lb: NetworkLoadBalancer) -> list[dict]:
        rows = server_stats(LbFiles(self.run_dir, lb.key).sock)
        listeners = []
        for listener in lb.listeners:
            wanted = {t.server for t in listener.targets}
            targets = []
            for row in rows:
                if row["pxname"] != listener.backend:
                    continue
                ip, _, port = row["addr"].rpartition(":")
                targets.append({"id": ip.strip("[]"), "port": int(port), "health": _health(row, row["svname"] in wanted),
                                "haproxy_status": row["status"], "check": row["check_status"],
                                "connections": int(row["scur"] or 0)})
            listeners.append({"port": listener.port, "protocol": "TCP", "target_groups": list(listener.target_groups),
                              "health_check": asdict(listener.health), "targets": targets})
        return listeners

    # -- addresses and hosts files ------------------------------------------------------------------

    def _address(self, lb: NetworkLoadBalancer, changes: list[str]) -> str | None:
        address = self._record.addresses.get(lb.arn)
        if address:
            return address
        used = set(self._record.addresses.values())
        free = next((a for a in self.pool if a not in used), None)
        if free is None:
            return None
        if self.claim_address:
            self.claim_address(free)
        self._record.addresses[lb.arn] = free
        changes.append(f"{lb.name}: address {free} for {lb.dns_name}")
        return free

    def _remove(self, arn: str) -> list[str]:
        key = arn.rsplit("/", 1)[-1]
        changes = self._stop(key, "load balancer deleted")
        address = self._record.addresses.get(arn)
        self._release(arn)
        return changes + [f"load balancer {arn} deleted: address {address} released"]

    def _release(self, arn: str) -> None:
        address = self._record.addresses.pop(arn)
        if self.release_address:
            try:
                self.release_address(address)
            except Exception as error:
                self.log.warning("cannot release %s: %s", address, error)

    def _current_hosts_files(self) -> list[Path]:
        source = self._hosts_files() if callable(self._hosts_files) else self._hosts_files
        return [Path(p) for p in source]

    def _all_hosts_files(self) -> list[Path]:
        paths = {str(p): p for p in self._current_hosts_files()}
        paths.update({p: Path(p) for p in self._record.hosts_files})
        return [paths[k] for k in sorted(paths)]

    def _write_hosts(self, wanted: Iterable[NetworkLoadBalancer]) -> list[str]:
        entries = {lb.dns_name: self._record.addresses[lb.arn] for lb in wanted if lb.arn in self._record.addresses}
        changes = []
        written = set(self._record.hosts_files)
        for path in self._current_hosts_files():
            if not path.parent.is_dir():
                continue
            try:
                if hostsfile.write_block(path, entries):
                    changes.append(f"{path}: {len(entries)} load balancer name(s)")
            except (OSError, hostsfile.HostsBlockError) as error:
                self.log.warning("cannot write the load balancers' block in %s: %s", path, error)
                continue
            if entries:
                written.add(str(path))
        self._record.hosts_files = sorted(written)
        return changes

    def _read_record(self) -> _Record:
        try:
            data = json.loads((self.run_dir / "loadbalancers.json").read_text())
        except FileNotFoundError:
            return _Record()
        return _Record(dict(data.get("addresses", {})), list(data.get("hosts_files", [])))

    def _write_record(self) -> None:
        files.atomic_write(self.run_dir / "loadbalancers.json",
                           json.dumps(asdict(self._record), indent=2, sort_keys=True).encode(), mode=0o644, durable=False)


def _skeleton(config: str) -> str:
    """The part of a configuration whose change needs a reload: all but the server lines."""
    return "\n".join(line for line in config.splitlines() if not line.lstrip().startswith("server ")).strip()


def _ports(lb: NetworkLoadBalancer) -> str:
    return ",".join(str(listener.port) for listener in lb.listeners)


def _worker_pid(sock: Path) -> int:
    for line in haproxy_command(sock, "show info", timeout=1).splitlines():
        if line.startswith("Pid:"):
            return int(line.split(":", 1)[1])
    raise OSError(f"no Pid in `show info` on {sock}")


def _is_haproxy_of(pid: int, run_dir: Path) -> bool:
    """Whether `pid` is an HAProxy started with a configuration in `run_dir`."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if not argv or not argv[0].endswith(b"haproxy"):
        return False
    prefix = str(run_dir.resolve()).encode() + b"/"
    return any(arg.startswith(prefix) for arg in argv)


def _stop_group(pid: int, process: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM to the master's process group (master and workers), SIGKILL after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None:
                if process.poll() is not None and not _group_alive(pid):
                    return
            elif not _group_alive(pid):
                return
            time.sleep(0.02)


def _stop_process(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM to one process, SIGKILL after `timeout`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _running_pid(pid):
                return
            time.sleep(0.02)


def _running_pid(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
