"""Seed step 2 as Prefect tasks: one task per network resource, each returning plain IDs."""

from __future__ import annotations

from groundup.aws import network
from groundup.aws.core import make_context
from groundup.aws.network import IngressRule
from groundup.plan import pending, plan_network
from groundup.spec import ClusterSpec
from tasks.aws import aws_task, context, run_step


@aws_task("check-network")
def check_network(spec: ClusterSpec) -> dict:
    """Every step below as a dry run, in one task: what they would change, and the IDs they return. A re-run
    of a built cluster stops here instead of running fifteen tasks that each find their part in place."""
    ctx = make_context(spec, dry_run=True)
    ids = plan_network(ctx)
    return {"changes": pending(ctx.changes), "ids": ids}


@aws_task("create-vpc")
def create_vpc(spec: ClusterSpec) -> str:
    return run_step(spec, network.ensure_vpc)


@aws_task("configure-dhcp-options")
def configure_dhcp_options(spec: ClusterSpec, vpc_id: str) -> str:
    return run_step(spec, network.ensure_dhcp_options, vpc_id)


@aws_task("create-subnet")
def create_subnet(spec: ClusterSpec, vpc_id: str) -> str:
    return run_step(spec, network.ensure_subnet, vpc_id)


@aws_task("create-internet-gateway")
def create_internet_gateway(spec: ClusterSpec, vpc_id: str) -> str:
    return run_step(spec, network.ensure_internet_gateway, vpc_id)


@aws_task("create-route-table")
def create_route_table(spec: ClusterSpec, vpc_id: str, subnet_id: str, igw_id: str) -> str:
    return run_step(spec, network.ensure_route_table, vpc_id, subnet_id, igw_id)


@aws_task("create-security-group")
def create_security_group(spec: ClusterSpec, vpc_id: str) -> str:
    return run_step(spec, network.ensure_security_group, vpc_id)


@aws_task("authorize-ingress", task_run_name="authorize-ingress-{rule.key}")
def authorize_ingress(spec: ClusterSpec, sg_id: str, rule: IngressRule) -> str:
    return run_step(spec, network.ensure_ingress_rule, sg_id, rule)


@aws_task("create-network-load-balancer")
def create_load_balancer(spec: ClusterSpec, subnet_id: str) -> dict[str, str]:
    return run_step(spec, network.ensure_load_balancer, subnet_id)


@aws_task("create-target-group")
def create_target_group(spec: ClusterSpec, vpc_id: str) -> str:
    return run_step(spec, network.ensure_target_group, vpc_id)


@aws_task("register-targets")
def register_targets(spec: ClusterSpec, tg_arn: str) -> list[str]:
    return run_step(spec, network.ensure_targets, tg_arn)


@aws_task("create-listener")
def create_listener(spec: ClusterSpec, lb: dict[str, str], tg_arn: str) -> str:
    return run_step(spec, network.ensure_listener, lb["arn"], tg_arn)


@aws_task("read-network", persist_result=True)
def read_network(spec: ClusterSpec) -> dict[str, str]:
    """The IDs of an already built network, for runs that skip the network phase."""
    return network.read_network(context(spec)).as_dict()
