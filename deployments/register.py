"""Deployments for one cluster spec: build-cluster/<name>, teardown-cluster/<name> and, with a
schedule, rebuild-and-test/<name> (the nightly rebuild); smoke-test/<name> checks a built cluster. Runs on a process work pool."""

from __future__ import annotations

from pathlib import Path

from prefect.client.schemas.schedules import CronSchedule

from groundup.spec import ClusterSpec

ROOT = Path(__file__).resolve().parents[1]
WORK_POOL = "groundup"
FLOWS = {
    "build-cluster": "flows/build_cluster.py:build_cluster",
    "teardown-cluster": "flows/teardown_cluster.py:teardown_cluster",
    "smoke-test": "flows/smoke_test.py:smoke_test",
    "rebuild-and-test": "flows/rebuild_and_test.py:rebuild_and_test",
}


def register(spec: ClusterSpec, work_pool: str = WORK_POOL, nightly: str | None = None,
             timezone: str = "UTC") -> list[str]:
    """Create or update the cluster's deployments; returns their `<flow>/<deployment>` names."""
    from prefect import flow

    parameters = {"spec": spec.model_dump(mode="json")}
    names = []
    for flow_name, entrypoint in FLOWS.items():
        schedules = []
        if flow_name == "rebuild-and-test":
            if not nightly:
                continue
            schedules = [CronSchedule(cron=nightly, timezone=timezone)]
        loaded = flow.from_source(source=str(ROOT), entrypoint=entrypoint)
        loaded.deploy(
            name=spec.name,
            work_pool_name=work_pool,
            parameters=parameters,
            schedules=schedules,
            tags=["groundup", spec.name],
            description=f"{flow_name} for cluster {spec.name} ({spec.region})",
            print_next_steps=False,
            ignore_warnings=True,
        )
        names.append(f"{flow_name}/{spec.name}")
    return names
