"""Teardown as Prefect tasks, in dependency order; each step re-discovers by tag, so a retry is safe."""

from __future__ import annotations

from groundup.aws import teardown
from tasks.aws import aws_task, context, log_changes
from groundup.spec import ClusterSpec


def _run(spec: ClusterSpec, step) -> dict[str, int]:
    ctx = context(spec)
    inventory = teardown.discover(ctx)
    try:
        step(ctx, inventory)
    finally:
        log_changes(ctx)
    return inventory.summary()


@aws_task("discover-cluster-resources")
def discover_resources(spec: ClusterSpec) -> dict[str, int]:
    return teardown.discover(context(spec)).summary()


@aws_task("terminate-instances")
def terminate_instances(spec: ClusterSpec) -> dict[str, int]:
    return _run(spec, teardown.terminate_instances)


@aws_task("delete-load-balancer")
def delete_load_balancer(spec: ClusterSpec) -> dict[str, int]:
    return _run(spec, teardown.delete_load_balancers)


@aws_task("delete-network")
def delete_network(spec: ClusterSpec) -> dict[str, int]:
    return _run(spec, teardown.delete_network)
