"""The sandbox's moto reads a resource's own tags by its id: the same answer as moto's scan of every tag,
and a tag-filtered DescribeInstances that no longer grows with the square of the instances held."""

from __future__ import annotations

import boto3
import pytest
from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models.core import TaggedEC2Resource

from sandbox.moto_console import _tags_by_id, tags_of

REGION = "us-east-2"


@pytest.fixture
def ec2(in_process_aws):
    return boto3.client("ec2", region_name=REGION)


def _held_cluster(ec2, instances: int) -> tuple[list[str], str]:
    vpc = ec2.create_vpc(CidrBlock="10.240.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.240.0.0/20")["Subnet"]["SubnetId"]
    ec2.create_tags(Resources=[vpc, subnet], Tags=[{"Key": "groundup/cluster", "Value": "old"}])
    ids = []
    for batch in range(instances // 10):
        tags = [{"Key": "groundup/cluster", "Value": f"old-{batch}"}, {"Key": "Name", "Value": f"node-{batch}"}]
        ids += [i["InstanceId"] for i in ec2.run_instances(
            ImageId="ami-12c6146b", MinCount=10, MaxCount=10, SubnetId=subnet,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags},
                               {"ResourceType": "volume", "Tags": tags}])["Instances"]]
    return ids, vpc


def test_tags_by_id_answer_as_the_scan_of_all_tags(ec2):
    ids, vpc = _held_cluster(ec2, 20)
    ec2.create_tags(Resources=[ids[0]], Tags=[{"Key": "extra", "Value": "1"}])
    backend = get_backend("ec2")[DEFAULT_ACCOUNT_ID][REGION]
    volumes = [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]]
    for resource in [*ids, vpc, *volumes, "i-0000000000000000a", ""]:
        scanned = backend.describe_tags(filters={"resource-id": [resource]}) if resource else []
        assert tags_of(backend, resource) == scanned, resource
    assert [t["key"] for t in tags_of(backend, ids[0])] == ["groundup/cluster", "Name", "extra"]


def _describe(ec2) -> None:
    filters = [{"Name": "tag:groundup/cluster", "Values": ["live"]},
               {"Name": "instance-state-name", "Values": ["pending", "running"]}]
    assert ec2.describe_instances(Filters=filters)["Reservations"] == []


def test_a_tag_filtered_describe_with_300_held_instances_does_not_scan_every_tag_per_instance(ec2, monkeypatch):
    from moto.ec2.models.tags import TagBackend

    ids, _ = _held_cluster(ec2, 300)
    ec2.terminate_instances(InstanceIds=ids)
    scans = []
    describe_tags = TagBackend.describe_tags

    def counted(self, filters=None):
        scans.append(filters)
        return describe_tags(self, filters)

    monkeypatch.setattr(TagBackend, "describe_tags", counted)
    _describe(ec2)
    assert len(scans) >= 300
    monkeypatch.setattr(TaggedEC2Resource, "get_tags", TaggedEC2Resource.get_tags)
    _tags_by_id()
    scans.clear()
    _describe(ec2)
    assert scans == []
