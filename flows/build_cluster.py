"""`build-cluster`: the parent flow. Phases in the guide's order; inside a phase, independent
steps run concurrently. Every task persists its result with a cache scoped to the flow run, so
Retry in the UI skips what completed and a new (nightly) run starts fresh."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from groundup.aws.network import ingress_rules, phase_ids
from groundup.phases import BUILD_PHASES, parse_phases
from deployments.concurrency import cluster_lock
from groundup.admin_kubeconfig import default_destination
from groundup.concurrency import LockMode
from groundup.report import PhaseTimes, build_report
from groundup.spec import ClusterSpec
from tasks import compute, network
from tasks.nodes import PhaseFailed, gather, nothing_to_change

__all__ = ["BUILD_PHASES", "PhaseFailed", "build_cluster"]


def network_phase(spec: ClusterSpec) -> dict[str, str]:
    """Seed step 2: VPC, DHCP options, subnet, IGW, route table, SG and rules, NLB, target group, listener.
    One dry run of them all first: when it finds nothing to change, the phase is done."""
    checked = nothing_to_change("network", network.check_network.submit(spec))
    if checked is not None:
        return checked["ids"]
    vpc = network.create_vpc.submit(spec)
    dhcp = network.configure_dhcp_options.submit(spec, vpc)
    subnet = network.create_subnet.submit(spec, vpc)
    igw = network.create_internet_gateway.submit(spec, vpc)
    route_table = network.create_route_table.submit(spec, vpc, subnet, igw)
    sg = network.create_security_group.submit(spec, vpc)
    rules = {f"ingress {r.key}": network.authorize_ingress.submit(spec, sg, r) for r in ingress_rules(spec)}
    lb = network.create_load_balancer.submit(spec, subnet)
    tg = network.create_target_group.submit(spec, vpc)
    targets = network.register_targets.submit(spec, tg)
    listener = network.create_listener.submit(spec, lb, tg)
    done = gather(
        {"vpc": vpc, "dhcp-options": dhcp, "subnet": subnet, "internet-gateway": igw, "route-table": route_table,
         "security-group": sg, "load-balancer": lb, "target-group": tg, "targets": targets, "listener": listener,
         **rules},
        "network",
    )
    return phase_ids(done["vpc"], done["subnet"], done["security-group"], done["route-table"],
                     done["load-balancer"]["dns_name"])


def compute_phase(spec: ClusterSpec, net: dict[str, str]) -> dict[str, str]:
    """Seed step 3: AMI, key pair, then every instance launched concurrently; a dry run of them all first."""
    checked = nothing_to_change(
        "compute", compute.check_instances.submit(spec, net["subnet_id"], net["security_group_id"]))
    if checked is not None:
        return checked["instances"]
    ready = gather({"ami": compute.get_ami.submit(spec), "key-pair": compute.create_key_pair.submit(spec)}, "compute")
    launches = {
        node.short_name: compute.create_instance.submit(
            spec, node.short_name, ready["ami"], net["subnet_id"], net["security_group_id"], ready["key-pair"]
        )
        for node in spec.nodes
    }
    return gather(launches, "compute")


def node_changes(summary: dict) -> dict[str, int]:
    """What the node phases changed, all nodes together: files uploaded or fixed, binaries downloaded,
    files changed and units restarted by the bootstrap (0 everywhere on a re-run of a built cluster)."""
    distributed, bootstrapped = summary.get("distribute", {}), summary.get("bootstrap", {})
    return {"uploaded": distributed.get("uploaded", 0), "fixed": distributed.get("fixed", 0),
            **{key: bootstrapped.get(key, 0) for key in ("downloaded", "files_changed", "restarted")}}


@flow(name="build-cluster", task_runner=ThreadPoolTaskRunner(max_workers=32), log_prints=False)
def build_cluster(spec: ClusterSpec, phases: list[str] | None = None, lock: LockMode = LockMode.wait) -> dict:
    """Build the cluster described by `spec`; `phases` limits the run to some phases (default: all).

    One run changes a cluster at a time: `lock` says whether a second run waits or fails naming the first.
    """
    with cluster_lock(spec.name, lock):
        return _build(spec, parse_phases(phases))


def _build(spec: ClusterSpec, wanted: list[str]) -> dict:
    logger = get_run_logger()
    times = PhaseTimes()
    summary: dict = {"cluster": spec.name, "phases": wanted}
    if "network" in wanted:
        with times.phase("network"):
            net = network_phase(spec)
    else:
        net = network.read_network.submit(spec).result()
    summary["network"] = net
    if "compute" in wanted:
        with times.phase("compute"):
            summary["instances"] = compute_phase(spec, net)
    nodes = compute.describe_nodes.submit(spec).result()
    summary["nodes"] = nodes
    api_endpoint = net["load_balancer_dns"]
    checks = None
    try:
        if "pki" in wanted:
            from tasks.pki import pki_phase

            with times.phase("pki"):
                external = {name: n.get("public_ip") for name, n in nodes.items()}
                summary["pki"] = pki_phase(spec, api_endpoint, external)
        if "distribute" in wanted:
            from tasks.distribute import distribute_phase

            with times.phase("distribute"):
                summary["distribute"] = distribute_phase(spec)
        if "bootstrap" in wanted:
            from tasks.bootstrap import bootstrap_phase

            with times.phase("bootstrap"):
                summary["bootstrap"] = bootstrap_phase(spec, api_endpoint, nodes)
        if "smoke" in wanted:
            from tasks.smoke import SmokeFailed, smoke_phase

            try:
                with times.phase("smoke"):
                    checks = smoke_phase(spec, api_endpoint)
            except SmokeFailed as exc:
                checks = exc.all_checks
                raise
            summary["smoke"] = [c.as_dict() for c in checks]
    finally:
        report = build_report(spec, net, nodes, wanted, timings=times, smoke=checks,
                              kubeconfig=f"groundup kubeconfig SPEC -> {default_destination(spec)}")
        create_markdown_artifact(key=f"build-{spec.name}".lower(), markdown=report,
                                 description=f"build-cluster {spec.name}")
    summary["seconds"] = {name: round(s, 2) for name, s in times.seconds.items()}
    summary["changes"] = node_changes(summary)
    logger.info("cluster %s: phases %s done in %s; API endpoint https://%s:6443", spec.name, ", ".join(wanted),
                ", ".join(f"{k} {v:.1f} s" for k, v in times.seconds.items()), api_endpoint)
    return summary
