"""Deployments for one cluster spec, on a process work pool, in one idempotent call:

- `build-cluster/<name>`, `teardown-cluster/<name>`, `smoke-test/<name>`: run on demand;
- `rebuild-and-test/<name>`: the nightly rebuild, on a cron schedule (default 02:00 UTC).

The spec is every deployment's default parameter (the Run form shows each field with its
description). Calling `register` again updates the same deployments and schedule, never adds any.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect.client.schemas.schedules import CronSchedule

from deployments.concurrency import ensure_cluster_limit
from deployments.result_storage import result_storage_env
from groundup.spec import ClusterSpec

ROOT = Path(__file__).resolve().parents[1]
WORK_POOL = "groundup"
DEFAULT_NIGHTLY = "0 2 * * *"
FLOWS = {
    "build-cluster": "flows/build_cluster.py:build_cluster",
    "teardown-cluster": "flows/teardown_cluster.py:teardown_cluster",
    "smoke-test": "flows/smoke_test.py:smoke_test",
    "rebuild-and-test": "flows/rebuild_and_test.py:rebuild_and_test",
}
NIGHTLY_FLOW = "rebuild-and-test"


@dataclass(frozen=True)
class Registered:
    """One deployment as registered: `<flow>/<deployment>`, its id and its cron schedule, if any."""

    name: str
    id: str
    cron: str | None

    def __str__(self) -> str:
        return self.name


def ensure_work_pool(name: str = WORK_POOL) -> bool:
    """Create the process work pool unless it exists; True when it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process"))
                return True
            except ObjectAlreadyExists:
                return False
        if pool.type != "process":
            raise ValueError(f"work pool {name!r} is of type {pool.type!r}, not 'process'; "
                             f"pick another pool name with --pool")
    return False


def register(spec: ClusterSpec, work_pool: str = WORK_POOL, nightly: str | None = DEFAULT_NIGHTLY,
             timezone: str = "UTC", result_storage: str | None = None) -> list[Registered]:
    """Create or update the work pool, the cluster's lock and its four deployments.

    `nightly` is the rebuild-and-test cron (None: deployed without a schedule); `result_storage` a
    filesystem block slug (see deployments.result_storage) every run persists task results to.
    """
    from prefect import flow

    ensure_work_pool(work_pool)
    ensure_cluster_limit(spec.name)
    parameters = {"spec": spec.model_dump(mode="json")}
    env = result_storage_env(result_storage)
    registered = []
    for flow_name, entrypoint in FLOWS.items():
        cron = nightly if flow_name == NIGHTLY_FLOW and nightly else None
        loaded = flow.from_source(source=str(ROOT), entrypoint=entrypoint, _sync=True)
        deployment_id = loaded.deploy(
            name=spec.name,
            work_pool_name=work_pool,
            parameters=parameters,
            schedules=[CronSchedule(cron=cron, timezone=timezone)] if cron else [],
            job_variables={"env": env} if env else None,
            tags=["groundup", spec.name],
            description=f"{flow_name} for cluster {spec.name} ({spec.region})",
            print_next_steps=False,
            ignore_warnings=True,
            _sync=True,
        )
        registered.append(Registered(f"{flow_name}/{spec.name}", str(deployment_id), cron))
    return registered
