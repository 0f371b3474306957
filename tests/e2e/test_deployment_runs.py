"""The deployments as a user drives them on the sandbox's own Prefect server and process worker:
`groundup deploy`, the nightly schedule in `prefect deployment ls`, `prefect deployment run ... --watch`,
and two runs for one cluster that never overlap."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml

from tests.e2e.conftest import REPO, SPEC, Sandbox
from tests.ui.stack import RetryingClient, task_runs, wait_flow_run

NAME = yaml.safe_load(SPEC.read_text())["name"]


def _run(sandbox: Sandbox, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, env=sandbox.env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def api(sandbox: Sandbox):
    client = RetryingClient(base_url=sandbox.env["PREFECT_API_URL"], timeout=30)
    yield client
    client.close()


@pytest.fixture(scope="module")
def deployed(sandbox: Sandbox, api) -> dict[str, dict]:
    """`groundup deploy` with the default nightly schedule; put back unscheduled afterwards, its runs gone."""
    done = _run(sandbox, "groundup.cli", "deploy", str(SPEC), "--timezone", "UTC")
    assert done.returncode == 0, done.stderr[-3000:]
    found = {flow: api.get(f"/deployments/name/{flow}/{NAME}").raise_for_status().json()
             for flow in ("build-cluster", "teardown-cluster", "smoke-test", "rebuild-and-test")}
    yield found
    assert _run(sandbox, "groundup.cli", "deploy", str(SPEC), "--nightly", "off").returncode == 0
    scheduled = api.post("/flow_runs/filter", json={
        "deployments": {"id": {"any_": [found["rebuild-and-test"]["id"]]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}).json()
    for run in scheduled:
        api.delete(f"/flow_runs/{run['id']}")


def test_deployment_ls_shows_the_nightly_schedule_and_the_server_plans_its_runs(sandbox, api, deployed) -> None:
    listed = _run(sandbox, "prefect", "deployment", "ls", "-o", "json", timeout=120)
    assert listed.returncode == 0, listed.stderr
    entries = {d["id"]: d for d in json.loads(listed.stdout)}
    nightly = entries[deployed["rebuild-and-test"]["id"]]
    assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in nightly["schedules"]] == [("0 2 * * *", "UTC")]
    assert all(not entries[d["id"]]["schedules"] for flow, d in deployed.items() if flow != "rebuild-and-test")
    deadline = time.monotonic() + 120
    upcoming: list[dict] = []
    while time.monotonic() < deadline and not upcoming:
        upcoming = api.post("/flow_runs/filter", json={
            "deployments": {"id": {"any_": [nightly["id"]]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}).json()
        time.sleep(1)
    assert upcoming, "the sandbox's server created no runs of the nightly deployment"
    assert all("T02:00:00" in r["expected_start_time"] for r in upcoming), [r["expected_start_time"] for r in upcoming]


def test_prefect_deployment_run_watch_builds_the_cluster(sandbox, api, deployed) -> None:
    watched = _run(sandbox, "prefect", "deployment", "run", f"build-cluster/{NAME}", "--watch", timeout=900)
    assert watched.returncode == 0, (watched.stdout[-3000:], watched.stderr[-3000:])
    assert "Completed" in watched.stdout, watched.stdout[-3000:]
    runs = api.post("/flow_runs/filter", json={
        "deployments": {"id": {"any_": [deployed["build-cluster"]["id"]]}},
        "sort": "START_TIME_DESC", "limit": 1}).json()
    assert runs[0]["state_type"] == "COMPLETED"
    phases = {t["name"].split("-")[0] for t in task_runs(api, runs[0]["id"])}
    assert {"create", "distribute", "bootstrap", "smoke"} <= phases, phases


def test_two_runs_for_one_cluster_do_not_overlap(sandbox, api, deployed) -> None:
    build = deployed["build-cluster"]["id"]
    runs = [api.post(f"/deployments/{build}/create_flow_run", json={}).raise_for_status().json() for _ in range(2)]
    done = [wait_flow_run(api, r["id"], timeout=900) for r in runs]
    assert [r["state_type"] for r in done] == ["COMPLETED", "COMPLETED"], [r["state"] for r in done]
    spans = []
    for run in done:
        tasks = task_runs(api, run["id"])
        assert tasks, run["name"]
        spans.append((min(t["start_time"] or t["expected_start_time"] for t in tasks),
                      max(t["end_time"] for t in tasks), run["name"]))
    first, second = sorted(spans)
    assert first[1] <= second[0], f"{first[2]} worked until {first[1]}, {second[2]} started at {second[0]}"
