"""Sandbox pieces that need neither root nor a running sandbox."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from groundup.hostkeys import parse_console_host_keys
from sandbox import lifecycle, netns, nodes, rootfs
from sandbox.cloudinit import CloudInit
from sandbox.state import write_record


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


def test_interface_names_fit_the_kernel_limit() -> None:
    assert netns.veth_name("master-0") == "vgu-m0"
    assert netns.veth_name("worker-199") == "vgu-w199"
    assert netns.namespace_name("worker-2") == "gu-worker-2"


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
    assert nodes.NSPAWN_ENV == {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}


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
    """The EC2 calls the cloud-init agent makes, answered from memory."""

    def __init__(self, instances: list[dict], public_key: str) -> None:
        self.instances = instances
        self.public_key = public_key

    def get_paginator(self, name: str):
        fake = self

        class Paginator:
            def paginate(self, **kwargs):
                return [{"Reservations": [{"Instances": fake.instances}]}]

        return Paginator()

    def describe_key_pairs(self, KeyNames, IncludePublicKey):
        assert IncludePublicKey
        return {"KeyPairs": [{"KeyName": KeyNames[0], "PublicKey": self.public_key}]}

    def describe_instance_attribute(self, InstanceId, Attribute):
        return {"UserData": {"Value": base64.b64encode(b"name=worker-0|pod-cidr=10.200.0.0/24").decode()}}


def test_cloud_init_installs_the_key_pair_and_prints_host_keys_for_claimed_nodes(tmp_path: Path) -> None:
    root = tmp_path / "nodes/worker-0/merged"
    (root / "root").mkdir(parents=True)
    host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGrcUbw6DyjPN7lmQWFsI8sXylbXR5JtyQzc157lbAAL"
    write_record(tmp_path, {"nodes": [{"short_name": "worker-0", "private_ip": "10.240.0.20",
                                       "hostname": "ip-10-240-0-20", "root": str(root), "host_key": host_key}]})
    launched = datetime(2025, 1, 15, tzinfo=timezone.utc)
    instances = [
        {"InstanceId": "i-1", "PrivateIpAddress": "10.240.0.20", "KeyName": "cluster", "LaunchTime": launched},
        {"InstanceId": "i-2", "PrivateIpAddress": "172.31.0.20", "KeyName": "cluster", "LaunchTime": launched},
    ]
    ec2 = FakeEC2(instances, "ssh-rsa AAAAB3NzaC1yc2E cluster")
    agent = CloudInit(tmp_path, ec2=ec2)
    assert agent.sync() == {"10.240.0.20": "i-1"}
    authorized = root / "root/.ssh/authorized_keys"
    assert authorized.read_text() == "ssh-rsa AAAAB3NzaC1yc2E cluster\n"
    assert authorized.stat().st_mode & 0o777 == 0o600
    assert parse_console_host_keys((tmp_path / "console/i-1").read_text()) == [host_key]
    assert (root / "var/lib/cloud/instance/user-data.txt").read_text() == "name=worker-0|pod-cidr=10.200.0.0/24"
    assert json.loads((tmp_path / "instances.json").read_text()) == {"10.240.0.20": "i-1"}

    ec2.instances = []
    assert agent.sync() == {}
    assert not authorized.exists(), "a node no instance claims must not accept the cluster key"
