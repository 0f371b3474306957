"""Delete every resource the cluster owns, found by its tags, in dependency order.

Works on a complete cluster, a half-built one, and a second time (then it deletes nothing).
Resources without the cluster's tag are never touched: moto's default VPC and anything else in
the account shares CIDRs with the seed, so only tags identify what is ours.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from groundup.aws.core import (
    CLUSTER_TAG,
    TRANSIENT_CODES,
    Context,
    describe_instances,
    error_code,
    retry_transient,
    tag_filters,
    tags_dict,
)

# Real AWS takes minutes to release ENIs of a deleted NLB or terminated instances.
DEPENDENCY_ATTEMPTS = 30
GONE = frozenset(("InvalidVpcID.NotFound", "InvalidSubnetID.NotFound", "InvalidGroup.NotFound",
        "InvalidRouteTableID.NotFound", "InvalidInternetGatewayID.NotFound", "InvalidDhcpOptionID.NotFound",
        "InvalidKeyPair.NotFound", "LoadBalancerNotFound", "TargetGroupNotFound", "ListenerNotFound",
        "InvalidInstanceID.NotFound", "Gateway.NotAttached", "InvalidAssociationID.NotFound"))


@dataclass
class Inventory:
    """Everything tagged with the cluster's name, by kind."""

    instances: list[str] = field(default_factory=list)
    load_balancers: list[str] = field(default_factory=list)
    listeners: list[str] = field(default_factory=list)
    target_groups: list[str] = field(default_factory=list)
    key_pairs: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)
    subnets: list[str] = field(default_factory=list)
    route_tables: list[dict] = field(default_factory=list)
    internet_gateways: list[dict] = field(default_factory=list)
    vpcs: list[str] = field(default_factory=list)
    dhcp_options: list[str] = field(default_factory=list)

    def count(self) -> int:
        return sum(len(v) for v in self.__dict__.values())

    def summary(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.__dict__.items() if v}


def _ours(ctx: Context, arns: list[str]) -> list[str]:
    mine = []
    for i in range(0, len(arns), 20):
        reply = retry_transient(ctx.elbv2.describe_tags, ResourceArns=arns[i : i + 20])
        mine += [d["ResourceArn"] for d in reply["TagDescriptions"]
                 if tags_dict(d.get("Tags")).get(CLUSTER_TAG) == ctx.spec.name]
    return mine


def discover(ctx: Context) -> Inventory:
    """Find every resource of the cluster by tag (ELBv2 by tag among all load balancers)."""
    ec2, name = ctx.ec2, ctx.spec.name
    flt = tag_filters(name)
    inv = Inventory()
    live = ["pending", "running", "stopping", "stopped", "shutting-down"]
    inv.instances = [i["InstanceId"] for i in describe_instances(ec2, flt + [{"Name": "instance-state-name", "Values": live}])]
    lbs = [lb["LoadBalancerArn"] for page in ctx.elbv2.get_paginator("describe_load_balancers").paginate()
           for lb in page["LoadBalancers"]]
    inv.load_balancers = _ours(ctx, lbs)
    for arn in inv.load_balancers:
        inv.listeners += [li["ListenerArn"] for li in ctx.elbv2.describe_listeners(LoadBalancerArn=arn)["Listeners"]]
    tgs = [tg["TargetGroupArn"] for page in ctx.elbv2.get_paginator("describe_target_groups").paginate()
           for tg in page["TargetGroups"]]
    inv.target_groups = _ours(ctx, tgs)
    inv.key_pairs = [k["KeyName"] for k in ec2.describe_key_pairs(Filters=flt)["KeyPairs"]]
    inv.security_groups = [g["GroupId"] for g in ec2.describe_security_groups(Filters=flt)["SecurityGroups"]]
    inv.subnets = [s["SubnetId"] for s in ec2.describe_subnets(Filters=flt)["Subnets"]]
    inv.route_tables = ec2.describe_route_tables(Filters=flt)["RouteTables"]
    inv.internet_gateways = ec2.describe_internet_gateways(Filters=flt)["InternetGateways"]
    inv.vpcs = [v["VpcId"] for v in ec2.describe_vpcs(Filters=flt)["Vpcs"]]
    inv.dhcp_options = [d["DhcpOptionsId"] for d in ec2.describe_dhcp_options(Filters=flt)["DhcpOptions"]]
    return inv


def _delete(ctx: Context, what: str, fn: Callable, **kwargs) -> None:
    """Delete one resource; already gone is fine, a dependency still draining is retried."""
    try:
        ctx.act("delete", what, retry_transient, fn, attempts=DEPENDENCY_ATTEMPTS, codes=TRANSIENT_CODES - GONE, **kwargs)
    except ClientError as exc:
        if error_code(exc) not in GONE:
            raise


def terminate_instances(ctx: Context, inv: Inventory) -> None:
    if not inv.instances:
        return
    ctx.act("delete", f"{len(inv.instances)} instances", retry_transient, ctx.ec2.terminate_instances,
            InstanceIds=inv.instances)
    if not ctx.dry_run:
        retry_transient(ctx.ec2.get_waiter("instance_terminated").wait, InstanceIds=inv.instances,
                        WaiterConfig={"Delay": 3, "MaxAttempts": 200})


def delete_load_balancers(ctx: Context, inv: Inventory) -> None:
    for arn in inv.listeners:
        _delete(ctx, f"listener {arn.rsplit('/', 1)[-1]}", ctx.elbv2.delete_listener, ListenerArn=arn)
    for arn in inv.load_balancers:
        _delete(ctx, f"load-balancer {arn.split('/')[-2]}", ctx.elbv2.delete_load_balancer, LoadBalancerArn=arn)
    if inv.load_balancers and not ctx.dry_run:
        retry_transient(ctx.elbv2.get_waiter("load_balancers_deleted").wait, LoadBalancerArns=inv.load_balancers,
                        WaiterConfig={"Delay": 5, "MaxAttempts": 120}, codes=("LoadBalancerNotFound",))
    for arn in inv.target_groups:
        _delete(ctx, f"target-group {arn.split('/')[-2]}", ctx.elbv2.delete_target_group, TargetGroupArn=arn)


def delete_network(ctx: Context, inv: Inventory) -> None:
    ec2 = ctx.ec2
    for name in inv.key_pairs:
        _delete(ctx, f"key-pair {name}", ec2.delete_key_pair, KeyName=name)
    for group in inv.security_groups:
        _delete(ctx, f"security-group {group}", ec2.delete_security_group, GroupId=group)
    for table in inv.route_tables:
        for assoc in table.get("Associations", []):
            if not assoc.get("Main") and assoc.get("RouteTableAssociationId") and assoc.get("SubnetId"):
                _delete(ctx, f"route-table association {assoc['RouteTableAssociationId']}",
                        ec2.disassociate_route_table, AssociationId=assoc["RouteTableAssociationId"])
        _delete(ctx, f"route-table {table['RouteTableId']}", ec2.delete_route_table, RouteTableId=table["RouteTableId"])
    for subnet in inv.subnets:
        _delete(ctx, f"subnet {subnet}", ec2.delete_subnet, SubnetId=subnet)
    for igw in inv.internet_gateways:
        for attachment in igw.get("Attachments", []):
            _delete(ctx, f"internet-gateway attachment {igw['InternetGatewayId']}", ec2.detach_internet_gateway,
                    InternetGatewayId=igw["InternetGatewayId"], VpcId=attachment["VpcId"])
        _delete(ctx, f"internet-gateway {igw['InternetGatewayId']}", ec2.delete_internet_gateway,
                InternetGatewayId=igw["InternetGatewayId"])
    for vpc in inv.vpcs:
        _delete(ctx, f"vpc {vpc}", ec2.delete_vpc, VpcId=vpc)
    for options in inv.dhcp_options:
        _delete(ctx, f"dhcp-options {options}", ec2.delete_dhcp_options, DhcpOptionsId=options)


def teardown(ctx: Context) -> Inventory:
    """Delete everything the cluster owns; returns what was found."""
    inv = discover(ctx)
    terminate_instances(ctx, inv)
    delete_load_balancers(ctx, inv)
    delete_network(ctx, inv)
    return inv
