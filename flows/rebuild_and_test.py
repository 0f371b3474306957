"""`rebuild-and-test`: the nightly deployment. Tear the cluster down, then build it from nothing."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.build_cluster import build_cluster
from flows.teardown_cluster import teardown_cluster
from groundup.spec import ClusterSpec


@flow(name="rebuild-and-test", log_prints=False)
def rebuild_and_test(spec: ClusterSpec, phases: list[str] | None = None) -> dict:
    """Teardown then build-cluster, each as a subflow so each shows in the UI with its own tasks."""
    logger = get_run_logger()
    deleted = teardown_cluster(spec=spec)
    logger.info("teardown removed %s", deleted or "nothing")
    return build_cluster(spec=spec, phases=phases)
