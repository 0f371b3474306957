"""The sandbox's moto (sandbox.moto_console, a real moto server on loopback) forgets an instance some
time after it terminated, as EC2 does after about an hour: here after FORGET seconds."""

from __future__ import annotations

import time
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from groundup.spec import CANONICAL_OWNER_ID
from sandbox.moto import MotoServer, start_moto_server
from sandbox.moto_console import FORGET_TERMINATED_AFTER, parse_args

FORGET = 2.0
REGION = "us-east-2"
TAG = "groundup/cluster"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    state = tmp_path_factory.mktemp("sandbox-moto")
    running = start_moto_server(state / "moto", log=state / "moto.log", console_dir=state / "console",
                                forget_terminated_after=FORGET)
    yield running
    running.stop()


@pytest.fixture
def ec2(server: MotoServer):
    server.reset()
    return boto3.client("ec2", endpoint_url=server.endpoint, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _subnet(ec2) -> str:
    vpc = ec2.create_vpc(CidrBlock="10.240.0.0/16")["Vpc"]["VpcId"]
    return ec2.create_subnet(VpcId=vpc, CidrBlock="10.240.0.0/24")["Subnet"]["SubnetId"]


def _launch(ec2, subnet: str, ip: str, cluster: str) -> str:
    ami = ec2.describe_images(Owners=[CANONICAL_OWNER_ID])["Images"][0]["ImageId"]
    tags = [{"Key": TAG, "Value": cluster}, {"Key": "Name", "Value": ip}]
    return ec2.run_instances(
        ImageId=ami, MinCount=1, MaxCount=1,
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet, "PrivateIpAddress": ip}],
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}, {"ResourceType": "volume", "Tags": tags}],
    )["Instances"][0]["InstanceId"]


def _states(ec2, filters: list[dict] | None = None) -> dict[str, str]:
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters or [])
    return {i["InstanceId"]: i["State"]["Name"] for page in pages for r in page["Reservations"] for i in r["Instances"]}


def _not_found(ec2, instance_id: str) -> str:
    with pytest.raises(ClientError) as raised:
        ec2.describe_instances(InstanceIds=[instance_id])
    return raised.value.response["Error"]["Code"]


def test_a_terminated_instance_shows_for_a_while_then_is_forgotten_and_running_ones_stay(ec2) -> None:
    subnet = _subnet(ec2)
    gone_a, gone_b, kept = (_launch(ec2, subnet, ip, "c1") for ip in ("10.240.0.50", "10.240.0.51", "10.240.0.52"))
    volumes = {v["VolumeId"] for v in ec2.describe_volumes(Filters=[{"Name": f"tag:{TAG}", "Values": ["c1"]}])["Volumes"]}
    assert len(volumes) == 3

    ec2.terminate_instances(InstanceIds=[gone_a, gone_b])
    terminated_at = time.monotonic()
    assert _states(ec2) == {gone_a: "terminated", gone_b: "terminated", kept: "running"}
    assert _states(ec2, [{"Name": f"tag:{TAG}", "Values": ["c1"]}]) == _states(ec2)
    assert ec2.describe_instances(InstanceIds=[gone_a])["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
    left = {t["ResourceId"] for t in ec2.describe_tags(Filters=[{"Name": "resource-type", "Values": ["volume"]}])["Tags"]}
    assert len(left) == 1, "the deleted root volumes' tags went with them"
    assert time.monotonic() - terminated_at < FORGET, "too slow to see the instances before they are forgotten"

    time.sleep(FORGET + 0.5)
    assert _states(ec2) == {kept: "running"}
    assert _states(ec2, [{"Name": f"tag:{TAG}", "Values": ["c1"]}]) == {kept: "running"}
    assert _not_found(ec2, gone_a) == "InvalidInstanceID.NotFound"
    with pytest.raises(ClientError) as raised:
        ec2.describe_instances(InstanceIds=[kept, gone_b])
    assert raised.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"
    status = ec2.describe_instance_status(IncludeAllInstances=True)["InstanceStatuses"]
    assert [s["InstanceId"] for s in status] == [kept]
    tagged = {t["ResourceId"] for t in ec2.describe_tags()["Tags"]}
    assert gone_a not in tagged and gone_b not in tagged and kept in tagged
    attached = {a["InstanceId"] for v in ec2.describe_volumes()["Volumes"] for a in v["Attachments"]}
    assert attached == {kept}
    interfaces = ec2.describe_network_interfaces()["NetworkInterfaces"]
    assert {n.get("Attachment", {}).get("InstanceId") for n in interfaces} == {kept}
    with pytest.raises(ClientError) as raised:
        ec2.get_console_output(InstanceId=gone_b)
    assert raised.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"

    again = _launch(ec2, subnet, "10.240.0.50", "c1")
    assert _states(ec2) == {kept: "running", again: "running"}
    reply = ec2.describe_instances(InstanceIds=[again])["Reservations"][0]["Instances"][0]
    assert reply["PrivateIpAddress"] == "10.240.0.50"


def test_a_relaunch_at_a_terminated_instances_ip_works_before_it_is_forgotten(ec2) -> None:
    subnet = _subnet(ec2)
    first = _launch(ec2, subnet, "10.240.0.60", "c2")
    ec2.terminate_instances(InstanceIds=[first])
    second = _launch(ec2, subnet, "10.240.0.60", "c2")
    assert _states(ec2) == {first: "terminated", second: "running"}
    time.sleep(FORGET + 0.5)
    assert _states(ec2) == {second: "running"}


def test_an_interface_launched_with_the_instance_goes_with_it_unless_kept_and_a_kept_one_is_freed(ec2) -> None:
    subnet = _subnet(ec2)
    ami = ec2.describe_images(Owners=[CANONICAL_OWNER_ID])["Images"][0]["ImageId"]

    def launch(ip: str, **delete) -> tuple[str, str]:
        interface = {"DeviceIndex": 0, "SubnetId": subnet, "PrivateIpAddress": ip, **delete}
        instance = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, NetworkInterfaces=[interface])["Instances"][0]
        return instance["InstanceId"], instance["NetworkInterfaces"][0]["NetworkInterfaceId"]

    dropped, dropped_eni = launch("10.240.0.90")
    kept, kept_eni = launch("10.240.0.91", DeleteOnTermination=False)
    ec2.terminate_instances(InstanceIds=[dropped, kept])
    interfaces = {n["NetworkInterfaceId"]: n for n in ec2.describe_network_interfaces()["NetworkInterfaces"]}
    assert dropped_eni not in interfaces and kept_eni in interfaces
    time.sleep(FORGET + 0.5)
    interfaces = {n["NetworkInterfaceId"]: n for n in ec2.describe_network_interfaces()["NetworkInterfaces"]}
    assert list(interfaces) == [kept_eni]
    assert interfaces[kept_eni]["Status"] == "available" and "Attachment" not in interfaces[kept_eni]
    assert _states(ec2) == {}


def test_a_terminated_instance_is_forgotten_a_while_after_its_first_termination_not_its_last(ec2) -> None:
    subnet = _subnet(ec2)
    instance = _launch(ec2, subnet, "10.240.0.70", "c3")
    ec2.terminate_instances(InstanceIds=[instance])
    time.sleep(FORGET * 0.6)
    ec2.terminate_instances(InstanceIds=[instance])
    time.sleep(FORGET * 0.6)
    assert _not_found(ec2, instance) == "InvalidInstanceID.NotFound"


def test_paging_goes_on_after_a_reservation_forgotten_between_two_pages(ec2) -> None:
    subnet = _subnet(ec2)
    first, middle, last = (_launch(ec2, subnet, ip, "c4") for ip in ("10.240.0.80", "10.240.0.81", "10.240.0.82"))
    ec2.terminate_instances(InstanceIds=[middle])
    flt = [{"Name": f"tag:{TAG}", "Values": ["c4"]}]
    page = ec2.describe_instances(Filters=flt, MaxResults=2)
    assert [r["Instances"][0]["InstanceId"] for r in page["Reservations"]] == [first, middle]
    time.sleep(FORGET + 0.5)
    rest = ec2.describe_instances(Filters=flt, MaxResults=2, NextToken=page["NextToken"])
    assert [r["Instances"][0]["InstanceId"] for r in rest["Reservations"]] == [last]
    assert "NextToken" not in rest or not rest["NextToken"]
    assert _not_found(ec2, middle) == "InvalidInstanceID.NotFound", "the token's reservation was forgotten"


def test_paging_goes_on_after_a_reservation_that_left_the_filter_between_two_pages(ec2) -> None:
    subnet = _subnet(ec2)
    first, middle, last = (_launch(ec2, subnet, ip, "c5") for ip in ("10.240.0.85", "10.240.0.86", "10.240.0.87"))
    flt = [{"Name": f"tag:{TAG}", "Values": ["c5"]}, {"Name": "instance-state-name", "Values": ["running"]}]
    page = ec2.describe_instances(Filters=flt, MaxResults=2)
    assert [r["Instances"][0]["InstanceId"] for r in page["Reservations"]] == [first, middle]
    ec2.stop_instances(InstanceIds=[middle])
    rest = ec2.describe_instances(Filters=flt, MaxResults=2, NextToken=page["NextToken"])
    assert [r["Instances"][0]["InstanceId"] for r in rest["Reservations"]] == [last]


def test_the_wrapper_forgets_after_an_hour_unless_told_and_passes_moto_its_own_options() -> None:
    options, rest = parse_args(["--console-dir", "/tmp/c", "-H", "127.0.0.1", "-p", "5055"])
    assert options.forget_terminated_after == FORGET_TERMINATED_AFTER == 3600
    assert options.console_dir == Path("/tmp/c") and rest == ["-H", "127.0.0.1", "-p", "5055"]
    options, _ = parse_args(["--forget-terminated-after", "5", "--console-dir", "/tmp/c"])
    assert options.forget_terminated_after == 5
