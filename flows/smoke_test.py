"""`smoke-test`: the smoke checks of a built cluster on their own, with the report as an artifact."""

from __future__ import annotations

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from groundup.spec import ClusterSpec
from tasks import network
from tasks.smoke import smoke_phase


@flow(name="smoke-test", task_runner=ThreadPoolTaskRunner(max_workers=32), log_prints=False)
def smoke_test(spec: ClusterSpec) -> list[dict]:
    """Every smoke check, each marked passed / failed / not run with where it ran; fails if any check failed."""
    net = network.read_network.submit(spec).result()
    return [c.as_dict() for c in smoke_phase(spec, net["load_balancer_dns"])]
