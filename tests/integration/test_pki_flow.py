"""The pki phase under a real Prefect server: concurrent tasks, idempotent re-runs, and no secret in
logs, persisted results or stored artifacts."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest
from prefect import flow

from blocks.artifact_store import default_basepath, get_store
from groundup.artifacts import node_artifacts
from groundup.encryption import encryption_key
from groundup.spec import ClusterSpec
from tasks.pki import pki_phase

pytestmark = pytest.mark.integration
NLB = "pki-flow-api-0123456789.elb.us-east-2.amazonaws.com"
EXTERNAL_IPS = {"pki-flow-worker-0": "3.15.0.20", "pki-flow-worker-1": "3.15.0.21", "pki-flow-worker-2": None}
PLAIN_KEY_BLOCK = re.compile(rb"-----BEGIN (RSA |EC )?PRIVATE KEY-----")
# base64 of "-----BEGIN PRIVATE KEY" / "-----BEGIN RSA PRIVATE KEY" / "-----BEGIN EC PRIVATE KEY", as kubeconfigs embed them
PLAIN_KEY_B64 = [base64.b64encode(b"-----BEGIN " + kind + b"PRIVATE KEY")[:28] for kind in (b"", b"RSA ", b"EC ")]


@flow(name="pki-phase-test")
def pki_flow(spec: ClusterSpec, api_endpoint: str, external_ips: dict[str, str | None]) -> dict[str, str]:
    return pki_phase(spec, api_endpoint, external_ips)


def run(spec: ClusterSpec, external_ips: dict[str, str | None] = EXTERNAL_IPS):
    state = pki_flow(spec, NLB, external_ips, return_state=True)
    assert state.is_completed(), state
    return state.result(), state.state_details.flow_run_id


def flow_logs(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
    return [log.message for log in logs]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def persisted_bytes(path: Path) -> bytes:
    """A persisted result record as stored, plus its decoded payload."""
    raw = path.read_bytes()
    try:
        payload = base64.b64decode(json.loads(raw)["result"])
    except (ValueError, KeyError, TypeError):
        return raw
    return raw + b"\n" + payload


def result_files() -> list[Path]:
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    roots = {Path(os.environ["PREFECT_HOME"]) / "storage", Path(PREFECT_LOCAL_STORAGE_PATH.value())}
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def first_run(prefect_harness):
    spec = ClusterSpec(name="pki-flow")
    paths, flow_run_id = run(spec)
    return spec, paths, flow_run_id


def test_the_phase_returns_the_storage_path_of_every_artifact(first_run):
    spec, paths, _ = first_run
    assert len(paths) == 2 * 13 + 7 + 1
    assert paths["pki/ca.pem"] == "pki-flow/pki/ca.pem"
    assert paths["kubeconfigs/admin.kubeconfig"] == "pki-flow/kubeconfigs/admin.kubeconfig"
    assert paths["encryption-config.yaml"] == "pki-flow/encryption-config.yaml"
    for node in spec.nodes:
        assert set(node_artifacts(node)) <= set(paths), node.name
    root = default_basepath()
    assert all((root / path).is_file() for path in paths.values())


def test_every_task_logged_what_it_did(first_run):
    _, _, flow_run_id = first_run
    logs = flow_logs(flow_run_id)
    assert "ca: issued (not issued yet)" in logs
    assert "pki-flow-worker-2: issued (not issued yet)" in logs
    assert "admin.kubeconfig: written (not written yet)" in logs
    assert any(line.startswith("pki: 21 checked, 21 written (ca, encryption-config, ") for line in logs)


def test_no_private_key_or_encryption_key_in_logs_results_or_artifacts(first_run):
    spec, _, flow_run_id = first_run
    from blocks.artifact_store import get_store

    key = encryption_key(get_store(spec.name).read("encryption-config.yaml").decode())
    forbidden = [key.encode(), base64.b64decode(key), *PLAIN_KEY_B64]

    logs = "\n".join(flow_logs(flow_run_id)).encode()
    assert logs and not PLAIN_KEY_BLOCK.search(logs) and not any(f in logs for f in forbidden)

    results = result_files()
    assert results, "the tasks persisted no results"
    joined = b"\n".join(persisted_bytes(p) for p in results)
    assert b"pki-flow/pki/ca.pem" in joined
    assert b"PRIVATE KEY" not in joined and not any(f in joined for f in forbidden)

    artifacts = snapshot(default_basepath() / spec.name)
    assert len(artifacts) == 34
    for name, blob in artifacts.items():
        assert not PLAIN_KEY_BLOCK.search(blob), name
        assert not any(f in blob for f in forbidden), name


def test_a_second_run_reissues_nothing(first_run):
    spec, paths, _ = first_run
    root = default_basepath() / spec.name
    before = snapshot(root)
    again, flow_run_id = run(spec)
    assert again == paths
    assert snapshot(root) == before
    logs = flow_logs(flow_run_id)
    assert "pki: every step finds what the spec asks for; nothing to change" in logs
    assert not any(line.startswith("ca: ") for line in logs), "the per-artifact tasks did not run"


def test_a_rewritten_encryption_config_layout_runs_the_tasks(first_run):
    """The one-task check says what the tasks would do: a config whose layout differs (same key) is written."""
    spec, paths, _ = first_run
    store = get_store(spec.name)
    original = store.read("encryption-config.yaml")
    store.write("encryption-config.yaml", original.replace(b"resources:", b"resources: "), secret=True)
    again, flow_run_id = run(spec)
    assert again == paths
    assert store.read("encryption-config.yaml") == original
    logs = flow_logs(flow_run_id)
    assert "pki: 1 to change: encryption-config.yaml: write (layout updated, same key)" in logs
    assert "encryption-config: written (layout updated, same key)" in logs


def test_a_changed_worker_set_reissues_only_what_changed(first_run):
    spec, _, _ = first_run
    root = default_basepath() / spec.name
    before = snapshot(root)
    bigger = spec.model_copy(update={"worker_count": 4})
    ips = {**EXTERNAL_IPS, "pki-flow-worker-2": "3.15.0.22"}
    paths, flow_run_id = run(bigger, ips)
    after = snapshot(root)
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed == {
        "pki/pki-flow-worker-2.pem",
        "pki/pki-flow-worker-2-key.pem",
        "kubeconfigs/pki-flow-worker-2.kubeconfig",
        "pki/pki-flow-worker-3.pem",
        "pki/pki-flow-worker-3-key.pem",
        "kubeconfigs/pki-flow-worker-3.kubeconfig",
    }
    assert "pki-flow-worker-2: issued (SANs changed: +ip:3.15.0.22)" in flow_logs(flow_run_id)
    assert "kubeconfigs/pki-flow-worker-3.kubeconfig" in paths
