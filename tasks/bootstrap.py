"""The bootstrap phase as Prefect tasks (kubernetes-the-hard-way 07-11): one `bootstrap-<node>` task
per node, all nodes at once (the masters' etcd members wait for each other's quorum), the pod routes
in the VPC route table (one task per worker), then the cluster add-ons once the API answers
through the load balancer.
"""

from __future__ import annotations

import json

from prefect import get_run_logger, task
from prefect.futures import wait

from groundup.admin_kubeconfig import ADMIN_KUBECONFIG
from groundup.aws import pod_routes
from groundup.polling import poll
from groundup.spec import ClusterSpec, node_by_name
from tasks.aws import aws_task, run_step
from tasks.nodes import boot_timeout_for, console_output_reader, fan_out, gather
from tasks.store import cluster_ssh_key, cluster_store


@task(name="bootstrap-node", task_run_name="bootstrap-{node}", persist_result=True)
def bootstrap_node(spec: ClusterSpec, node: str, address: str, instance_id: str | None, api_endpoint: str,
                   boot_timeout: float = 120.0) -> dict:
    """Binaries (downloaded and verified on the node), configs and units of one node; returns facts only."""
    from groundup.bootstrap import node_plan
    from groundup.node_bootstrap import bootstrap_node as run_bootstrap
    from groundup.node_scripts import script_bytes
    from groundup.releases import node_release_manifest

    logger = get_run_logger()
    target = node_by_name(spec, node)
    store = cluster_store(spec)
    pkey = cluster_ssh_key(spec)
    result = run_bootstrap(spec, target, address, instance_id, store, pkey, node_plan(spec, target, api_endpoint),
                           node_release_manifest(spec, target), script_bytes("install_releases.py"),
                           console_output_reader(spec), boot_timeout=boot_timeout)
    for retry in result.start_retries:
        logger.warning("%s: a unit failed at start: %s", node, retry)
    logger.info("%s (%s): %d downloaded, %d files changed, restarted [%s], unchanged [%s] in %.1f s", node, address,
                len(result.downloaded), len(result.files_changed), ", ".join(result.restarted),
                ", ".join(result.unchanged), result.seconds)
    return result.as_result()


@aws_task("create-pod-route", task_run_name="create-pod-route-{worker}")
def create_pod_route(spec: ClusterSpec, worker: str, instance_id: str) -> str:
    """`<worker pod CIDR> -> <worker instance>` in the cluster's route table."""
    return run_step(spec, pod_routes.ensure_pod_route, node_by_name(spec, worker), instance_id)


@aws_task("remove-stale-pod-routes")
def remove_stale_pod_routes(spec: ClusterSpec) -> list[str]:
    return run_step(spec, pod_routes.remove_stale_pod_routes)


@task(name="apply-cluster-addons", persist_result=True, retries=2, retry_delay_seconds=10)
def apply_cluster_addons(spec: ClusterSpec, api_endpoint: str) -> dict:
    """RBAC for apiserver -> kubelet and CoreDNS, applied with real kubectl once the API answers via the NLB."""
    import os

    from groundup.bootstrap.addons import cluster_manifests
    from groundup.cluster_api import check_resolves_inside, credentials, kubectl, wait_for_api
    from groundup.distribution import ALLOWED_NETWORKS_ENV, allowed_node_networks

    logger = get_run_logger()
    kubeconfig = cluster_store(spec).read(ADMIN_KUBECONFIG)
    creds = credentials(kubeconfig)
    check_resolves_inside(creds.host, allowed_node_networks(os.environ.get(ALLOWED_NETWORKS_ENV)))
    version = wait_for_api(creds)
    manifests = cluster_manifests(spec)
    applied = []
    for name, manifest in manifests:
        result = kubectl(kubeconfig, "apply", "-f", "-", stdin=manifest)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl apply of {name} failed: {result.stderr.decode(errors='replace').strip()}")
        applied.append(name)
        logger.info("applied %s: %s", name, result.stdout.decode(errors="replace").strip().replace("\n", "; "))
    assigned = register_pod_cidrs(spec, kubeconfig)
    return {"applied": applied, "pod_cidrs": assigned, "server": version.get("gitVersion")}


NODE_REGISTRATION_WAIT_S = 120.0


def register_pod_cidrs(spec: ClusterSpec, kubeconfig: bytes) -> dict[str, str]:
    """Each worker's Node gets the spec's pod range once its kubelet has registered it (a bounded wait)."""
    from groundup.bootstrap.addons import pod_cidr_patches
    from groundup.cluster_api import kubectl

    logger = get_run_logger()
    assigned: dict[str, str] = {}

    def assign_registered() -> list[str]:
        """Patch the Nodes registered so far; the workers still missing."""
        listed = kubectl(kubeconfig, "get", "nodes", "-o", "json")
        patches, missing, conflicts = pod_cidr_patches(spec, listed.stdout.decode() if listed.returncode == 0 else "")
        if conflicts:
            raise RuntimeError("pod CIDRs: " + "; ".join(conflicts))
        for name, patch in patches.items():
            done = kubectl(kubeconfig, "patch", "node", name, "--type", "merge", "-p", patch)
            if done.returncode != 0:
                raise RuntimeError(f"pod CIDR of node {name}: {done.stderr.decode(errors='replace').strip()}")
            assigned[name] = json.loads(patch)["spec"]["podCIDR"]
            logger.info("node %s: podCIDR %s (the spec's range for it)", name, assigned[name])
        return missing

    missing = poll(assign_registered, lambda left: not left, NODE_REGISTRATION_WAIT_S, interval=2.0)
    if missing:
        raise RuntimeError(f"kubelet never registered within {NODE_REGISTRATION_WAIT_S:.0f} s: "
                           + ", ".join(missing) + " (see `journalctl -u kubelet` on each)")
    return assigned


def bootstrap_phase(spec: ClusterSpec, api_endpoint: str, instances: dict[str, dict]) -> dict:
    """Every node at once, the pod routes beside them, then the add-ons; raises naming each failed step."""
    timeout = boot_timeout_for(spec)
    routes = {f"pod-route {w.short_name}": create_pod_route.submit(spec, w.short_name,
                                                                  instances[w.short_name]["instance_id"])
              for w in spec.workers if w.short_name in instances}
    routes["stale pod routes"] = remove_stale_pod_routes.submit(spec)
    try:
        outcomes, details = fan_out(
            spec, "bootstrap", spec.nodes,
            lambda node, address, instance_id: bootstrap_node.submit(spec, node.short_name, address, instance_id,
                                                                     api_endpoint, timeout),
            lambda d: {"downloaded": len(d.get("downloaded", [])), "files changed": len(d.get("files_changed", [])),
                       "restarted": ", ".join(d.get("restarted", [])), "seconds": d.get("seconds", "")},
        )
    finally:
        wait(list(routes.values()))
    routed = gather(routes, "bootstrap")
    addons = gather({"cluster add-ons": apply_cluster_addons.submit(spec, api_endpoint)}, "bootstrap")
    counts = {key: sum(len(d.get(key, [])) for d in details.values())
              for key in ("downloaded", "files_changed", "restarted")}
    get_run_logger().info("bootstrap of %d nodes, in all: downloaded %d, files changed %d, units restarted %d",
                          len(details), counts["downloaded"], counts["files_changed"], counts["restarted"])
    return {"nodes": outcomes, "pod_routes": routed, "addons": addons["cluster add-ons"], **counts}
