"""Sandbox pieces that need neither root nor a running sandbox."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from groundup.hostkeys import parse_console_host_keys
from sandbox import cloudinit, controller, lifecycle, netns, nodes, rootfs, routes


def test_rootfs_sources_come_from_the_hosts_apt_config(tmp_path: Path) -> None:
    apt = tmp_path / "etc/apt/sources.list.d"
    apt.mkdir(parents=True)
    (tmp_path / "etc/apt/sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://mirror.invalid/debian bookworm main contrib\n"
        "deb-src http://mirror.invalid/debian bookworm main\n"
        "deb http://mirror.invalid/debian bullseye main\n"
    )
    (apt / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nEnabled: no\nURIs: http://other.invalid/\nSuites: bookworm\nComponents: main\n"
    )
    (apt / "thirdparty.list.disabled").write_text("deb http://third.invalid/ bookworm main\n")
    assert rootfs.host_apt_sources(root=tmp_path) == [
        "deb http://mirror.invalid/debian bookworm main contrib",
        "deb http://mirror.invalid/debian bookworm main",
        "deb http://mirror.invalid/debian bookworm-updates main",
        "deb http://mirror.invalid/debian-security bookworm-security main",
    ]


def test_the_rootfs_stamp_changes_with_the_package_list() -> None:
    assert rootfs.stamp() == rootfs.stamp(rootfs.BASE_PACKAGES)
    assert rootfs.stamp() != rootfs.stamp(rootfs.BASE_PACKAGES + ("etcd-server",))
    assert {"systemd", "openssh-server", "python3"} <= set(rootfs.BASE_PACKAGES)


def test_nodes_get_what_the_bootstrap_and_the_real_components_run_on() -> None:
    assert {"iptables", "ca-certificates", "libseccomp2", "kmod", "dbus"} <= set(rootfs.BASE_PACKAGES)


def test_customize_leaves_no_host_keys_and_keys_only_sshd(tmp_path: Path) -> None:
    for sub in ("etc/ssh", "var/lib/dbus", "root"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "etc/ssh/ssh_host_rsa_key").write_text("x")
    (tmp_path / "etc/resolv.conf").symlink_to("/run/systemd/resolve/stub-resolv.conf")
    rootfs.customize(tmp_path)
    assert not list((tmp_path / "etc/ssh").glob("ssh_host_*"))
    assert "127.0.0.1 localhost" in (tmp_path / "etc/hosts").read_text()
    assert (tmp_path / "etc/resolv.conf").read_text() == "nameserver 127.0.0.1\n"
    assert "PasswordAuthentication no" in (tmp_path / "etc/ssh/sshd_config.d/groundup.conf").read_text()


def test_interface_names_fit_the_kernel_limit_and_differ_per_address() -> None:
    names = {netns.veth_name(f"10.240.{i}.{j}") for i in (0, 255) for j in range(256)}
    assert len(names) == 512 and max(map(len, names)) <= 15
    assert netns.veth_name("10.240.0.20") == "vgu-0af00014"
    assert netns.namespace_name(nodes.node_name("10.240.0.22")) == "gu-ip-10-240-0-22"


def test_a_subnet_the_host_already_uses_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    addrs = [{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "10.240.0.5", "prefixlen": 16}]}]
    monkeypatch.setattr(netns, "_json", lambda *args: addrs if args[0] == "addr" else [])
    with pytest.raises(netns.AddressRangeInUse, match="eth0 has 10.240.0.5/16"):
        netns.check_range_free(IPv4Network("10.240.0.0/24"))


def test_a_route_into_the_subnet_is_refused_but_our_own_bridge_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    routes = [{"dst": "default", "dev": "eth0"}, {"dst": "10.240.0.0/24", "dev": netns.BRIDGE}]
    monkeypatch.setattr(netns, "_json", lambda *args: routes if args[0] == "route" else [])
    netns.check_range_free(IPv4Network("10.240.0.0/24"))
    routes.append({"dst": "10.0.0.0/8", "dev": "wg0"})
    with pytest.raises(netns.AddressRangeInUse, match="10.0.0.0/8 dev wg0"):
        netns.check_range_free(IPv4Network("10.240.0.0/24"))


def test_nspawn_is_invoked_with_the_measured_flags(tmp_path: Path) -> None:
    argv = nodes.nspawn_command(tmp_path / "merged", "ip-10-240-0-10", "gu-master-0", tmp_path / "containerd")
    assert argv[:3] == ["systemd-nspawn", "-b", "-D"]
    for flag in ("--register=no", "--keep-unit", "--console=read-only", "--capability=all",
                 "--network-namespace-path=/run/netns/gu-master-0",
                 "--system-call-filter=add_key keyctl request_key bpf",
                 f"--bind={tmp_path / 'containerd'}:/var/lib/containerd"):
        assert flag in argv
    assert nodes.NSPAWN_ENV == {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1", "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}


def test_each_node_gets_its_own_host_key_once(tmp_path: Path) -> None:
    (tmp_path / "a/etc/ssh").mkdir(parents=True)
    (tmp_path / "b/etc/ssh").mkdir(parents=True)
    first = nodes.ensure_identity(tmp_path / "a", "ip-10-240-0-10", "10.240.0.10")
    assert nodes.ensure_identity(tmp_path / "a", "ip-10-240-0-10", "10.240.0.10") == first
    assert nodes.ensure_identity(tmp_path / "b", "ip-10-240-0-11", "10.240.0.11") != first
    assert first.startswith("ssh-ed25519 ")
    assert (tmp_path / "a/etc/ssh/ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
    assert "10.240.0.10 ip-10-240-0-10" in (tmp_path / "a/etc/hosts").read_text()


def test_the_env_file_round_trips(tmp_path: Path) -> None:
    env = {"PREFECT_API_URL": "http://127.0.0.1:4200/api", "ODD": "it's"}
    lifecycle.write_env_file(tmp_path, env)
    assert lifecycle.read_env_file(tmp_path) == env
    assert "export PREFECT_API_URL='http://127.0.0.1:4200/api'" in (tmp_path / "env").read_text()


class FakeEC2:
    """Stands in for moto in the cloud-init calls (key pair and user-data)."""

    def __init__(self, public_key: str) -> None:
        self.public_key = public_key

    def describe_key_pairs(self, KeyNames, IncludePublicKey):
        assert IncludePublicKey
        return {"KeyPairs": [{"KeyName": KeyNames[0], "PublicKey": self.public_key}]}

    def describe_instance_attribute(self, InstanceId, Attribute):
        return {"UserData": {"Value": base64.b64encode(b"name=worker-0|pod-cidr=10.200.0.0/24").decode()}}


def test_cloud_init_seeds_the_key_pair_and_user_data_and_prints_host_keys(tmp_path: Path) -> None:
    root = tmp_path / "nodes/ip-10-240-0-20/merged"
    (root / "root").mkdir(parents=True)
    host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGrcUbw6DyjPN7lmQWFsI8sXylbXR5JtyQzc157lbAAL"
    ec2 = FakeEC2("ssh-rsa AAAAB3NzaC1yc2E cluster")
    cloudinit.seed(root, "i-1", cloudinit.public_key(ec2, "cluster"), cloudinit.user_data(ec2, "i-1"))
    authorized = root / "root/.ssh/authorized_keys"
    assert authorized.read_text() == "ssh-rsa AAAAB3NzaC1yc2E cluster\n"
    assert authorized.stat().st_mode & 0o777 == 0o600
    assert (root / "var/lib/cloud/instance/user-data.txt").read_text() == "name=worker-0|pod-cidr=10.200.0.0/24"
    assert (root / "var/lib/cloud/data/instance-id").read_text() == "i-1\n"
    console = cloudinit.write_console(tmp_path, "i-1", "ip-10-240-0-20", [host_key])
    assert console == tmp_path / "console/i-1"
    assert parse_console_host_keys(console.read_text()) == [host_key]
    cloudinit.seed(root, "i-1", cloudinit.public_key(ec2, None), b"")
    assert not authorized.exists(), "an instance launched without a key pair accepts no key"


SUBNET = IPv4Network("10.240.0.0/24")
T0 = datetime(2025, 1, 15, tzinfo=timezone.utc)


def _instance(instance_id: str, ip: str, state: str = "running", launched: int = 0, check: bool = False,
              subnet: str = "subnet-1") -> dict:
    return {"InstanceId": instance_id, "PrivateIpAddress": ip, "State": {"Name": state}, "Region": "us-east-2",
            "LaunchTime": T0.replace(minute=launched), "SourceDestCheck": check, "SubnetId": subnet,
            "VpcId": "vpc-1", "NetworkInterfaces": [{"NetworkInterfaceId": "eni-" + instance_id[2:]}]}


def _node(ip: str, instance_id: str, state: str = "running") -> nodes.NodeRecord:
    return nodes.NodeRecord(name=nodes.node_name(ip), private_ip=ip, instance_id=instance_id, region="us-east-2",
                            namespace="gu-" + nodes.node_name(ip), root="/x", host_key="k", state=state)


def test_the_first_launched_live_instance_at_an_address_keeps_its_node() -> None:
    wanted, ignored = controller.claims([
        _instance("i-old", "10.240.0.20", "terminated", launched=1),
        _instance("i-b", "10.240.0.20", "pending", launched=3),
        _instance("i-a", "10.240.0.20", "running", launched=2),
        _instance("i-other", "172.31.0.20"),
        _instance("i-reserved", "10.240.0.2"),
        _instance("i-stopped", "10.240.0.21", "stopped"),
        _instance("i-later", "10.240.0.21", "running", launched=5),
    ], SUBNET)
    assert {ip: i["InstanceId"] for ip, i in wanted.items()} == {"10.240.0.20": "i-a", "10.240.0.21": "i-stopped"}
    assert "AWS reserves them" in ignored["i-reserved"]
    assert ignored["i-b"] == ("10.240.0.20 is taken by i-a (VPC vpc-1, launched earlier, running); the sandbox "
                              "has one network for every VPC: tear that cluster down, then build this one again")
    assert "is taken by i-stopped (VPC vpc-1, launched earlier, stopped)" in ignored["i-later"]
    assert "i-old" not in ignored and "i-other" not in ignored and "i-a" not in ignored


def test_an_instance_no_node_plays_says_why_in_its_console_once(tmp_path) -> None:
    from sandbox import cloudinit
    from sandbox.state import console_dir

    reason = ("10.240.0.20 is taken by i-0123456789abcdef0 (VPC vpc-0123456789abcdef0, launched earlier, running); "
              "the sandbox has one network for every VPC: tear that cluster down, then build this one again")
    assert cloudinit.write_unplayed_console(tmp_path, "i-b", reason) is True
    assert cloudinit.write_unplayed_console(tmp_path, "i-b", reason) is False
    lines = (console_dir(tmp_path) / "i-b").read_text().splitlines()
    assert lines[0] == "[    0.000000] groundup sandbox: no node runs instance i-b"
    assert " ".join(line.split(": ", 1)[1] for line in lines[1:]) == reason
    assert len(lines) <= 3 and all(len(line) <= 200 for line in lines)
    cloudinit.write_console(tmp_path, "i-b", "ip-10-240-0-20", [])
    assert "no node runs" not in (console_dir(tmp_path) / "i-b").read_text()


def test_instances_drive_boot_stop_start_and_terminate() -> None:
    have = {"10.240.0.20": _node("10.240.0.20", "i-1"), "10.240.0.21": _node("10.240.0.21", "i-2"),
            "10.240.0.22": _node("10.240.0.22", "i-3", state="stopped"),
            "10.240.0.23": _node("10.240.0.23", "i-4")}
    wanted = {"10.240.0.20": _instance("i-1", "10.240.0.20", "stopped"),
              "10.240.0.22": _instance("i-3", "10.240.0.22", "pending"),
              "10.240.0.23": _instance("i-5", "10.240.0.23", "running"),
              "10.240.0.24": _instance("i-6", "10.240.0.24", "running"),
              "10.240.0.25": _instance("i-7", "10.240.0.25", "stopped")}
    actions, waiting = controller.plan_nodes(wanted, have, capacity=10)
    assert sorted((a.kind, a.ip) for a in actions) == [
        ("boot", "10.240.0.24"), ("start", "10.240.0.22"), ("stop", "10.240.0.20"),
        ("terminate", "10.240.0.21"), ("terminate", "10.240.0.23")]
    assert "still shutting down" in waiting["i-5"], "a relaunch at the same IP waits for the old disk to go"


def test_no_more_nodes_than_the_machine_holds() -> None:
    have = {"10.240.0.20": _node("10.240.0.20", "i-1")}
    wanted = {"10.240.0.20": _instance("i-1", "10.240.0.20"), "10.240.0.21": _instance("i-2", "10.240.0.21"),
              "10.240.0.22": _instance("i-3", "10.240.0.22")}
    actions, waiting = controller.plan_nodes(wanted, have, capacity=2)
    assert [(a.kind, a.ip) for a in actions] == [("boot", "10.240.0.21")]
    assert "holds 2 nodes" in waiting["i-3"]


def test_machine_capacity_follows_available_memory(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 4000000 kB\nMemAvailable:    2097152 kB\n")
    assert controller.machine_capacity(meminfo) == 2048 // controller.MB_PER_NODE
    meminfo.write_text("MemAvailable: 999999999 kB\n")
    assert controller.machine_capacity(meminfo) == controller.MAX_NODES


def _tables(*routes: dict, main: bool = True) -> list[dict]:
    return [{"RouteTableId": "rtb-1", "VpcId": "vpc-1",
             "Associations": [{"Main": True}] if main else [{"SubnetId": "subnet-1"}],
             "Routes": [{"DestinationCidrBlock": "10.240.0.0/16", "GatewayId": "local"}, *routes]}]


def test_a_route_to_a_node_goes_on_every_other_node() -> None:
    instances = [_instance("i-1", "10.240.0.20"), _instance("i-2", "10.240.0.21"), _instance("i-3", "10.240.0.22")]
    tables = _tables({"DestinationCidrBlock": "10.200.0.0/24", "InstanceId": "i-1"},
                     {"DestinationCidrBlock": "10.200.1.0/24", "NetworkInterfaceId": "eni-2"},
                     {"DestinationCidrBlock": "0.0.0.0/0", "GatewayId": "igw-1"}, main=False)
    plan = routes.plan(tables, instances, ["10.240.0.20", "10.240.0.21", "10.240.0.22"], SUBNET)
    via_1, via_2 = routes.Route("10.200.0.0/24", "10.240.0.20"), routes.Route("10.200.1.0/24", "10.240.0.21")
    assert plan.routes == {"10.240.0.20": {via_2}, "10.240.0.21": {via_1}, "10.240.0.22": {via_1, via_2}}
    assert plan.left_out == {}


def test_a_route_to_an_instance_with_source_dest_check_on_is_left_out_with_why() -> None:
    instances = [_instance("i-1", "10.240.0.20", check=True), _instance("i-2", "10.240.0.21")]
    plan = routes.plan(_tables({"DestinationCidrBlock": "10.200.0.0/24", "InstanceId": "i-1"}),
                       instances, ["10.240.0.20", "10.240.0.21"], SUBNET)
    assert plan.routes == {"10.240.0.20": set(), "10.240.0.21": set()}
    (reason,) = plan.left_out.values()
    assert "i-1 (10.240.0.20) has its source/destination check on" in reason and "--no-source-dest-check" in reason


def test_routes_only_for_nodes_in_subnets_the_table_applies_to() -> None:
    instances = [_instance("i-1", "10.240.0.20"), _instance("i-2", "10.240.0.21", subnet="subnet-2")]
    tables = _tables({"DestinationCidrBlock": "10.200.0.0/24", "InstanceId": "i-1"}, main=False)
    plan = routes.plan(tables, instances, ["10.240.0.20", "10.240.0.21"], SUBNET)
    assert plan.routes == {"10.240.0.20": set(), "10.240.0.21": set()}


def test_applying_a_plan_adds_and_removes_only_the_difference() -> None:
    namespaces = {"10.240.0.20": {("10.200.5.0/24", "10.240.0.29"), ("10.200.1.0/24", "10.240.0.21")}}
    calls = []

    def add(ns, destination, via):  # stands in for `ip route replace` in a namespace
        calls.append(("add", ns, destination, via))

    def delete(ns, destination, via):  # stands in for `ip route del` in a namespace
        calls.append(("del", ns, destination, via))

    plan = routes.RoutePlan(routes={"10.240.0.20": {routes.Route("10.200.1.0/24", "10.240.0.21"),
                                                   routes.Route("10.200.2.0/24", "10.240.0.22")}})
    changes = routes.apply(plan, {"10.240.0.20": "gu-a"}, current=lambda ns: namespaces["10.240.0.20"],
                           add=add, delete=delete)
    assert calls == [("del", "gu-a", "10.200.5.0/24", "10.240.0.29"), ("add", "gu-a", "10.200.2.0/24", "10.240.0.22")]
    assert len(changes.added) == 1 and len(changes.removed) == 1


def test_node_records_round_trip_through_the_controller_file(tmp_path: Path) -> None:
    node = _node("10.240.0.20", "i-1")
    node.pid, node.seen_at, node.ready_at = 42, 1.0, 2.5
    controller.nodes_path(tmp_path).write_text(json.dumps({"10.240.0.20": node.to_dict()}))
    assert controller.read_nodes(tmp_path) == {"10.240.0.20": node}
    assert node.hostname == "ip-10-240-0-20"


def test_the_sandboxs_moto_frees_a_terminated_instances_ip_for_a_relaunch(in_process_aws,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto.ec2.models.instances import Instance

    from sandbox.moto_console import _release_ips_on_terminate

    monkeypatch.setattr(Instance, "terminate", Instance.terminate)
    _release_ips_on_terminate()
    ec2 = boto3.client("ec2", region_name="us-east-2")
    vpc = ec2.create_vpc(CidrBlock="10.240.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.240.0.0/24")["Subnet"]["SubnetId"]
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def launch() -> str:
        interface = {"DeviceIndex": 0, "SubnetId": subnet, "PrivateIpAddress": "10.240.0.50"}
        return ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1,
                                 NetworkInterfaces=[interface])["Instances"][0]["InstanceId"]

    first = launch()
    with pytest.raises(Exception):
        launch()
    ec2.terminate_instances(InstanceIds=[first])
    assert launch() != first


def test_every_running_node_carries_the_hosts_load_balancer_block(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from sandbox import hostsfile
    from sandbox.state import write_record

    host = tmp_path / "host-hosts"
    host.write_text("127.0.0.1 localhost\n")
    monkeypatch.setattr(controller, "HOST_HOSTS", host)
    write_record(tmp_path, {"subnet": "10.240.0.0/24", "max_nodes": 4})
    running, stopped = _node("10.240.0.20", "i-1"), _node("10.240.0.21", "i-2", state="stopped")
    for node in (running, stopped):
        node.root = str(tmp_path / node.name)
        (tmp_path / node.name / "etc").mkdir(parents=True)
        (tmp_path / node.name / "etc/hosts").write_text(f"{node.private_ip} {node.name}\n")
    agent = controller.Controller(tmp_path, ec2_clients={})
    agent.nodes = {running.private_ip: running, stopped.private_ip: stopped}
    hostsfile.write_block(host, {"api.elb.amazonaws.com": "10.240.0.250"})
    agent._hosts_blocks()
    node_hosts = tmp_path / running.name / "etc/hosts"
    assert hostsfile.read_block(node_hosts.read_text()) == {"api.elb.amazonaws.com": "10.240.0.250"}
    assert node_hosts.read_text().startswith("10.240.0.20 ip-10-240-0-20\n")
    assert not hostsfile.has_block(tmp_path / stopped.name / "etc/hosts")
    hostsfile.remove_from(host)
    agent._hosts_blocks()
    assert node_hosts.read_text() == "10.240.0.20 ip-10-240-0-20\n"
