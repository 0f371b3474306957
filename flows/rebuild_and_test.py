"""`rebuild-and-test`: the nightly deployment. Tear the cluster down, build it from nothing, smoke-test
it; teardown, build and smoke are subflows, so each shows in the UI with its own tasks. The run holds
the cluster's lock throughout, so no build or teardown of the same cluster runs in between."""

from __future__ import annotations

import re

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import State

from deployments.concurrency import cluster_lock
from flows.build_cluster import build_cluster
from flows.smoke_test import smoke_test
from flows.teardown_cluster import teardown_cluster
from groundup.concurrency import LockMode
from groundup.phases import parse_phases
from groundup.report import PhaseTimes, rebuild_report
from groundup.smoke import Check
from groundup.spec import ClusterSpec


class RebuildFailed(RuntimeError):
    """A phase of the nightly rebuild failed; the message names it and the report artifact says more."""


def _failure(state: State) -> str:
    exc = state.result(raise_on_failure=False)
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else (state.message or state.name)


def _smoke_checks(state: State) -> list[Check]:
    """The checks a smoke-test run returned, or those its failure carries."""
    value = state.result(raise_on_failure=False)
    if isinstance(value, BaseException):
        carried = getattr(value, "all_checks", None) or getattr(value, "checks", None) or []
        return [c if isinstance(c, Check) else Check.from_dict(c) for c in carried]
    return [Check.from_dict(c) for c in value or []]


def artifact_key(cluster: str) -> str:
    return "rebuild-" + re.sub(r"[^a-z0-9-]", "-", cluster.lower())


@flow(name="rebuild-and-test", log_prints=False)
def rebuild_and_test(spec: ClusterSpec, phases: list[str] | None = None, teardown_on_failure: bool = False,
                     lock: LockMode = LockMode.wait) -> dict:
    """Teardown, build from nothing, smoke test; a markdown report of the outcome and each phase's time.

    Args:
        spec: The cluster to rebuild.
        phases: Build phases to run after the teardown (default: all, smoke included).
        teardown_on_failure: Tear the cluster down when the build or the smoke test fails (default: leave it
            up for inspection).
        lock: When another run holds this cluster: `wait` for it to finish, or `fail` at once naming it.
    """
    logger = get_run_logger()
    wanted = parse_phases(phases)
    build_phases = [p for p in wanted if p != "smoke"]
    times = PhaseTimes()
    checks: list[Check] | None = None
    failed_at: str | None = None
    failure: str | None = None
    left_up: bool | None = None
    with cluster_lock(spec.name, lock):
        stages = [("teardown", lambda: teardown_cluster(spec=spec, return_state=True))]
        if build_phases:
            stages.append(("build", lambda: build_cluster(spec=spec, phases=build_phases, return_state=True)))
        if "smoke" in wanted:
            stages.append(("smoke", lambda: smoke_test(spec=spec, return_state=True)))
        for stage, run in stages:
            with times.phase(stage):
                state = run()
            if stage == "smoke":
                checks = _smoke_checks(state)
            if not state.is_completed():
                times.outcome[stage] = "failed"
                failed_at, failure = stage, _failure(state)
                break
        if failed_at in ("build", "smoke"):
            left_up = not teardown_on_failure
            if teardown_on_failure:
                with times.phase("teardown after failure"):
                    teardown_cluster(spec=spec)
    outcome = f"failed at {failed_at}" if failed_at else "passed"
    create_markdown_artifact(key=artifact_key(spec.name),
                             markdown=rebuild_report(spec.name, outcome, times, checks, left_up, failure),
                             description=f"rebuild-and-test {spec.name}: {outcome}")
    summary = {"cluster": spec.name, "outcome": outcome, "seconds": times.seconds,
               "smoke": [c.as_dict() for c in checks] if checks is not None else None}
    if failed_at:
        raise RebuildFailed(f"rebuild-and-test of {spec.name} {outcome}: {failure}")
    logger.info("rebuild-and-test of %s passed in %.1f s", spec.name, times.total)
    return summary
