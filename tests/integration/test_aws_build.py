"""build-cluster and teardown-cluster against a real moto server, checked independently with boto3."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterName

from flows.build_cluster import build_cluster
from flows.teardown_cluster import teardown_cluster
from groundup.aws.core import make_context
from groundup.plan import plan, plan_aws, render_plan
from groundup.spec import load_spec, parse_spec
from tests.integration.awsprobe import Throttler, clients, owned, recording

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_harness")]

ROOT = Path(__file__).resolve().parents[2]
SEED = load_spec(ROOT / "clusters/seed.yaml")
INFRA = ["network", "compute"]


def test_build_creates_exactly_the_seed_topology(aws):
    build_cluster(spec=SEED, phases=INFRA)
    ec2, elbv2 = clients()
    tag = [{"Name": "tag:groundup/cluster", "Values": [SEED.name]}]

    (vpc,) = ec2.describe_vpcs(Filters=tag)["Vpcs"]
    assert vpc["CidrBlock"] == "172.31.0.0/16"
    assert ec2.describe_vpc_attribute(VpcId=vpc["VpcId"], Attribute="enableDnsSupport")["EnableDnsSupport"]["Value"]
    assert ec2.describe_vpc_attribute(VpcId=vpc["VpcId"], Attribute="enableDnsHostnames")["EnableDnsHostnames"]["Value"]
    (dhcp,) = ec2.describe_dhcp_options(Filters=tag)["DhcpOptions"]
    assert vpc["DhcpOptionsId"] == dhcp["DhcpOptionsId"]
    assert {c["Key"]: [v["Value"] for v in c["Values"]] for c in dhcp["DhcpConfigurations"]} == {
        "domain-name": ["us-east-2.compute.internal"], "domain-name-servers": ["AmazonProvidedDNS"]}
    (subnet,) = ec2.describe_subnets(Filters=tag)["Subnets"]
    assert subnet["CidrBlock"] == "172.31.0.0/24" and subnet["VpcId"] == vpc["VpcId"]
    (igw,) = ec2.describe_internet_gateways(Filters=tag)["InternetGateways"]
    assert [a["VpcId"] for a in igw["Attachments"]] == [vpc["VpcId"]]
    (table,) = ec2.describe_route_tables(Filters=tag)["RouteTables"]
    assert subnet["SubnetId"] in [a.get("SubnetId") for a in table["Associations"]]
    assert {r["DestinationCidrBlock"]: r.get("GatewayId") for r in table["Routes"]}["0.0.0.0/0"] == igw["InternetGatewayId"]

    (group,) = ec2.describe_security_groups(Filters=tag)["SecurityGroups"]
    assert group["GroupName"] == SEED.name
    rules = {(p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r["CidrIp"])
             for p in group["IpPermissions"] for r in p["IpRanges"]}
    assert rules == {
        ("tcp", 2379, 2380, "172.31.0.0/24"),
        ("tcp", 30000, 32767, "172.31.0.0/24"),
        ("tcp", 6443, 6443, "0.0.0.0/0"),
        ("tcp", 22, 22, "0.0.0.0/0"),
        ("icmp", -1, -1, "0.0.0.0/0"),
    }

    (lb,) = elbv2.describe_load_balancers(Names=[SEED.name])["LoadBalancers"]
    assert lb["Type"] == "network" and lb["Scheme"] == "internet-facing"
    (listener,) = elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    (tg,) = elbv2.describe_target_groups(Names=[SEED.name])["TargetGroups"]
    assert (listener["Protocol"], listener["Port"]) == ("TCP", 6443)
    assert listener["DefaultActions"][0]["TargetGroupArn"] == tg["TargetGroupArn"]
    assert (tg["Protocol"], tg["Port"], tg["TargetType"]) == ("TCP", 6443, "ip")
    targets = elbv2.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]
    assert sorted(t["Target"]["Id"] for t in targets) == ["172.31.0.10", "172.31.0.11", "172.31.0.12"]

    live = [{"Name": "instance-state-name", "Values": ["running"]}]
    instances = [i for r in ec2.describe_instances(Filters=tag + live)["Reservations"] for i in r["Instances"]]
    by_name = {t["Value"]: i for i in instances for t in i["Tags"] if t["Key"] == "Name"}
    assert len(instances) == 6
    for node in SEED.nodes:
        instance = by_name[node.name]
        assert instance["PrivateIpAddress"] == str(node.private_ip)
        assert instance["InstanceType"] == "t2.micro"
        assert instance["KeyName"] == SEED.name
        assert instance["SubnetId"] == subnet["SubnetId"]
        assert [g["GroupId"] for g in instance["NetworkInterfaces"][0]["Groups"]] == [group["GroupId"]]
        assert instance["SourceDestCheck"] is False
        assert instance.get("PublicIpAddress")
        user_data = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
        assert base64.b64decode(user_data["UserData"]["Value"]).decode() == node.user_data
    image = ec2.describe_images(ImageIds=[instances[0]["ImageId"]])["Images"][0]
    assert image["OwnerId"] == "099720109477" and "ubuntu-noble-24.04" in image["Name"]
    assert image["Name"].endswith("20250115"), "the newest image is chosen"
    (key,) = ec2.describe_key_pairs(Filters=tag)["KeyPairs"]
    assert key["KeyName"] == SEED.name


def test_second_build_makes_no_create_call(aws, monkeypatch):
    build_cluster(spec=SEED, phases=INFRA)
    with recording(monkeypatch) as log:
        build_cluster(spec=SEED, phases=INFRA)
    assert log.mutating() == {}
    assert log.calls["DescribeInstances"] >= 1, "the instances were looked at (all at once, by the dry run)"


def test_a_rebuild_runs_one_dry_run_task_per_phase_and_returns_the_same_ids(aws):
    first = build_cluster(spec=SEED, phases=INFRA)
    state = build_cluster(spec=SEED, phases=INFRA, return_state=True)
    again = state.result()
    assert (again["network"], again["instances"]) == (first["network"], first["instances"])
    deadline = time.monotonic() + 30
    while True:  # task runs reach the API asynchronously
        names = sorted(r.name.rsplit("-", 1)[0] for r in asyncio.run(_task_runs(state.state_details.flow_run_id, "")))
        if len(names) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert names == ["check-instances", "check-network", "describe-nodes"]


def test_a_stopped_instance_makes_the_compute_steps_run_again(aws, monkeypatch):
    first = build_cluster(spec=SEED, phases=INFRA)
    ec2, _ = clients()
    ec2.stop_instances(InstanceIds=[first["instances"]["worker-1"]])
    with recording(monkeypatch) as log:
        again = build_cluster(spec=SEED, phases=INFRA)
    assert again["instances"] == first["instances"]
    assert log.mutating() == {"StartInstances": 1}, "the network's dry run found nothing; one start"
    (reservation,) = ec2.describe_instances(InstanceIds=[first["instances"]["worker-1"]])["Reservations"]
    assert reservation["Instances"][0]["State"]["Name"] == "running"


def test_plan_lists_creates_then_nothing(aws):
    changes = plan(SEED)
    created = [c.resource for c in changes if c.action == "create"]
    assert created[:2] == ["vpc", "dhcp-options"]
    assert "instance worker-2" in created and "listener 6443" in created
    assert owned(SEED.name) == {}, "plan changes nothing"
    build_cluster(spec=SEED, phases=INFRA)
    assert "nothing to do" in render_plan(plan_aws(make_context(SEED, dry_run=True)))


def test_plan_reports_a_new_worker(aws):
    build_cluster(spec=SEED, phases=INFRA)
    bigger = SEED.model_copy(update={"worker_count": 4, "worker_ips": None, "worker_pod_cidrs": None})
    bigger = parse_spec(bigger.model_dump(mode="json"))
    todo = [str(c) for c in plan(bigger) if c.action != "exists"]
    assert any(line.startswith("create   instance worker-3") for line in todo)
    assert not any("vpc" in line for line in todo)


def test_teardown_removes_everything_and_twice_is_a_noop(aws, monkeypatch):
    ec2, _ = clients()
    default_vpcs = [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]]
    build_cluster(spec=SEED, phases=INFRA)
    assert len(owned(SEED.name)["instances"]) == 6
    deleted = teardown_cluster(spec=SEED)
    assert deleted["instances"] == 6 and deleted["vpcs"] == 1
    assert owned(SEED.name) == {}
    assert [v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]] == default_vpcs, "moto's default VPC is untouched"
    with recording(monkeypatch) as log:
        assert teardown_cluster(spec=SEED) == {}
    assert log.mutating() == {}


INTERRUPTIONS = [
    ("CreateVpc", 0), ("CreateDhcpOptions", 0), ("CreateSubnet", 0), ("AttachInternetGateway", 0),
    ("CreateRoute", 0), ("AuthorizeSecurityGroupIngress", 2), ("CreateLoadBalancer", 0),
    ("CreateTargetGroup", 0), ("RegisterTargets", 0), ("CreateListener", 0), ("ImportKeyPair", 0),
    ("RunInstances", 3), ("ModifyInstanceAttribute", 1),
]


@pytest.mark.parametrize(("operation", "after"), INTERRUPTIONS, ids=[op for op, _ in INTERRUPTIONS])
def test_teardown_after_a_build_interrupted_at_each_step(aws, monkeypatch, operation, after):
    with recording(monkeypatch, fail_on=operation, fail_after=after) as log:
        with pytest.raises(Exception):
            build_cluster(spec=SEED, phases=INFRA)
    assert log.calls[operation] >= after + 1, f"the build reached {operation}"
    teardown_cluster(spec=SEED)
    assert owned(SEED.name) == {}


def test_build_survives_throttling(aws):
    throttler = Throttler(count=4)
    events = make_context(SEED).ec2.meta.events
    events.register("before-send.ec2", throttler)
    try:
        build_cluster(spec=SEED, phases=INFRA)
    finally:
        events.unregister("before-send.ec2", throttler)
    assert throttler.injected == 4
    assert len(owned(SEED.name)["instances"]) == 6


async def _task_runs(flow_run_id, name: str):
    async with get_client() as client:
        return await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=name)),
        )


def test_missing_ami_fails_fast_without_retries(aws):
    ec2, _ = clients()
    noble = ec2.describe_images(Owners=["099720109477"], Filters=[{"Name": "name", "Values": ["*noble*"]}])["Images"]
    for image in noble:
        ec2.deregister_image(ImageId=image["ImageId"])
    started = time.monotonic()
    state = build_cluster(spec=SEED, phases=INFRA, return_state=True)
    elapsed = time.monotonic() - started
    assert state.is_failed()
    with pytest.raises(Exception, match="ubuntu_release: no Canonical image"):
        state.result()
    deadline = time.monotonic() + 30
    while True:  # task runs and their states reach the API asynchronously
        runs = asyncio.run(_task_runs(state.state_details.flow_run_id, "get-ami"))
        if (runs and all(r.state is not None and r.state.is_final() for r in runs)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    (run,) = runs
    assert run.state.is_failed()
    assert run.run_count == 1, "an error no retry can cure is not retried"
    assert elapsed < 30
    assert "instances" not in owned(SEED.name)


def test_flow_retry_skips_completed_tasks(aws, monkeypatch):
    """A retried flow run (same run id) finds the completed tasks cached: only what failed runs again."""
    retrying = flow(build_cluster.fn, name="build-cluster", retries=1, task_runner=build_cluster.task_runner)
    with recording(monkeypatch, fail_on="RunInstances", fail_after=5) as log:
        retrying(spec=SEED, phases=INFRA)
    assert log.calls["CreateVpc"] == 1 and log.calls["CreateLoadBalancer"] == 1
    assert log.calls["ImportKeyPair"] == 1
    assert log.calls["RunInstances"] == 6 + 1, "five launched, one failed, then only that one again"
    assert len(owned(SEED.name)["instances"]) == 6
