"""Retry clicked in a real browser: a build-cluster deployment run, executed by a process worker against
moto, fails once in a late step (one worker's RunInstances refused by the fault proxy); headless
Chromium opens the Prefect UI, finds the failed run on the deployment's page, presses Retry, and the
run completes on a *different* worker (its own PREFECT_HOME, as on another machine) because results
sit in the result store next to the artifact store. Completed tasks are Cached; only the failed
and the not-yet-run ones execute."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blocks.setup import configure_local_store, remove_store_block
from deployments.register import WORK_POOL, register
from deployments.result_storage import RESULTS_FOLDER, configure_result_storage
from groundup.spec import parse_spec
from tests.ui.pages import PrefectUI, RunForm
from tests.ui.retry_checks import check_retry
from tests.ui.stack import AWS_TEST_ENV, Fault, FaultProxy, prefect_stack, task_runs, wait_flow_run

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PHASES = ["network", "compute"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with prefect_stack(tmp_path_factory.mktemp("prefect-ui")) as running:
        yield running


@pytest.fixture
def shared_store(stack, tmp_path):
    """The artifact store as a saved block (what a team points at S3), and results next to it."""
    configure_local_store(tmp_path / "shared-store")
    yield tmp_path / "shared-store"
    remove_store_block()


@pytest.fixture(scope="module")
def proxy(moto_server):
    moto_server.reset()
    running = FaultProxy(moto_server.endpoint).start()
    yield running
    running.stop()


def test_retry_clicked_in_the_ui_reruns_only_the_failed_and_later_tasks(
        stack, proxy, shared_store, browser_page, screenshots, tmp_path) -> None:
    data = yaml.safe_load((REPO / "clusters" / "sandbox.yaml").read_text())
    spec = parse_spec({**data, "name": "ui-retry", "master_count": 1, "worker_count": 2})
    shared = shared_store
    results = configure_result_storage()
    build = next(d for d in register(spec, result_storage=results) if d.name.startswith("build-cluster"))
    late_node = spec.workers[-1]
    fault = proxy.inject(Fault(match=("Action=RunInstances", str(late_node.private_ip), spec.name)))

    def worker(name: str) -> int:
        home = tmp_path / name
        env = {**AWS_TEST_ENV, "AWS_ENDPOINT_URL": proxy.endpoint, "GROUNDUP_ARTIFACTS": str(home / "artifacts"),
               "PREFECT_HOME": str(home / "prefect")}
        return stack.start_worker(name, WORK_POOL, env, tmp_path / f"{name}.log")

    first_worker = worker("worker-a")
    with stack.api() as api:
        run = api.post(f"/deployments/{build.id}/create_flow_run",
                       json={"parameters": {"spec": spec.model_dump(mode="json"), "phases": PHASES}}
                       ).raise_for_status().json()
        failed = wait_flow_run(api, run["id"])
        assert failed["state_type"] == "FAILED", failed["state"]
        assert fault.hits == 1 and late_node.short_name in failed["state"]["message"], failed["state"]["message"]
        first_attempt = task_runs(api, run["id"])
        stack.stop_worker(first_worker)
        worker("worker-b")

        ui = PrefectUI(browser_page, stack.ui_url)
        deployment_page = ui.deployment(build.id)
        assert deployment_page.runs_in_state("Failed") == [failed["name"]]
        page = deployment_page.open_run(failed["name"])
        assert page.run_id == run["id"] and page.state() == "Failed"
        page.screenshot_graph(screenshots / "build-cluster-failed.png")
        page.retry()
        assert page.wait_for_state("Completed", timeout=300) == "Completed"
        page.screenshot_graph(screenshots / "build-cluster-retried.png")

        done = api.get(f"/flow_runs/{run['id']}").raise_for_status().json()
        assert done["state_type"] == "COMPLETED" and done["run_count"] == 2
        failed_before, executed = check_retry(first_attempt, task_runs(api, run["id"]))

    assert failed_before == {f"create-instance-{late_node.short_name}"}
    assert any(name.startswith("describe-nodes") for name in executed), "a task after the failure ran on retry"
    stored = list((shared / RESULTS_FOLDER).iterdir())
    assert stored, "task results were persisted to the shared result store"
    assert not [p.name for p in stored if b"PRIVATE KEY" in p.read_bytes()], "results hold references only"
    assert (screenshots / "build-cluster-retried.png").stat().st_size > 10_000


def test_the_run_form_shows_the_spec_fields_with_their_descriptions(stack, browser_page, screenshots) -> None:
    from groundup.spec import ClusterSpec

    data = yaml.safe_load((REPO / "clusters" / "sandbox.yaml").read_text())
    spec = parse_spec({**data, "name": "ui-form"})
    build = next(d for d in register(spec) if d.name.startswith("build-cluster"))
    form = RunForm(PrefectUI(browser_page, stack.ui_url), build.id)
    wanted = [ClusterSpec.model_fields[f].description for f in ("master_count", "vpc_cidr", "instance_type")]
    missing = [text for text in wanted if not form.shows(text)]
    browser_page.screenshot(path=str(screenshots / "build-cluster-run-form.png"), full_page=True)
    assert not missing, f"descriptions not shown in the Run form: {missing}"
