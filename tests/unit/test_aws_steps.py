"""AWS steps against moto in-process: look-then-act, drift is refused, foreign resources are left alone."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from groundup.aws import compute, network, teardown
from groundup.aws.core import ClusterStateError, is_transient, make_context, retry_transient, tag_spec
from groundup.spec import parse_spec

SPEC = parse_spec({"name": "unit", "worker_count": 1, "master_count": 1})


@pytest.fixture
def ctx(in_process_aws):
    from groundup.aws import core

    core._CLIENTS.clear()
    yield make_context(SPEC)
    core._CLIENTS.clear()


def _error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "Op")


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "Throttling", "InvalidInstanceID.NotFound", "DependencyViolation"])
def test_transient_codes_are_retried(code):
    assert is_transient(_error(code))


@pytest.mark.parametrize("code", ["InvalidAMIID.NotFound", "UnauthorizedOperation", "InvalidParameterValue", "AuthFailure"])
def test_errors_that_cannot_heal_are_not_retried(code):
    assert not is_transient(_error(code))


def test_retry_transient_retries_then_succeeds_and_gives_up_on_fatal():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise _error("InvalidInstanceID.NotFound")
        return "ok"

    assert retry_transient(flaky, base_delay=0.001) == "ok" and len(calls) == 3
    with pytest.raises(ClientError):
        retry_transient(lambda: (_ for _ in ()).throw(_error("InvalidAMIID.NotFound")), base_delay=0.001)


def test_ensure_vpc_is_idempotent(ctx):
    first = network.ensure_vpc(ctx)
    ctx.changes.clear()
    assert network.ensure_vpc(ctx) == first
    assert [c.action for c in ctx.changes] == ["exists"]


def test_vpc_with_another_cidr_is_refused_not_replaced(ctx):
    ec2 = boto3.client("ec2", region_name=SPEC.region)
    ec2.create_vpc(CidrBlock="10.9.0.0/16", TagSpecifications=[{"ResourceType": "vpc", "Tags": [
        {"Key": "groundup/cluster", "Value": "unit"}, {"Key": "groundup/role", "Value": "vpc"}]}])
    with pytest.raises(ClusterStateError, match="vpc_cidr"):
        network.ensure_vpc(ctx)


def test_a_foreign_load_balancer_with_our_name_is_refused(ctx):
    vpc = network.ensure_vpc(ctx)
    subnet = network.ensure_subnet(ctx, vpc)
    boto3.client("elbv2", region_name=SPEC.region).create_load_balancer(Name="unit", Subnets=[subnet], Type="network")
    with pytest.raises(ClusterStateError, match="does not belong to this cluster"):
        network.ensure_load_balancer(ctx, subnet)


def test_dry_run_creates_nothing(ctx):
    dry = make_context(SPEC, dry_run=True)
    assert network.ensure_vpc(dry).startswith("<new")
    assert boto3.client("ec2", region_name=SPEC.region).describe_vpcs(
        Filters=[{"Name": "tag:groundup/cluster", "Values": ["unit"]}])["Vpcs"] == []


def test_teardown_leaves_untagged_resources(ctx):
    ec2 = boto3.client("ec2", region_name=SPEC.region)
    stranger = ec2.create_vpc(CidrBlock=str(SPEC.vpc_cidr))["Vpc"]["VpcId"]
    network.ensure_subnet(ctx, network.ensure_vpc(ctx))
    teardown.teardown(ctx)
    assert teardown.discover(ctx).count() == 0
    assert stranger in [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]]


def test_missing_release_fails_naming_the_field(ctx):
    """moto's built-in images hold no noble under Canonical's owner: the lookup fails, it does not guess."""
    with pytest.raises(compute.AMINotFound, match="ubuntu_release"):
        compute.find_ami(ctx)


def test_more_instances_than_one_page_are_all_found_and_torn_down(ctx):
    """EC2 pages DescribeInstances (moto: 100 a page): 3 + 110 nodes must all be seen."""
    spec = parse_spec({"name": "unit", "master_count": 3, "worker_count": 110, "subnet_cidr": "172.31.0.0/24"})
    big = make_context(spec)
    ec2 = big.ec2
    subnet = network.ensure_subnet(big, network.ensure_vpc(big))
    image = ec2.describe_images()["Images"][0]["ImageId"]
    for node in spec.nodes:
        ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=subnet, PrivateIpAddress=str(node.private_ip),
                          TagSpecifications=tag_spec(spec, "instance", node.short_name, node.name))
    assert len(compute.describe_nodes(big)) == 113
    assert compute.find_instance(big, spec.workers[-1]) is not None
    assert len(teardown.discover(big).instances) == 113
    teardown.teardown(big)
    assert teardown.discover(big).count() == 0
