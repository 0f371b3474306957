"""`groundup plan`: every build step run as a dry run, reporting what it would create or change."""

from __future__ import annotations

from groundup.aws import compute, network
from groundup.aws.core import Change, Context, make_context
from groundup.spec import ClusterSpec


class _ReadOnlyKeys:
    """The artifact store seen by a dry run: it may read the SSH key, never write it."""

    def __init__(self, store) -> None:
        self._store = store

    def exists(self, relpath: str) -> bool:
        return self._store is not None and self._store.exists(relpath)

    def read_private_key(self, relpath: str):
        return self._store.read_private_key(relpath)

    def write_private_key(self, relpath: str, key) -> str:
        raise RuntimeError("a plan never writes")


def plan_aws(ctx: Context, store=None) -> list[Change]:
    """Network then compute steps in dry-run mode, in build order."""
    vpc = network.ensure_vpc(ctx)
    network.ensure_dhcp_options(ctx, vpc)
    subnet = network.ensure_subnet(ctx, vpc)
    igw = network.ensure_internet_gateway(ctx, vpc)
    network.ensure_route_table(ctx, vpc, subnet, igw)
    sg = network.ensure_security_group(ctx, vpc)
    for rule in network.ingress_rules(ctx.spec):
        network.ensure_ingress_rule(ctx, sg, rule)
    lb = network.ensure_load_balancer(ctx, subnet)
    tg = network.ensure_target_group(ctx, vpc)
    network.ensure_targets(ctx, tg)
    network.ensure_listener(ctx, lb["arn"], tg)
    ami = compute.find_ami(ctx)
    key = compute.ensure_key_pair(ctx, _ReadOnlyKeys(store))
    for node in ctx.spec.nodes:
        compute.ensure_instance(ctx, node, ami, subnet, sg, key)
    return ctx.changes


def plan(spec: ClusterSpec, store=None) -> list[Change]:
    return plan_aws(make_context(spec, dry_run=True), store)


def render_plan(changes: list[Change]) -> str:
    todo = [c for c in changes if c.action != "exists"]
    lines = [str(c) for c in todo] or ["nothing to do: AWS matches the spec"]
    lines.append(f"\n{len(todo)} to change, {len(changes) - len(todo)} up to date")
    return "\n".join(lines)
