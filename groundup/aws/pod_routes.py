"""Provisioning pod network routes: one route per worker's pod CIDR in the cluster's VPC route
table, target the worker's instance (the seed's topology has no overlay network).

Look-then-act like every AWS step: a route that already points at the right instance is left
alone, one that points elsewhere is replaced, and a route inside `pod_cidr` that no worker of the
spec owns any more is deleted. Teardown removes the routes with their route table.
"""

from __future__ import annotations

from ipaddress import IPv4Network

from groundup.aws.core import ClusterStateError, Context, retry_transient, tag_filters
from groundup.aws.compute import EVENTUAL_CONSISTENCY
from groundup.spec import Node


def find_route_table(ctx: Context) -> dict:
    tables = ctx.ec2.describe_route_tables(Filters=tag_filters(ctx.spec.name, "route-table"))["RouteTables"]
    if len(tables) != 1:
        raise ClusterStateError(
            f"cluster {ctx.spec.name!r} has {len(tables)} route tables; expected one: run the network phase"
        )
    return tables[0]


def pod_routes(table: dict) -> dict[str, str | None]:
    """Destination CIDR -> target instance ID of the table's routes (None: not an instance route)."""
    return {r["DestinationCidrBlock"]: r.get("InstanceId") for r in table.get("Routes", [])
            if r.get("DestinationCidrBlock")}


def ensure_pod_route(ctx: Context, worker: Node, instance_id: str) -> str:
    """The route `<worker pod CIDR> -> <worker instance>`; returns the CIDR."""
    if worker.pod_cidr is None:
        raise ValueError(f"{worker.short_name} is not a worker: it has no pod CIDR")
    table = find_route_table(ctx)
    cidr = str(worker.pod_cidr)
    current = pod_routes(table)
    if cidr in current and current[cidr] == instance_id:
        ctx.note(f"pod route {cidr}", f"via {instance_id}")
        return cidr
    action = ctx.ec2.replace_route if cidr in current else ctx.ec2.create_route
    ctx.act("modify" if cidr in current else "create", f"pod route {cidr}", retry_transient, action,
            RouteTableId=table["RouteTableId"], DestinationCidrBlock=cidr, InstanceId=instance_id,
            detail=f"via {worker.short_name} {instance_id}", codes=EVENTUAL_CONSISTENCY + ("RequestLimitExceeded",))
    return cidr


def remove_stale_pod_routes(ctx: Context) -> list[str]:
    """Delete routes inside `pod_cidr` that no worker of the spec owns (a worker was removed)."""
    table = find_route_table(ctx)
    wanted = {str(w.pod_cidr) for w in ctx.spec.workers}
    stale = [cidr for cidr, target in pod_routes(table).items()
             if target and cidr not in wanted and IPv4Network(cidr).subnet_of(ctx.spec.pod_cidr)]
    for cidr in stale:
        ctx.act("delete", f"pod route {cidr}", retry_transient, ctx.ec2.delete_route,
                RouteTableId=table["RouteTableId"], DestinationCidrBlock=cidr)
    return stale
