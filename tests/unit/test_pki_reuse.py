"""Idempotent PKI: what is reused, what is reissued and why, and what `groundup plan` reports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem

from blocks.artifact_store import ArtifactError, ArtifactStore
from groundup import pki
from groundup.artifacts import Outcome
from groundup.encryption import ensure_encryption_config
from groundup.kubeconfig import ensure_kubeconfig, kubeconfig_requests
from groundup.pki_plan import pki_plan
from groundup.spec import ClusterSpec, KeyAlgorithm

NLB = "k8s-api-1.elb.us-east-2.amazonaws.com"
PASSPHRASE = b"reuse-test"


def make_spec(**overrides) -> ClusterSpec:
    fields = {"name": "reuse", "master_count": 1, "worker_count": 2, "pki": {"key_algorithm": "ecdsa-p256"}}
    return ClusterSpec(**{**fields, **overrides})


def run_pki(spec: ClusterSpec, store: ArtifactStore, endpoint: str = NLB, external_ips=None, now=None) -> dict[str, Outcome]:
    """The pki phase without Prefect, in dependency order."""
    outcomes = {"ca": pki.ensure_ca(spec, store, now)}
    for name, request in pki.leaf_requests(spec, endpoint, external_ips or {}).items():
        outcomes[name] = pki.ensure_certificate(spec, request, store, now)
    for name, request in kubeconfig_requests(spec, endpoint).items():
        outcomes[f"{name}.kubeconfig"] = ensure_kubeconfig(spec, request, store)
    outcomes["encryption-config"] = ensure_encryption_config(store)
    return outcomes


def changed(outcomes: dict[str, Outcome]) -> set[str]:
    return {name for name, o in outcomes.items() if o.changed}


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(LocalFileSystem(basepath=str(tmp_path)), "reuse", PASSPHRASE)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_first_run_issues_everything_and_a_second_run_nothing(store, tmp_path):
    spec = make_spec()
    first = run_pki(spec, store)
    assert all(o.changed for o in first.values())
    before = snapshot(tmp_path)
    second = run_pki(spec, store)
    assert changed(second) == set()
    assert {o.reason for o in second.values()} == {"unchanged"}
    assert snapshot(tmp_path) == before
    assert [o.fingerprint for o in second.values()] == [o.fingerprint for o in first.values()]


def test_plan_lists_everything_before_the_first_run_and_nothing_after(store):
    spec = make_spec()
    plan = pki_plan(spec, NLB, {}, store)
    assert plan[0] == "pki/ca.pem: issue (not issued yet)"
    assert len(plan) == 1 + 9 + 6 + 1
    run_pki(spec, store)
    assert pki_plan(spec, NLB, {}, store) == []


def test_a_new_worker_issues_only_its_certificate_and_kubeconfig(store, tmp_path):
    run_pki(make_spec(), store)
    before = snapshot(tmp_path)
    bigger = make_spec(worker_count=3)
    assert pki_plan(bigger, NLB, {}, store) == [
        "pki/reuse-worker-2.pem: issue (not issued yet)",
        "kubeconfigs/reuse-worker-2.kubeconfig: write (embeds the new reuse-worker-2.pem)",
    ]
    assert changed(run_pki(bigger, store)) == {"reuse-worker-2", "reuse-worker-2.kubeconfig"}
    after = snapshot(tmp_path)
    assert set(after) - set(before) == {
        "reuse/pki/reuse-worker-2.pem",
        "reuse/pki/reuse-worker-2-key.pem",
        "reuse/kubeconfigs/reuse-worker-2.kubeconfig",
    }
    assert all(after[name] == content for name, content in before.items())


def test_a_new_external_ip_reissues_only_that_kubelet(store):
    run_pki(make_spec(), store)
    ips = {"reuse-worker-1": "18.1.2.3"}
    assert pki_plan(make_spec(), NLB, ips, store) == [
        "pki/reuse-worker-1.pem: issue (SANs changed: +ip:18.1.2.3)",
        "kubeconfigs/reuse-worker-1.kubeconfig: write (embeds the new reuse-worker-1.pem)",
    ]
    assert changed(run_pki(make_spec(), store, external_ips=ips)) == {"reuse-worker-1", "reuse-worker-1.kubeconfig"}


def test_a_new_nlb_name_reissues_the_apiserver_and_repoints_remote_kubeconfigs(store):
    run_pki(make_spec(), store)
    outcomes = run_pki(make_spec(), store, endpoint="k8s-api-2.elb.us-east-2.amazonaws.com")
    assert changed(outcomes) == {
        "master-kubernetes",
        "reuse-worker-0.kubeconfig",
        "reuse-worker-1.kubeconfig",
        "kube-proxy.kubeconfig",
        "admin.kubeconfig",
    }
    assert outcomes["master-kubernetes"].reason == (
        "SANs changed: +dns:k8s-api-2.elb.us-east-2.amazonaws.com -dns:k8s-api-1.elb.us-east-2.amazonaws.com"
    )
    assert outcomes["admin.kubeconfig"].reason == "server now https://k8s-api-2.elb.us-east-2.amazonaws.com:6443"


def test_a_new_ca_reissues_every_leaf_and_kubeconfig_but_keeps_the_encryption_key(store):
    run_pki(make_spec(), store)
    key_before = store.read("encryption-config.yaml")
    new_subject = make_spec().model_copy(update={"pki": make_spec().pki.model_copy(update={"ca_common_name": "Root 2"})})
    outcomes = run_pki(new_subject, store)
    assert changed(outcomes) == set(outcomes) - {"encryption-config"}
    assert outcomes["admin"].reason == "not signed by the current CA"
    assert store.read("encryption-config.yaml") == key_before


def test_switching_the_key_algorithm_reissues_everything(store):
    run_pki(make_spec(), store)
    rsa = ClusterSpec(name="reuse", master_count=1, worker_count=2, pki={"key_algorithm": KeyAlgorithm.rsa2048})
    plan = pki_plan(rsa, NLB, {}, store)
    assert plan[0] == "pki/ca.pem: issue (key algorithm changed to rsa-2048)"
    assert len(plan) == 16  # CA, 9 leaves, 6 kubeconfigs; the encryption key stays


def test_a_key_written_without_its_certificate_is_never_trusted(store):
    """A run that died between writing a new key and its certificate leaves a mismatched pair."""
    spec = make_spec()
    run_pki(spec, store)
    store.write_private_key("pki/admin-key.pem", pki.generate_private_key(KeyAlgorithm.ecdsa_p256))
    outcome = pki.ensure_certificate(spec, pki.admin_request(spec), store)
    assert (outcome.action, outcome.reason) == ("issued", "certificate does not match its private key")
    cert = pki.load_certificate(store.read("pki/admin.pem"))
    assert pki.same_public_key(cert, store.read_private_key("pki/admin-key.pem"))


def test_a_missing_key_or_certificate_reissues_the_pair(store, tmp_path):
    spec = make_spec()
    run_pki(spec, store)
    (tmp_path / "reuse/pki/kube-proxy.pem").unlink()
    (tmp_path / "reuse/pki/kube-scheduler-key.pem").unlink()
    (tmp_path / "reuse/pki/admin.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\ntruncat")
    assert changed(run_pki(spec, store)) == {
        "kube-proxy",
        "kube-scheduler",
        "admin",
        "kube-proxy.kubeconfig",
        "kube-scheduler.kubeconfig",
        "admin.kubeconfig",
    }


def test_expiring_certificates_are_renewed():
    spec = make_spec()
    request = pki.admin_request(spec)
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    ca_key = pki.generate_private_key(KeyAlgorithm.ecdsa_p256)
    ca_cert = pki.issue_ca(pki.ca_request(spec), spec.pki, ca_key, now)
    key = pki.generate_private_key(KeyAlgorithm.ecdsa_p256)
    cert = pki.issue_certificate(request, spec.pki, key, ca_cert, ca_key, now)
    hours = spec.pki.validity_hours
    assert pki.reissue_reason(request, spec.pki, cert, key, ca_cert, now + dt.timedelta(hours=hours * 0.8)) is None
    soon = pki.reissue_reason(request, spec.pki, cert, key, ca_cert, now + dt.timedelta(hours=hours * 0.95))
    assert soon and "renewal window" in soon
    late = pki.reissue_reason(request, spec.pki, cert, key, ca_cert, now + dt.timedelta(hours=hours + 1))
    assert late and late.startswith("expired")


def test_a_changed_subject_is_reported():
    spec = make_spec()
    key = pki.generate_private_key(KeyAlgorithm.ecdsa_p256)
    cert = pki.issue_ca(pki.ca_request(spec), spec.pki, key)
    other = pki.CertRequest("ca", "Kubernetes", "Other Org")
    assert pki.reissue_reason(other, spec.pki, cert, key).startswith("subject changed: ")


def test_an_undecryptable_key_stops_the_run_instead_of_replacing_the_ca(store, tmp_path):
    spec = make_spec()
    run_pki(spec, store)
    wrong = ArtifactStore(LocalFileSystem(basepath=str(tmp_path)), "reuse", b"not-the-passphrase")
    with pytest.raises(ArtifactError, match="wrong passphrase"):
        pki.ensure_ca(spec, wrong)


def test_leaves_need_the_ca_first(store):
    spec = make_spec()
    with pytest.raises(FileNotFoundError, match="issue the CA first"):
        pki.ensure_certificate(spec, pki.admin_request(spec), store)


def test_outcomes_hold_paths_and_fingerprints_never_key_material(store):
    for outcome in run_pki(make_spec(), store).values():
        text = repr(outcome.as_result())
        assert "PRIVATE KEY" not in text and "BEGIN" not in text
        assert all(p.startswith("reuse/") for p in outcome.paths)


def test_plan_before_the_nlb_exists_leaves_the_apiserver_undecided(store):
    run_pki(make_spec(), store)
    assert pki_plan(make_spec(), "", {}, store) == ["pki/master-kubernetes.pem: decided once the NLB DNS name is known"]
    fresh = ArtifactStore(store.filesystem, "fresh", PASSPHRASE)
    plan = pki_plan(make_spec(), "", {}, fresh)
    assert "pki/master-kubernetes.pem: issue (new CA)" in plan and len(plan) == 17
