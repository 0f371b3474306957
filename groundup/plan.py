"""`groundup plan`: every build step run as a dry run, reporting what it would create or change."""

from __future__ import annotations

from groundup.aws import compute, network
from groundup.aws.core import Change, Context, make_context
from groundup.pki_plan import pki_plan
from groundup.spec import ClusterSpec


class _ReadOnlyKeys:
    """The artifact store seen by a dry run: it may read the SSH key, never write it."""

    def __init__(self, store) -> None:
        self._store = store

    def exists(self, relpath: str) -> bool:
        return self._store.exists(relpath)

    def read_private_key(self, relpath: str):
        return self._store.read_private_key(relpath)

    def write_private_key(self, relpath: str, key) -> str:
        raise RuntimeError("a plan never writes")


def plan_network(ctx: Context) -> dict[str, str]:
    """Seed step 2's steps in build order; the IDs the network phase returns (placeholders for what a dry
    run would create)."""
    vpc = network.ensure_vpc(ctx)
    network.ensure_dhcp_options(ctx, vpc)
    subnet = network.ensure_subnet(ctx, vpc)
    igw = network.ensure_internet_gateway(ctx, vpc)
    route_table = network.ensure_route_table(ctx, vpc, subnet, igw)
    sg = network.ensure_security_group(ctx, vpc)
    for rule in network.ingress_rules(ctx.spec):
        network.ensure_ingress_rule(ctx, sg, rule)
    lb = network.ensure_load_balancer(ctx, subnet)
    tg = network.ensure_target_group(ctx, vpc)
    network.ensure_targets(ctx, tg)
    network.ensure_listener(ctx, lb["arn"], tg)
    return network.phase_ids(vpc, subnet, sg, route_table, lb["dns_name"])


def plan_compute(ctx: Context, subnet_id: str, security_group_id: str, store=None) -> dict[str, str]:
    """Seed step 3's steps in build order; each node's instance ID (placeholders for launches)."""
    ami = compute.find_ami(ctx)
    if ctx.dry_run:
        ctx.live_instances = compute.live_instances_by_role(ctx)
    key = compute.ensure_key_pair(ctx, None if store is None else _ReadOnlyKeys(store))
    return {node.short_name: compute.ensure_instance(ctx, node, ami, subnet_id, security_group_id, key)
            for node in ctx.spec.nodes}


def pending(changes: list[Change]) -> list[str]:
    """The changes a step would make, as text (what already matches left out)."""
    return [str(c) for c in changes if c.action != "exists"]


def plan_aws(ctx: Context, store=None) -> list[Change]:
    """Network then compute steps in dry-run mode, in build order."""
    net = plan_network(ctx)
    plan_compute(ctx, net["subnet_id"], net["security_group_id"], store)
    return ctx.changes


def plan_pki(ctx: Context, store) -> list[Change]:
    """What the PKI phase would issue or rewrite, given the NLB name and node IPs AWS has now."""
    lb = network.find_load_balancer(ctx)
    nodes = compute.describe_nodes(ctx)
    external = {name: facts.get("public_ip") for name, facts in nodes.items()}
    if store is None:
        return [Change("create", "pki", "nothing stored yet: CA, every certificate, kubeconfig, encryption config")]
    lines = pki_plan(ctx.spec, lb["DNSName"] if lb else "", external, store)
    return [Change("issue", line.split(":", 1)[0], line.split(":", 1)[1].strip()) for line in lines] or [
        Change("exists", "pki", "every certificate, kubeconfig and the encryption config are current")
    ]


def plan(spec: ClusterSpec, store=None) -> list[Change]:
    """AWS steps, then the PKI, as a dry run; `store` is the artifact store if one exists."""
    ctx = make_context(spec, dry_run=True)
    return plan_aws(ctx, store) + plan_pki(ctx, store)


def render_plan(changes: list[Change]) -> str:
    todo = pending(changes)
    lines = todo or ["nothing to do: AWS matches the spec"]
    lines.append(f"\n{len(todo)} to change, {len(changes) - len(todo)} up to date")
    return "\n".join(lines)


def existing_store(spec: ClusterSpec):
    """The cluster's artifact store if Prefect is reachable and its passphrase exists; never creates one."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        return None
    from blocks.artifact_store import ArtifactStore, existing_passphrase, load_filesystem

    passphrase = existing_passphrase()
    return None if passphrase is None else ArtifactStore(load_filesystem(), spec.name, passphrase)
