"""Deployments against a real `prefect server start` (scheduler on) with a process worker and moto:
idempotent registration, the nightly schedule and its upcoming runs, the spec as a described form,
and the per-cluster lock between two runs of one cluster (wait and fail)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from deployments.register import DEFAULT_NIGHTLY, WORK_POOL, register
from groundup.concurrency import limit_name
from groundup.spec import ClusterSpec, parse_spec
from tests.ui.stack import Fault, child_flow_runs, task_runs, wait_flow_run

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def small_spec(name: str) -> ClusterSpec:
    data = yaml.safe_load((REPO / "clusters" / "sandbox.yaml").read_text())
    return parse_spec({**data, "name": name, "master_count": 1, "worker_count": 2})


def test_deploying_twice_keeps_one_pool_and_four_deployments(stack) -> None:
    spec = small_spec("deploy-twice")
    first = register(spec, timezone="Europe/London")
    second = register(spec, timezone="Europe/London")
    assert [(d.name, d.id) for d in first] == [(d.name, d.id) for d in second]
    assert sorted(d.name.split("/")[0] for d in second) == [
        "build-cluster", "rebuild-and-test", "smoke-test", "teardown-cluster"]
    with stack.api() as api:
        found = api.post("/deployments/filter", json={"deployments": {"tags": {"all_": [spec.name]}}}).json()
        assert len(found) == 4
        schedules = {d["id"]: d["schedules"] for d in found}
        nightly = schedules[next(r.id for r in second if r.name.startswith("rebuild-and-test"))]
        assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in nightly] == [
            (DEFAULT_NIGHTLY, "Europe/London")]
        assert sum(len(s) for s in schedules.values()) == 1, "only the nightly rebuild is scheduled"
        pool = api.get(f"/work_pools/{WORK_POOL}").raise_for_status().json()
        assert pool["type"] == "process"
        assert api.get(f"/v2/concurrency_limits/{limit_name(spec.name)}").raise_for_status().json()["limit"] == 1


def test_deployment_ls_shows_the_nightly_schedule_and_the_server_creates_its_runs(stack) -> None:
    spec = small_spec("nightly-schedule")
    rebuild = next(d for d in register(spec, nightly="30 3 * * *", timezone="UTC") if d.name.startswith("rebuild"))
    listed = subprocess.run([sys.executable, "-m", "prefect", "deployment", "ls", "-o", "json"],
                            env=stack.env(), capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    entry = next(d for d in json.loads(listed.stdout) if d["id"] == rebuild.id)
    assert [s["schedule"]["cron"] for s in entry["schedules"]] == ["30 3 * * *"], entry
    with stack.api() as api:
        deadline = time.monotonic() + 60
        upcoming: list[dict] = []
        while time.monotonic() < deadline and not upcoming:
            upcoming = api.post("/flow_runs/filter", json={
                "deployments": {"id": {"any_": [rebuild.id]}},
                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}).json()
            time.sleep(1)
    assert upcoming, "the scheduler created no runs of the nightly deployment"
    starts = sorted(r["expected_start_time"] for r in upcoming)
    assert all("T03:30:00" in s for s in starts), starts
    assert len(set(s[:10] for s in starts)) == len(starts), "one run per night"


def test_the_run_form_describes_every_spec_field(stack) -> None:
    spec = small_spec("form-fields")
    build = next(d for d in register(spec) if d.name.startswith("build-cluster"))
    with stack.api() as api:
        schema = api.get(f"/deployments/{build.id}").raise_for_status().json()["parameter_openapi_schema"]
    cluster = schema["definitions"]["ClusterSpec"]["properties"]
    missing = [name for name in ClusterSpec.model_fields if not cluster[name].get("description")]
    assert not missing, f"fields without a description in the Run form: {missing}"
    assert schema["properties"]["spec"]["$ref"].endswith("/ClusterSpec") or "allOf" in schema["properties"]["spec"]


def _run(api, deployment_id: str, **parameters) -> dict:
    return api.post(f"/deployments/{deployment_id}/create_flow_run",
                    json={"parameters": parameters}).raise_for_status().json()


def _logs(api, run_id: str) -> str:
    body = {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
    return "\n".join(line["message"] for line in api.post("/logs/filter", json=body).json())


def _reached(fault: Fault, api, run_id: str, timeout: float = 120) -> None:
    """Wait until the run is held at the fault; fail at once if it ended first."""
    deadline = time.monotonic() + timeout
    while not fault.reached.wait(1):
        run = api.get(f"/flow_runs/{run_id}").json()
        assert run["state_type"] not in ("FAILED", "CRASHED", "COMPLETED"), run["state"]
        assert time.monotonic() < deadline, "the first run never reached the held AWS call"


def _rebuild(spec: ClusterSpec) -> str:
    return next(d.id for d in register(spec, nightly=None) if d.name.startswith("rebuild"))


def test_a_second_run_for_a_cluster_waits_for_the_first(stack, worker, proxy) -> None:
    spec = small_spec("lock-wait")
    deployment = _rebuild(spec)
    hold = threading.Event()
    fault = proxy.inject(Fault(match=("Action=CreateVpc", spec.name), hold=hold))
    with stack.api() as api:
        first = _run(api, deployment, phases=["network"])
        _reached(fault, api, first["id"])
        second = _run(api, deployment, phases=["network"])
        deadline = time.monotonic() + 120
        while "waiting for it" not in _logs(api, second["id"]) and time.monotonic() < deadline:
            time.sleep(1)
        holder = api.get(f"/flow_runs/{first['id']}").json()
        assert f"'{holder['name']}'" in _logs(api, second["id"]), "the waiting run names the holder"
        assert child_flow_runs(api, second["id"]) == [], "the second run started work while the first held it"
        hold.set()
        done = [wait_flow_run(api, r["id"], timeout=300) for r in (first, second)]
        assert [r["state_type"] for r in done] == ["COMPLETED", "COMPLETED"], [r["state"] for r in done]
        first_children = child_flow_runs(api, first["id"])
        second_children = child_flow_runs(api, second["id"])
    assert [c["name"] for c in first_children] and len(second_children) == 2
    assert max(c["end_time"] for c in first_children) <= min(c["start_time"] for c in second_children)


def test_a_run_that_may_not_wait_fails_naming_the_holder(stack, worker, proxy) -> None:
    spec = small_spec("lock-fail")
    deployment = _rebuild(spec)
    hold = threading.Event()
    fault = proxy.inject(Fault(match=("Action=CreateVpc", spec.name), hold=hold))
    with stack.api() as api:
        first = _run(api, deployment, phases=["network"])
        try:
            _reached(fault, api, first["id"])
            second = wait_flow_run(api, _run(api, deployment, phases=["network"], lock="fail")["id"])
        finally:
            hold.set()
        holder = api.get(f"/flow_runs/{first['id']}").json()
        assert second["state_type"] == "FAILED"
        message = second["state"]["message"]
        assert "ClusterBusy" in message or "being changed by" in message, message
        assert f"'{holder['name']}'" in message and first["id"] in message, message
        assert child_flow_runs(api, second["id"]) == []
        assert wait_flow_run(api, first["id"])["state_type"] == "COMPLETED"
