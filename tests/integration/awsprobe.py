"""Independent look at a moto server with plain boto3: what exists, and which API calls were made."""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager

import boto3
import botocore.client
from botocore.awsrequest import AWSResponse

TAG = "groundup/cluster"


def clients(region: str = "us-east-2"):
    session = boto3.session.Session(region_name=region)
    return session.client("ec2"), session.client("elbv2")


def owned(cluster: str, region: str = "us-east-2") -> dict[str, list[str]]:
    """Every resource carrying the cluster's tag, by kind (terminated instances excluded)."""
    ec2, elbv2 = clients(region)
    flt = [{"Name": f"tag:{TAG}", "Values": [cluster]}]
    live = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped", "shutting-down"]}]
    found = {
        "instances": [i["InstanceId"] for page in ec2.get_paginator("describe_instances").paginate(Filters=flt + live)
                      for r in page["Reservations"] for i in r["Instances"]],
        "vpcs": [v["VpcId"] for v in ec2.describe_vpcs(Filters=flt)["Vpcs"]],
        "subnets": [s["SubnetId"] for s in ec2.describe_subnets(Filters=flt)["Subnets"]],
        "security_groups": [g["GroupId"] for g in ec2.describe_security_groups(Filters=flt)["SecurityGroups"]],
        "route_tables": [t["RouteTableId"] for t in ec2.describe_route_tables(Filters=flt)["RouteTables"]],
        "internet_gateways": [g["InternetGatewayId"] for g in ec2.describe_internet_gateways(Filters=flt)["InternetGateways"]],
        "dhcp_options": [d["DhcpOptionsId"] for d in ec2.describe_dhcp_options(Filters=flt)["DhcpOptions"]],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs(Filters=flt)["KeyPairs"]],
        "load_balancers": [],
        "target_groups": [],
    }
    for kind, arns in (
        ("load_balancers", [lb["LoadBalancerArn"] for lb in elbv2.describe_load_balancers()["LoadBalancers"]]),
        ("target_groups", [tg["TargetGroupArn"] for tg in elbv2.describe_target_groups()["TargetGroups"]]),
    ):
        if arns:
            for desc in elbv2.describe_tags(ResourceArns=arns)["TagDescriptions"]:
                if {t["Key"]: t["Value"] for t in desc["Tags"]}.get(TAG) == cluster:
                    found[kind].append(desc["ResourceArn"])
    return {k: v for k, v in found.items() if v}


MUTATING = ("Create", "Run", "Authorize", "Register", "Associate", "Attach", "Modify", "Import",
            "Delete", "Terminate", "Detach", "Disassociate", "Deregister", "Replace", "Start")


class CallLog:
    """Counts every AWS API call made in this process, by operation name."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, operation: str) -> None:
        with self._lock:
            self.calls[operation] += 1

    def mutating(self) -> Counter[str]:
        return Counter({op: n for op, n in self.calls.items() if op.startswith(MUTATING)})


@contextmanager
def recording(monkeypatch, fail_on: str | None = None, fail_after: int = 0, error: type[Exception] = RuntimeError):
    """Spy on botocore's API calls; optionally make call number `fail_after + 1` of `fail_on` raise, once."""
    log = CallLog()
    original = botocore.client.BaseClient._make_api_call

    def spy(client, operation_name, api_params):
        log.record(operation_name)
        if fail_on == operation_name and log.calls[operation_name] == fail_after + 1:
            raise error(f"interrupted at {operation_name}")
        return original(client, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", spy)
    yield log
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", original)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_):
        yield self._body


THROTTLE_BODY = (
    b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
    b"</Message></Error></Errors><RequestID>throttled</RequestID></Response>"
)


class Throttler:
    """A botocore `before-send` hook answering the first `count` EC2 requests with RequestLimitExceeded."""

    def __init__(self, count: int) -> None:
        self.remaining = count
        self.injected = 0
        self._lock = threading.Lock()

    def __call__(self, request, **_):
        with self._lock:
            if self.remaining <= 0:
                return None
            self.remaining -= 1
            self.injected += 1
        return AWSResponse(request.url, 503, {"Content-Type": "text/xml"}, _Raw(THROTTLE_BODY))
