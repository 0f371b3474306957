"""The cluster spec: the seed's values by default, and one test per validation rule naming its field."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from groundup.spec import ClusterSpec, SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]


def test_seed_yaml_reproduces_seed_002():
    spec = load_spec(ROOT / "clusters/seed.yaml")
    assert spec.name == "k8s-cluster-from-ground-up"
    assert spec.region == "us-east-2"
    assert spec.vpc_cidr == IPv4Network("172.31.0.0/16")
    assert spec.subnet_cidr == IPv4Network("172.31.0.0/24")
    assert [str(n.private_ip) for n in spec.masters] == ["172.31.0.10", "172.31.0.11", "172.31.0.12"]
    assert [str(n.private_ip) for n in spec.workers] == ["172.31.0.20", "172.31.0.21", "172.31.0.22"]
    assert [n.user_data for n in spec.nodes] == [
        "name=master-0", "name=master-1", "name=master-2",
        "name=worker-0|pod-cidr=172.20.0.0/24", "name=worker-1|pod-cidr=172.20.1.0/24",
        "name=worker-2|pod-cidr=172.20.2.0/24",
    ]
    assert [n.name for n in spec.workers] == [f"k8s-cluster-from-ground-up-worker-{i}" for i in range(3)]
    assert [n.hostname for n in spec.masters] == ["ip-172-31-0-10", "ip-172-31-0-11", "ip-172-31-0-12"]
    assert spec.internal_domain == "us-east-2.compute.internal"
    assert spec.kubernetes_service_ip == IPv4Address("10.32.0.1")
    assert spec.pki.subject.organizational_unit == "DAREY.IO DEVOPS"
    assert spec.pki.validity_hours == 8760


def test_defaults_equal_the_seed():
    seed = load_spec(ROOT / "clusters/seed.yaml")
    explicit = {"master_ips", "worker_ips", "worker_pod_cidrs"}
    assert ClusterSpec().nodes == seed.nodes
    assert ClusterSpec().model_dump(exclude=explicit) == seed.model_dump(exclude=explicit)


def test_sandbox_yaml_reaches_nodes_by_private_ip():
    spec = load_spec(ROOT / "clusters/sandbox.yaml")
    assert spec.ssh.access.value == "private_ip"
    assert not spec.associate_public_ip


def test_defaults_scale_to_thirty_workers():
    spec = parse_spec({"worker_count": 30})
    assert str(spec.workers[-1].private_ip) == "172.31.0.49"
    assert str(spec.workers[-1].pod_cidr) == "172.20.29.0/24"


def test_us_east_1_uses_ec2_internal():
    assert parse_spec({"region": "us-east-1"}).internal_domain == "ec2.internal"


def test_ubuntu_version_is_accepted_as_codename():
    assert parse_spec({"ubuntu_release": "22.04"}).ubuntu_release == "jammy"


BAD_SPECS = [
    ({"vpc_cidr": "172.31.0.0/33"}, "vpc_cidr"),
    ({"vpc_cidr": "10.0.0.0/8"}, "vpc_cidr"),
    ({"subnet_cidr": "10.1.0.0/24"}, "subnet_cidr"),
    ({"subnet_cidr": "172.31.0.7/24"}, "subnet_cidr"),
    ({"service_cidr": "172.31.200.0/24"}, "service_cidr"),
    ({"pod_cidr": "172.31.128.0/17"}, "pod_cidr"),
    ({"service_cidr": "172.20.5.0/24"}, "service_cidr"),
    ({"master_ips": ["172.31.0.10", "172.31.0.11", "172.31.1.12"]}, "master_ips"),
    ({"master_ips": ["172.31.0.10", "172.31.0.10", "172.31.0.12"]}, "master_ips"),
    ({"master_ips": ["172.31.0.10", "172.31.0.11"]}, "master_ips"),
    ({"master_ips": ["172.31.0.1", "172.31.0.11", "172.31.0.12"]}, "master_ips"),
    ({"worker_ips": ["172.31.0.20", "172.31.0.21", "172.31.0.10"]}, "worker_ips"),
    ({"worker_ips": ["172.31.0.20", "172.31.0.21", "172.31.0.300"]}, "worker_ips"),
    ({"worker_pod_cidrs": ["172.20.0.0/24", "172.20.1.0/24", "172.31.5.0/24"]}, "worker_pod_cidrs"),
    ({"worker_pod_cidrs": ["172.20.0.0/24", "172.20.1.0/24", "172.20.1.128/25"]}, "worker_pod_cidrs"),
    ({"worker_pod_cidrs": ["172.20.0.0/24", "172.20.1.0/24"]}, "worker_pod_cidrs"),
    ({"worker_count": 300}, "worker_count"),
    ({"subnet_cidr": "172.31.0.0/28", "worker_count": 3}, "worker_ips"),
    ({"master_count": 2}, "master_count"),
    ({"master_count": 0}, "master_count"),
    ({"master_count": 4}, "master_count"),
    ({"name": "bad_name"}, "name"),
    ({"name": "-leading"}, "name"),
    ({"name": "x" * 33}, "name"),
    ({"name": "internal-api"}, "name"),
    ({"region": "mars-1"}, "region"),
    ({"instance_type": "huge"}, "instance_type"),
    ({"ubuntu_release": "xenial"}, "ubuntu_release"),
    ({"kubernetes_version": "latest"}, "kubernetes_version"),
    ({"tags": {"aws:owner": "x"}}, "tags"),
    ({"tags": {"Name": "x"}}, "tags"),
    ({"ssh": {"access": "bastion"}}, "ssh.access: 'bastion' is not implemented"),
    ({"ssh": {"access": "telepathy"}}, "ssh.access"),
    ({"pki": {"key_algorithm": "dsa-1024"}}, "pki.key_algorithm"),
    ({"pki": {"validity_hours": 0}}, "pki.validity_hours"),
    ({"surprise": 1}, "surprise"),
]


@pytest.mark.parametrize(("override", "field"), BAD_SPECS, ids=[f"{f}:{list(o.values())[0]!s:.30}" for o, f in BAD_SPECS])
def test_bad_spec_names_the_field(override, field):
    with pytest.raises(SpecError) as info:
        parse_spec(override)
    assert field in str(info.value)


def test_all_errors_are_reported_at_once():
    with pytest.raises(SpecError) as info:
        parse_spec({"master_count": 2, "region": "nowhere"})
    assert "master_count" in str(info.value) and "region" in str(info.value)


def test_load_spec_rejects_non_mapping(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(path)


def test_load_spec_rejects_broken_yaml(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)
