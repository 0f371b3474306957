"""The sandbox plays EC2's data plane from moto's state: instances launched, stopped, started and
terminated through boto3 boot, stop, restart and discard nodes; VPC routes to a node carry traffic
between nodes' namespaces unless that instance's source/dest check is on; `sandbox down` leaves
nothing whatever state the nodes are in. Boot and reconcile times are printed (`pytest -s`).

Uses its own VPC and addresses .50-.69 of the sandbox subnet, apart from the demo cluster's.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import paramiko
import pytest

from groundup.hostkeys import parse_console_host_keys
from groundup.ssh import parse_public_key
from sandbox import lifecycle, netns
from tests.e2e.conftest import Sandbox

pytestmark = pytest.mark.e2e
CANONICAL = "099720109477"


def wait_for(condition: Callable[[], object], timeout: float = 60, what: str = "condition") -> float:
    """Poll until `condition()` is truthy; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not reached in {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def presented_host_key(address: str) -> paramiko.PKey | None:
    try:
        sock = socket.create_connection((address, 22), timeout=2)
    except OSError:
        return None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=5)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError):
        return None
    finally:
        transport.close()


def sshd_answers(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=0.5) as sock:
            sock.settimeout(2)
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


class Cloud:
    """boto3 against the sandbox's moto, with a VPC and subnet of its own in the sandbox subnet."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.ec2 = boto3.client("ec2", endpoint_url=sandbox.env["AWS_ENDPOINT_URL"],
                                region_name=sandbox.env["AWS_DEFAULT_REGION"],
                                aws_access_key_id="testing", aws_secret_access_key="testing")
        self.vpc = self.ec2.create_vpc(CidrBlock="10.240.0.0/16")["Vpc"]["VpcId"]
        self.subnet = self.ec2.create_subnet(VpcId=self.vpc, CidrBlock="10.240.0.0/24")["Subnet"]["SubnetId"]
        self.ami = self.ec2.describe_images(Owners=[CANONICAL])["Images"][0]["ImageId"]
        self.launched: list[str] = []

    def launch(self, ip: str, source_dest_check: bool = True) -> str:
        instance = self.ec2.run_instances(
            ImageId=self.ami, InstanceType="t3.small", MinCount=1, MaxCount=1,
            NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": self.subnet, "PrivateIpAddress": ip}],
        )["Instances"][0]["InstanceId"]
        self.launched.append(instance)
        if not source_dest_check:
            self.ec2.modify_instance_attribute(InstanceId=instance, SourceDestCheck={"Value": False})
        return instance

    def clear(self, *ips: str) -> None:
        """Terminate live instances at these addresses (left by an earlier run) and wait for their nodes to go."""
        pages = self.ec2.get_paginator("describe_instances").paginate()  # moto pages at 100, terminated ones too
        live = [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]
                if i.get("PrivateIpAddress") in ips and i["State"]["Name"] not in ("shutting-down", "terminated")]
        if live:
            self.ec2.terminate_instances(InstanceIds=live)
        wait_for(lambda: not set(ips) & set(self.sandbox.nodes()), 60, f"nodes at {', '.join(ips)} gone")

    def console_keys(self, instance_id: str) -> list[str]:
        return parse_console_host_keys(self.ec2.get_console_output(InstanceId=instance_id).get("Output", ""))

    def node(self, ip: str) -> dict | None:
        return self.sandbox.nodes().get(ip)

    def terminate_all(self) -> None:
        """Terminate what this module launched, unless a `sandbox down` already took moto's state away."""
        from botocore.exceptions import ClientError, EndpointConnectionError

        try:
            self.ec2.terminate_instances(InstanceIds=self.launched)
        except EndpointConnectionError:
            pass
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "InvalidInstanceID.NotFound":
                raise


@pytest.fixture(scope="module")
def cloud(sandbox: Sandbox):
    cloud = Cloud(sandbox)
    cloud.clear("10.240.0.50", "10.240.0.51", "10.240.0.60", "10.240.0.61")
    yield cloud
    cloud.terminate_all()


def node_gone(sandbox: Sandbox, ip: str) -> bool:
    name = "ip-" + ip.replace(".", "-")
    return (ip not in sandbox.nodes() and not netns.namespace_exists("gu-" + name)
            and not netns.link_exists(netns.veth_name(ip)) and not (sandbox.state / "nodes" / name).exists())


def test_a_launched_instance_boots_a_node_that_answers_ssh_with_the_console_outputs_key(
        sandbox: Sandbox, cloud: Cloud) -> None:
    started = time.monotonic()
    instance = cloud.launch("10.240.0.50")
    boot = wait_for(lambda: sshd_answers("10.240.0.50"), 60, "sshd on 10.240.0.50")
    console = wait_for(lambda: cloud.console_keys(instance), 30, "host keys in the console output")
    print(f"\nboot: instance launched -> sshd answers {boot:.2f} s; "
          f"-> host keys in the console output {time.monotonic() - started:.2f} s")
    node = cloud.node("10.240.0.50")
    assert node["instance_id"] == instance and node["name"] == "ip-10-240-0-50"
    assert [parse_public_key(k) for k in cloud.console_keys(instance)] == [presented_host_key("10.240.0.50")]
    assert sandbox.node_exec("10.240.0.50", "hostname").stdout.strip() == "ip-10-240-0-50"
    assert sandbox.node_exec("10.240.0.50", "cat", "/var/lib/cloud/data/instance-id").stdout.strip() == instance
    assert console < 30


def test_nodes_can_set_their_own_network_sysctls_but_not_the_hosts(sandbox: Sandbox, cloud: Cloud) -> None:
    host_forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    result = sandbox.node_exec("10.240.0.50", "sysctl", "-w", "net.ipv4.ip_forward=1")
    assert result.returncode == 0, result.stderr
    assert sandbox.node_exec("10.240.0.50", "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_forwarding
    refused = sandbox.node_exec("10.240.0.50", "sh", "-c", "echo 5 > /proc/sys/kernel/panic")
    assert refused.returncode != 0, "kernel.* is read-only in a node"
    assert sandbox.node_exec("10.240.0.50", "cat", "/proc/sys/kernel/panic").stdout.strip() == "10"
    tools = sandbox.node_exec("10.240.0.50", "sh", "-c",
                              "iptables -t nat -S >/dev/null && python3 -c 'import json, urllib.request' && "
                              "test -d /var/lib/containerd && echo ok")
    assert tools.stdout.strip() == "ok", tools.stderr


def test_each_node_gets_what_an_instance_has_its_own_cgroup_kmsg_and_kubelets_kernel_values(
        sandbox: Sandbox, cloud: Cloud) -> None:
    """Two nodes' units sit in different cgroups, only in the controller-less hierarchies; /dev/kmsg is
    there and the kernel values kubelet sets read as it wants them, read-only, the host's untouched."""
    from sandbox.nodes import CGROUP_PARENT

    second = "10.240.0.51"
    instance = cloud.launch(second)
    wait_for(lambda: sshd_answers(second), 60, f"sshd on {second}")
    cgroups = {}
    for ip in ("10.240.0.50", second):
        pid = cloud.node(ip)["pid"]
        lines = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
        name = f"ip-{ip.replace('.', '-')}"
        assert lines[""].startswith(f"/{CGROUP_PARENT}/{name}/"), lines
        assert lines["name=systemd"].startswith(f"/{CGROUP_PARENT}/{name}/"), lines
        assert not any(lines[k].startswith(f"/{CGROUP_PARENT}") for k in lines if k not in ("", "name=systemd"))
        sshd = sandbox.node_exec(ip, "cat", "/sys/fs/cgroup/system.slice/ssh.service/cgroup.procs").stdout.split()
        cgroups[ip] = set(sshd)
        assert sshd, f"{ip}: sshd runs in its own node's ssh.service cgroup"
    assert Path(f"/sys/fs/cgroup/unified/{CGROUP_PARENT}/ip-10-240-0-50").is_dir()
    host_panic = Path("/proc/sys/kernel/panic").read_text()
    for ip in ("10.240.0.50", second):
        shown = sandbox.node_exec(ip, "sh", "-c", "test -c /dev/kmsg && cat /proc/sys/vm/overcommit_memory "
                                  "/proc/sys/kernel/panic /proc/sys/kernel/panic_on_oops").stdout.split()
        assert shown == ["1", "10", "1"], shown
        assert sandbox.node_exec(ip, "sh", "-c", "echo 5 > /proc/sys/kernel/panic").returncode != 0
        assert sandbox.node_exec(ip, "cat", "/sys/fs/cgroup/cgroup.controllers").stdout.strip() == ""
    assert Path("/proc/sys/kernel/panic").read_text() == host_panic
    cloud.ec2.terminate_instances(InstanceIds=[instance])
    wait_for(lambda: second not in sandbox.nodes(), 60, f"node at {second} gone")
    wait_for(lambda: not Path(f"/sys/fs/cgroup/unified/{CGROUP_PARENT}/ip-10-240-0-51").exists(), 30,
             "the terminated node's cgroup removed")


def test_stop_and_start_keep_the_disk_and_the_host_key(sandbox: Sandbox, cloud: Cloud) -> None:
    instance = cloud.node("10.240.0.50")["instance_id"]
    key = presented_host_key("10.240.0.50")
    assert sandbox.node_exec("10.240.0.50", "sh", "-c", "echo kept > /root/marker && sync").returncode == 0
    cloud.ec2.stop_instances(InstanceIds=[instance])
    wait_for(lambda: not sshd_answers("10.240.0.50") and cloud.node("10.240.0.50")["state"] == "stopped", 60,
             "node stopped")
    assert cloud.node("10.240.0.50")["pid"] is None
    cloud.ec2.start_instances(InstanceIds=[instance])
    boot = wait_for(lambda: sshd_answers("10.240.0.50"), 60, "sshd after start")
    print(f"\nstart: instance started -> sshd answers {boot:.2f} s")
    assert sandbox.node_exec("10.240.0.50", "cat", "/root/marker").stdout == "kept\n"
    assert presented_host_key("10.240.0.50") == key


def test_a_second_vpcs_instance_at_a_nodes_address_runs_nowhere_and_its_console_says_why(
        sandbox: Sandbox, cloud: Cloud) -> None:
    first = cloud.node("10.240.0.50")["instance_id"]
    other = Cloud(sandbox)
    try:
        second = other.launch("10.240.0.50")

        def said() -> str:
            return other.ec2.get_console_output(InstanceId=second).get("Output", "")

        wait_for(lambda: "no node runs instance" in said(), 20, "the second instance's console output")
        assert f"10.240.0.50 is taken by {first} (VPC {cloud.vpc}, launched earlier, running);" in said()
        time.sleep(2)
        node = cloud.node("10.240.0.50")
        assert node["instance_id"] == first and node["state"] == "running"
        assert sandbox.node_exec("10.240.0.50", "cat", "/root/marker").stdout == "kept\n"
        assert sandbox.node_exec("10.240.0.50", "cat", "/var/lib/cloud/data/instance-id").stdout.strip() == first
    finally:
        other.terminate_all()
    time.sleep(2)
    assert cloud.node("10.240.0.50")["instance_id"] == first and sshd_answers("10.240.0.50")


def test_a_reboot_from_inside_boots_the_node_again_and_the_instance_stays_running(
        sandbox: Sandbox, cloud: Cloud) -> None:
    instance = cloud.node("10.240.0.50")["instance_id"]
    old_pid = cloud.node("10.240.0.50")["pid"]
    key = presented_host_key("10.240.0.50")
    started = time.monotonic()
    sandbox.node_exec("10.240.0.50", "systemctl", "reboot")
    wait_for(lambda: cloud.node("10.240.0.50")["pid"] not in (None, old_pid) and sshd_answers("10.240.0.50"), 60,
             "the node back after its reboot")
    print(f"\nreboot: systemctl reboot -> sshd answers again {time.monotonic() - started:.2f} s")
    state = cloud.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running", "EC2 keeps a rebooted instance running"
    assert sandbox.node_exec("10.240.0.50", "cat", "/root/marker").stdout == "kept\n"
    assert presented_host_key("10.240.0.50") == key


def test_terminate_discards_the_node_and_a_relaunch_gets_a_fresh_disk_and_new_host_keys(
        sandbox: Sandbox, cloud: Cloud) -> None:
    old = cloud.node("10.240.0.50")["instance_id"]
    old_key = presented_host_key("10.240.0.50")
    cloud.ec2.terminate_instances(InstanceIds=[old])
    gone = wait_for(lambda: node_gone(sandbox, "10.240.0.50"), 60, "node discarded")
    print(f"\nterminate: instance terminated -> node, disk and network gone {gone:.2f} s")
    assert not sshd_answers("10.240.0.50")
    assert _zombie_children(sandbox.record["controller"]["pid"]) == [], "the controller did not reap the node's nspawn"
    new = cloud.launch("10.240.0.50")
    relaunch = wait_for(lambda: sshd_answers("10.240.0.50"), 60, "sshd on the relaunched node")
    print(f"relaunch at the same IP: instance launched -> sshd answers {relaunch:.2f} s")
    assert relaunch < 10, "the host must not keep the old node's MAC address"
    wait_for(lambda: cloud.console_keys(new), 30, "new host keys in the console output")
    new_key = presented_host_key("10.240.0.50")
    assert new_key != old_key
    assert [parse_public_key(k) for k in cloud.console_keys(new)] == [new_key]
    assert [parse_public_key(k) for k in cloud.console_keys(old)] == [old_key], "the old console is the old one"
    assert sandbox.node_exec("10.240.0.50", "test", "-e", "/root/marker").returncode == 1


def _zombie_children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def _reachable(from_ip: str, url: str) -> bool:
    ns = "gu-ip-" + from_ip.replace(".", "-")
    result = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-m", "1", url], capture_output=True, text=True)
    return result.returncode == 0 and "routed" in result.stdout


def test_a_vpc_route_to_a_node_carries_traffic_unless_its_source_dest_check_is_on(
        sandbox: Sandbox, cloud: Cloud) -> None:
    router = cloud.launch("10.240.0.60", source_dest_check=False)
    cloud.launch("10.240.0.61")
    for ip in ("10.240.0.60", "10.240.0.61"):
        wait_for(lambda ip=ip: sshd_answers(ip), 60, f"sshd on {ip}")
    serve = ("ip addr add 10.250.60.1/32 dev lo && mkdir -p /srv && echo routed > /srv/index.html && "
             "systemd-run --unit=probe python3 -m http.server --bind 10.250.60.1 --directory /srv 8000")
    assert sandbox.node_exec("10.240.0.60", "sh", "-c", serve).returncode == 0
    table = cloud.ec2.create_route_table(VpcId=cloud.vpc)["RouteTable"]["RouteTableId"]
    cloud.ec2.associate_route_table(RouteTableId=table, SubnetId=cloud.subnet)
    url = "http://10.250.60.1:8000/"
    fetch = f"import urllib.request; print(urllib.request.urlopen('{url}', timeout=1).read().decode())"
    wait_for(lambda: sandbox.node_exec("10.240.0.60", "python3", "-c", fetch).stdout.strip() == "routed", 20,
             "the probe listening on the node")
    assert not _reachable("10.240.0.61", url), "no route before the VPC route exists"

    cloud.ec2.create_route(RouteTableId=table, DestinationCidrBlock="10.250.60.0/24", InstanceId=router)
    added = wait_for(lambda: _reachable("10.240.0.61", url), 20, "traffic over the VPC route")
    print(f"\nroutes: CreateRoute -> traffic flows over it {added:.2f} s")
    ns = "gu-ip-10-240-0-61"
    assert ("10.250.60.0/24", "10.240.0.60") in netns.sandbox_routes(ns)
    assert not netns.sandbox_routes("gu-ip-10-240-0-60"), "the target gets no route to itself"

    cloud.ec2.modify_instance_attribute(InstanceId=router, SourceDestCheck={"Value": True})
    removed = wait_for(lambda: not netns.sandbox_routes(ns), 20, "route withdrawn for source/dest check on")
    print(f"routes: source/dest check on -> route removed {removed:.2f} s")
    assert not _reachable("10.240.0.61", url)
    log = (sandbox.state / "logs" / "controller.log").read_text()
    assert "has its source/destination check on" in log and router in log

    cloud.ec2.modify_instance_attribute(InstanceId=router, SourceDestCheck={"Value": False})
    wait_for(lambda: netns.sandbox_routes(ns), 20, "route back with the check off")
    cloud.ec2.delete_route(RouteTableId=table, DestinationCidrBlock="10.250.60.0/24")
    deleted = wait_for(lambda: not netns.sandbox_routes(ns), 20, "route removed with DeleteRoute")
    print(f"routes: DeleteRoute -> route removed {deleted:.2f} s")
    cloud.ec2.create_route(RouteTableId=table, DestinationCidrBlock="10.250.60.0/24", InstanceId=router)
    wait_for(lambda: netns.sandbox_routes(ns), 20, "route again, left in place for `sandbox down`")


def test_status_lists_instances_nodes_routes_and_the_mirror(sandbox: Sandbox, cloud: Cloud) -> None:
    result = sandbox.groundup("status")
    assert result.returncode == 0, result.stdout + result.stderr
    for instance in cloud.launched[-2:]:
        assert instance in result.stdout
    assert "node ip-10-240-0-61 running, sshd up" in result.stdout
    assert "on 10.240.0.61: 10.250.60.0/24 via 10.240.0.60" in result.stdout
    assert "etcd" in result.stdout and "built from k8s.io/kubernetes@v1.37.2 with go1.26.8" in result.stdout


def test_down_leaves_nothing_with_nodes_running_stopped_and_routed_then_up_again(
        sandbox: Sandbox, cloud: Cloud) -> None:
    cloud.ec2.stop_instances(InstanceIds=[cloud.launched[-1]])
    wait_for(lambda: cloud.node("10.240.0.61")["state"] == "stopped", 60, "one node stopped")
    assert sandbox.nodes()["10.240.0.60"]["state"] == "running"
    started = time.monotonic()
    result = sandbox.groundup("down")
    print(f"\ndown: {time.monotonic() - started:.2f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    left = lifecycle.leftovers_report(sandbox.state)
    assert not any(left.values()), left
    assert "gu-" not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not netns.sandbox_namespaces()
    assert str(sandbox.state) not in Path("/proc/self/mountinfo").read_text()
    assert not (sandbox.state / "nodes").exists()
    assert "10.240.0." not in subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    assert "groundup" not in Path("/etc/hosts").read_text().lower()
    lifecycle.up(sandbox.state)
    assert sandbox.nodes() == {}, "a fresh moto has no instances, so no nodes"
