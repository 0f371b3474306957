"""The sandbox's NLB: HAProxy on a loopback address, kept in line with a moto server's NLB, target group and
targets; reached by the NLB's DNS name through the hosts file it maintains."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import socketserver
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from sandbox import hostsfile
from sandbox.lifecycle import OWNER_ENV
from sandbox.loadbalancer import BridgeAddresses, HealthCheckLimits, LoadBalancers, sandbox_address_pool

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs Debian's haproxy")]

LB_ADDRESSES = ["127.0.0.250", "127.0.0.249"]
TARGET_IPS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
FAST_CHECKS = HealthCheckLimits(max_interval_s=0.2, max_timeout_s=0.2, max_healthy_threshold=2, max_unhealthy_threshold=2)
OTHER_HOSTS = "127.0.0.1 localhost\n10.240.0.10 master-0\n"
log = logging.getLogger("test-loadbalancer")


class Target:
    """A TCP server at ip:port that greets each connection with its own address, then echoes."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        self.server: socketserver.ThreadingTCPServer | None = None
        self.start()

    def start(self) -> None:
        name = f"{self.ip}:{self.port}"

        class Greet(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    self.request.sendall(name.encode() + b"\n")
                    while data := self.request.recv(1024):
                        self.request.sendall(data)
                except OSError:
                    pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        socketserver.ThreadingTCPServer.daemon_threads = True
        self.server = socketserver.ThreadingTCPServer((self.ip, self.port), Greet)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop_listening(self) -> None:
        """Close the listening socket; connections already accepted go on."""
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def name(self) -> str:
        return f"{self.ip}:{self.port}"


def _free_port(ips: list[str]) -> int:
    while True:
        with socket.socket() as probe:
            probe.bind((ips[0], 0))
            port = probe.getsockname()[1]
        try:
            for ip in ips[1:]:
                with socket.socket() as other:
                    other.bind((ip, port))
            return port
        except OSError:
            continue


class Nlb:
    """A moto NLB with a TCP listener forwarding to a target group of type ip."""

    def __init__(self, endpoint: str, name: str, listener_port: int, target_port: int) -> None:
        kw = dict(endpoint_url=endpoint, region_name="us-east-2")
        self.ec2, self.elbv2 = boto3.client("ec2", **kw), boto3.client("elbv2", **kw)
        vpc = self.ec2.create_vpc(CidrBlock="10.240.0.0/16")["Vpc"]["VpcId"]
        subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock="10.240.0.0/24")["Subnet"]["SubnetId"]
        lb = self.elbv2.create_load_balancer(Name=name, Type="network", Subnets=[subnet])["LoadBalancers"][0]
        self.arn, self.dns_name = lb["LoadBalancerArn"], lb["DNSName"]
        self.target_port = target_port
        self.group = self.elbv2.create_target_group(
            Name=name, Protocol="TCP", Port=target_port, VpcId=vpc, TargetType="ip",
            HealthCheckProtocol="TCP", HealthCheckIntervalSeconds=10, HealthyThresholdCount=3,
            UnhealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
        self.listener = self.add_listener(listener_port)

    def add_listener(self, port: int) -> str:
        return self.elbv2.create_listener(LoadBalancerArn=self.arn, Protocol="TCP", Port=port, DefaultActions=[
            {"Type": "forward", "TargetGroupArn": self.group}])["Listeners"][0]["ListenerArn"]

    def register(self, *ips: str) -> None:
        self.elbv2.register_targets(TargetGroupArn=self.group, Targets=[{"Id": ip, "Port": self.target_port} for ip in ips])

    def deregister(self, *ips: str) -> None:
        self.elbv2.deregister_targets(TargetGroupArn=self.group, Targets=[{"Id": ip, "Port": self.target_port} for ip in ips])

    def delete(self) -> None:
        for listener in self.elbv2.describe_listeners(LoadBalancerArn=self.arn)["Listeners"]:
            self.elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
        self.elbv2.delete_load_balancer(LoadBalancerArn=self.arn)


@pytest.fixture
def run_dir():
    path = Path(tempfile.mkdtemp(prefix="lb-test-", dir="/tmp"))  # short: HAProxy's unix sockets live here
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def hosts_files(tmp_path: Path) -> list[Path]:
    paths = [tmp_path / "host-hosts", tmp_path / "node-0" / "etc" / "hosts"]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(OTHER_HOSTS)
    return paths


@pytest.fixture
def lbs(run_dir: Path, hosts_files: list[Path]):
    balancers = LoadBalancers(run_dir, LB_ADDRESSES, hosts_files, log, limits=FAST_CHECKS,
                              env={**os.environ, OWNER_ENV: str(run_dir)})
    yield balancers
    assert balancers.close() == {"processes": [], "hosts_files": [], "addresses": []}
    assert [p.read_text() for p in hosts_files] == [OTHER_HOSTS] * len(hosts_files)


@pytest.fixture
def ports() -> tuple[int, int]:
    return _free_port(LB_ADDRESSES), _free_port(TARGET_IPS)


@pytest.fixture
def targets(ports):
    started = {ip: Target(ip, ports[1]) for ip in TARGET_IPS}
    yield started
    for target in started.values():
        target.stop_listening()


@pytest.fixture
def nlb(aws: str, ports) -> Nlb:
    return Nlb(aws, "k8s-nlb", ports[0], ports[1])


def _address_of(hosts: Path, dns_name: str) -> str:
    return hostsfile.read_block(hosts.read_text())[dns_name]


def _connect(hosts: Path, dns_name: str, port: int) -> tuple[socket.socket, str]:
    """A connection to the NLB by its DNS name, resolved through the hosts file; and who answered."""
    conn = socket.create_connection((_address_of(hosts, dns_name), port), timeout=2)
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = conn.recv(100)
        if not chunk:
            conn.close()
            raise ConnectionResetError("closed before the target greeted")
        answer += chunk
    return conn, answer.decode().strip()


def _who_answers(hosts: Path, dns_name: str, port: int, tries: int = 12) -> set[str]:
    answered = set()
    for _ in range(tries):
        try:
            conn, name = _connect(hosts, dns_name, port)
        except OSError:
            answered.add("(failed)")
            continue
        conn.close()
        answered.add(name)
    return answered


def _converge(lbs: LoadBalancers, nlb: Nlb, done: Callable[[dict], bool], timeout: float = 15.0) -> float:
    """Sync as the controller does (here every 0.1 s) until `done(status)`; seconds it took."""
    started = time.monotonic()
    while True:
        status = lbs.sync(nlb.elbv2)
        if done(status):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"not converged in {timeout} s: {status}"
        time.sleep(0.1)


def _health(status: dict) -> dict[str, str]:
    (lb,) = status["load_balancers"]
    return {t["id"]: t["health"] for listener in lb["listeners"] for t in listener["targets"]}


def _serving(*ips: str) -> Callable[[dict], bool]:
    return lambda status: _health(status) == {ip: "healthy" for ip in ips}


def test_connections_by_the_nlb_dns_name_reach_every_registered_target(lbs, nlb, targets, hosts_files, ports):
    nlb.register(*TARGET_IPS[:2])
    first = lbs.sync(nlb.elbv2)
    (lb,) = first["load_balancers"]
    assert (lb["dns_name"], lb["address"], lb["state"]) == (nlb.dns_name, LB_ADDRESSES[0], "serving")
    assert [listener["port"] for listener in lb["listeners"]] == [ports[0]]
    for path in hosts_files:
        assert hostsfile.read_block(path.read_text()) == {nlb.dns_name: LB_ADDRESSES[0]}
        assert path.read_text().startswith(OTHER_HOSTS)
    took = _converge(lbs, nlb, _serving(*TARGET_IPS[:2]))
    assert _who_answers(hosts_files[0], nlb.dns_name, ports[0]) == {targets[ip].name for ip in TARGET_IPS[:2]}

    steady = [lbs.sync(nlb.elbv2) for _ in range(5)]
    assert all(s["changes"] == [] for s in steady)
    print(f"\nfirst sync (HAProxy start) {first['sync_seconds']:.3f} s; targets in service after {took:.2f} s; "
          f"steady sync {max(s['sync_seconds'] for s in steady):.3f} s max")


def test_a_target_that_stops_answering_is_taken_out_and_put_back(lbs, nlb, targets, hosts_files, ports):
    nlb.register(*TARGET_IPS[:2])
    _converge(lbs, nlb, _serving(*TARGET_IPS[:2]))
    down, up = targets[TARGET_IPS[0]], targets[TARGET_IPS[1]]
    down.stop_listening()
    started = time.monotonic()
    _converge(lbs, nlb, lambda s: _health(s)[down.ip] == "unhealthy", timeout=5)
    taken_out = time.monotonic() - started
    assert taken_out <= FAST_CHECKS.max_interval_s * (FAST_CHECKS.max_unhealthy_threshold + 2) + 0.5
    assert _who_answers(hosts_files[1], nlb.dns_name, ports[0]) == {up.name}

    down.start()
    back = _converge(lbs, nlb, _serving(down.ip, up.ip), timeout=5)
    assert _who_answers(hosts_files[1], nlb.dns_name, ports[0]) == {down.name, up.name}
    print(f"\ntaken out after {taken_out:.2f} s, back after {back:.2f} s")


def test_a_target_that_never_answered_gets_no_connection(lbs, nlb, targets, hosts_files, ports):
    silent, serving = targets[TARGET_IPS[2]], targets[TARGET_IPS[0]]
    silent.stop_listening()
    nlb.register(serving.ip, silent.ip)
    status = lbs.sync(nlb.elbv2)
    assert _health(status)[silent.ip] == "initial"
    _converge(lbs, nlb, lambda s: _health(s)[serving.ip] == "healthy")
    assert _who_answers(hosts_files[0], nlb.dns_name, ports[0]) == {serving.name}
    assert _health(lbs.sync(nlb.elbv2))[silent.ip] in ("initial", "unhealthy")

    nlb.deregister(silent.ip)
    _converge(lbs, nlb, lambda s: silent.ip not in _health(s))
    nlb.register(silent.ip)
    assert _health(lbs.sync(nlb.elbv2))[silent.ip] == "initial"
    assert _who_answers(hosts_files[0], nlb.dns_name, ports[0]) == {serving.name}


def test_registering_and_deregistering_keep_established_connections(lbs, nlb, targets, hosts_files, ports):
    nlb.register(TARGET_IPS[0])
    _converge(lbs, nlb, _serving(TARGET_IPS[0]))
    kept, name = _connect(hosts_files[0], nlb.dns_name, ports[0])
    assert name == targets[TARGET_IPS[0]].name

    nlb.register(TARGET_IPS[1])
    registered = time.monotonic()
    _converge(lbs, nlb, lambda s: targets[TARGET_IPS[1]].name in _who_answers(hosts_files[0], nlb.dns_name, ports[0], 4))
    to_traffic = time.monotonic() - registered
    kept.sendall(b"still here\n")
    assert kept.recv(100) == b"still here\n"

    nlb.deregister(TARGET_IPS[0])
    status = lbs.sync(nlb.elbv2)
    assert _health(status)[TARGET_IPS[0]] == "draining"
    assert _who_answers(hosts_files[0], nlb.dns_name, ports[0]) == {targets[TARGET_IPS[1]].name}
    kept.sendall(b"after deregistration\n")
    assert kept.recv(100) == b"after deregistration\n"
    assert lbs.sync(nlb.elbv2)["changes"] == []
    kept.close()
    _converge(lbs, nlb, lambda s: _health(s) == {TARGET_IPS[1]: "healthy"}, timeout=5)
    print(f"\nregister -> traffic {to_traffic:.2f} s (sync every 0.1 s)")


def test_a_new_listener_reloads_haproxy_without_dropping_connections_or_health(lbs, nlb, targets, hosts_files, ports):
    nlb.register(*TARGET_IPS)
    _converge(lbs, nlb, _serving(*TARGET_IPS))
    kept, _ = _connect(hosts_files[0], nlb.dns_name, ports[0])
    pid = lbs.status()["load_balancers"][0]["pid"]

    second_port = _free_port(LB_ADDRESSES)
    nlb.add_listener(second_port)
    status = lbs.sync(nlb.elbv2)
    print(f"\nsync with reload {status['sync_seconds']:.3f} s")
    assert any("reloaded" in change for change in status["changes"])
    (lb,) = status["load_balancers"]
    assert lb["pid"] == pid
    assert sorted(listener["port"] for listener in lb["listeners"]) == sorted([ports[0], second_port])
    assert [t["health"] for t in lb["listeners"][[l["port"] for l in lb["listeners"]].index(ports[0])]["targets"]] == ["healthy"] * 3
    assert _who_answers(hosts_files[0], nlb.dns_name, ports[0]) == {t.name for t in targets.values()}
    _converge(lbs, nlb, lambda s: all(t["health"] == "healthy" for listener in s["load_balancers"][0]["listeners"]
                                      for t in listener["targets"]))
    assert _who_answers(hosts_files[0], nlb.dns_name, second_port) == {t.name for t in targets.values()}
    kept.sendall(b"across the reload\n")
    assert kept.recv(100) == b"across the reload\n"
    kept.close()


def test_a_deleted_nlb_loses_its_haproxy_address_and_hosts_line(lbs, nlb, targets, hosts_files, ports, run_dir):
    nlb.register(TARGET_IPS[0])
    _converge(lbs, nlb, _serving(TARGET_IPS[0]))
    pid = lbs.status()["load_balancers"][0]["pid"]
    nlb.delete()
    status = lbs.sync(nlb.elbv2)
    assert status["load_balancers"] == []
    assert lbs.leftovers() == {"processes": [], "hosts_files": [], "addresses": []}
    assert not Path(f"/proc/{pid}").exists()
    assert [p.read_text() for p in hosts_files] == [OTHER_HOSTS] * 2
    with pytest.raises(OSError):
        socket.create_connection((LB_ADDRESSES[0], ports[0]), timeout=1)
    assert sorted(p.suffix for p in run_dir.iterdir()) == [".json", ".log"]


def test_haproxy_carries_the_owner_marker_and_its_pid_file_is_in_the_run_directory(lbs, nlb, targets, run_dir):
    nlb.register(TARGET_IPS[0])
    status = lbs.sync(nlb.elbv2)
    pid = status["load_balancers"][0]["pid"]
    assert int(next(run_dir.glob("*.pid")).read_text()) == pid
    processes = lbs.leftovers()["processes"]
    assert pid in processes and len(processes) == 2  # master and its worker
    for process in processes:
        environ = Path(f"/proc/{process}/environ").read_bytes().split(b"\0")
        assert f"{OWNER_ENV}={run_dir}".encode() in environ


def test_a_new_controller_adopts_what_runs_and_close_removes_it(lbs, nlb, targets, run_dir, hosts_files, ports):
    nlb.register(TARGET_IPS[0])
    _converge(lbs, nlb, _serving(TARGET_IPS[0]))
    pid = lbs.status()["load_balancers"][0]["pid"]

    successor = LoadBalancers(run_dir, LB_ADDRESSES, hosts_files, log, limits=FAST_CHECKS)
    status = successor.sync(nlb.elbv2)
    assert status["changes"] == []
    assert status["load_balancers"][0]["pid"] == pid
    assert successor.close() == {"processes": [], "hosts_files": [], "addresses": []}
    assert [p.read_text() for p in hosts_files] == [OTHER_HOSTS] * 2
    assert lbs.leftovers() == {"processes": [], "hosts_files": [], "addresses": []}


def test_close_stops_an_haproxy_whose_pid_file_is_lost(lbs, nlb, targets, run_dir):
    nlb.register(TARGET_IPS[0])
    lbs.sync(nlb.elbv2)
    next(run_dir.glob("*.pid")).unlink()
    orphaned = LoadBalancers(run_dir, LB_ADDRESSES, [], log)
    assert len(orphaned.leftovers()["processes"]) == 2
    assert orphaned.close()["processes"] == []


def test_an_nlb_without_a_free_address_is_reported_and_others_are_served(lbs, nlb, targets, hosts_files, aws):
    names = [f"extra-{i}" for i in range(len(LB_ADDRESSES))]
    extra = [nlb.elbv2.create_load_balancer(Name=n, Type="network", Subnets=[
        nlb.ec2.describe_subnets()["Subnets"][0]["SubnetId"]])["LoadBalancers"][0] for n in names]
    status = lbs.sync(nlb.elbv2)
    states = sorted(lb["state"] for lb in status["load_balancers"])
    assert states.count("no TCP listener") + states.count("serving") == len(LB_ADDRESSES)
    assert sum(s.startswith("no free address") for s in states) == 1
    entries = hostsfile.read_block(hosts_files[0].read_text())
    assert len(entries) == len(LB_ADDRESSES) and set(entries.values()) == set(LB_ADDRESSES)
    for lb in extra:
        nlb.elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])


def test_a_run_directory_too_deep_for_unix_sockets_is_refused_up_front(tmp_path):
    with pytest.raises(ValueError, match="shorter path"):
        LoadBalancers(tmp_path / ("d" * 100), LB_ADDRESSES, [], log)


def test_sandbox_addresses_count_down_from_250():
    assert sandbox_address_pool(count=3) == ["10.240.0.250", "10.240.0.249", "10.240.0.248"]


BRIDGE_SCRIPT = """
import subprocess
from sandbox.loadbalancer import BridgeAddresses
subprocess.run(["ip", "link", "add", "lbt0", "type", "bridge"], check=True)
bridge = BridgeAddresses("lbt0")
bridge.claim("10.240.0.250"); bridge.claim("10.240.0.250")
print(subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "lbt0"], capture_output=True, text=True).stdout.count("10.240.0.250/32"))
bridge.release("10.240.0.250"); bridge.release("10.240.0.250")
print(subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "lbt0"], capture_output=True, text=True).stdout.count("10.240.0.250"))
try:
    BridgeAddresses("absent0").claim("10.240.0.249")
except RuntimeError as error:
    print("refused:", error)
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_bridge_addresses_are_added_once_and_removed_in_a_private_network_namespace():
    result = subprocess.run(["unshare", "--net", sys.executable, "-c", BRIDGE_SCRIPT], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[2], timeout=30)
    assert result.returncode == 0, result.stderr
    added, left, refused = result.stdout.splitlines()
    assert (added, left) == ("1", "0")
    assert refused.startswith("refused: cannot add 10.240.0.249 to absent0")
