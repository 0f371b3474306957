"""The nightly `rebuild-and-test` against a real Prefect server, a process worker and moto: subflows in
order, the report artifact, nothing cached across nightly runs, the cluster left up (or not) after a
failure, and subflows that take the cluster lock inside the nightly's own lock."""

from __future__ import annotations

import pytest
from prefect import flow

from deployments.concurrency import cluster_lock
from deployments.register import register
from groundup.spec import ClusterSpec
from tests.integration.awsprobe import owned
from tests.integration.test_deployments import small_spec
from tests.ui.stack import AWS_TEST_ENV, Fault, child_flow_runs, task_runs, wait_flow_run

pytestmark = pytest.mark.integration
PHASES = ["network", "compute"]


@pytest.fixture
def probe(proxy, monkeypatch):
    """boto3 in this process sees the same moto server as the flows."""
    for key, value in {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": proxy.endpoint}.items():
        monkeypatch.setenv(key, value)


def _nightly(spec: ClusterSpec) -> str:
    return next(d.id for d in register(spec) if d.name.startswith("rebuild-and-test"))


def _start(api, deployment_id: str, **parameters) -> dict:
    run = api.post(f"/deployments/{deployment_id}/create_flow_run",
                   json={"parameters": parameters}).raise_for_status().json()
    return wait_flow_run(api, run["id"], timeout=400)


def _report(api, cluster: str, run_id: str) -> str:
    body = {"artifacts": {"key": {"any_": [f"rebuild-{cluster}"]}, "flow_run_id": {"any_": [run_id]}}}
    found = api.post("/artifacts/filter", json=body).raise_for_status().json()
    assert len(found) == 1, found
    return found[0]["data"]


def test_two_nightly_runs_each_rebuild_from_nothing(stack, worker, probe) -> None:
    spec = small_spec("nightly-twice")
    deployment = _nightly(spec)
    with stack.api() as api:
        runs = [_start(api, deployment, phases=PHASES) for _ in range(2)]
        assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], [r["state"] for r in runs]
        for run in runs:
            children = child_flow_runs(api, run["id"])
            assert [c["flow_id"] for c in children] and len(children) == 2
            flows = [api.get(f"/flows/{c['flow_id']}").json()["name"] for c in children]
            assert flows == ["teardown-cluster", "build-cluster"]
            report = _report(api, spec.name, run["id"])
            assert report.startswith(f"# Nightly rebuild of `{spec.name}`: passed")
            assert "| teardown |" in report and "| build |" in report
        second_build = child_flow_runs(api, runs[1]["id"])[1]
        states = {t["name"]: t["state_name"] for t in task_runs(api, second_build["id"])}
        second_teardown = child_flow_runs(api, runs[1]["id"])[0]
        deleted = api.get(f"/flow_runs/{second_teardown['id']}").json()
    assert "Cached" not in states.values(), states
    assert any(n.startswith("create-vpc") for n in states) and len(states) > 15
    assert deleted["state_type"] == "COMPLETED"
    assert set(owned(spec.name)) >= {"vpcs", "instances", "load_balancers"}, "the second run rebuilt the cluster"


@pytest.mark.parametrize("teardown_on_failure", [False, True], ids=["left-up", "torn-down"])
def test_a_failed_build_leaves_the_cluster_up_unless_told(stack, worker, proxy, probe, teardown_on_failure) -> None:
    spec = small_spec(f"nightly-fails-{int(teardown_on_failure)}")
    deployment = _nightly(spec)
    proxy.inject(Fault(match=("Action=RunInstances", str(spec.workers[-1].private_ip), spec.name)))
    with stack.api() as api:
        run = _start(api, deployment, phases=PHASES, teardown_on_failure=teardown_on_failure)
        report = _report(api, spec.name, run["id"])
    assert run["state_type"] == "FAILED"
    assert "failed at build" in run["state"]["message"], run["state"]["message"]
    assert report.startswith(f"# Nightly rebuild of `{spec.name}`: failed at build")
    assert "UnauthorizedOperation" in report
    if teardown_on_failure:
        assert "torn down after the failure" in report and "| teardown after failure |" in report
        assert owned(spec.name) == {}
    else:
        assert "left up for inspection" in report
        assert set(owned(spec.name)) >= {"vpcs", "instances"}


@flow(name="lock-inner")
def _inner(cluster: str) -> str:
    with cluster_lock(cluster, "fail") as holder:
        return "nested" if holder is None else "acquired"


@flow(name="lock-outer")
def _outer(cluster: str) -> str:
    with cluster_lock(cluster, "fail"):
        return _inner(cluster)


def test_subflows_take_the_cluster_lock_inside_their_parents(stack) -> None:
    assert _outer("lock-nesting") == "nested"
    assert _inner("lock-nesting") == "acquired", "the lock was released when the parent ended"
