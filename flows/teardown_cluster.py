"""`teardown-cluster`: delete everything the cluster owns, found by tag, in dependency order."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.cache_policies import NO_CACHE

from deployments.concurrency import cluster_lock
from groundup.concurrency import LockMode
from groundup.spec import ClusterSpec
from tasks import teardown


@flow(name="teardown-cluster", log_prints=False)
def teardown_cluster(spec: ClusterSpec, lock: LockMode = LockMode.wait) -> dict[str, int]:
    """Instances, then listener, NLB and target group, then key pair, SG, route table, subnet, IGW, VPC, DHCP options."""
    with cluster_lock(spec.name, lock):
        return _teardown(spec)


def _teardown(spec: ClusterSpec) -> dict[str, int]:
    logger = get_run_logger()
    found = teardown.discover_resources(spec)
    if not found:
        logger.info("cluster %s owns no AWS resources: nothing to delete", spec.name)
        return {}
    teardown.terminate_instances(spec)
    teardown.delete_load_balancer(spec)
    teardown.delete_network(spec)
    left = teardown.discover_resources.with_options(cache_policy=NO_CACHE, persist_result=False)(spec)
    if left:
        raise RuntimeError(f"teardown of {spec.name} left resources behind: {left}")
    logger.info("cluster %s: deleted %s", spec.name, found)
    return found
