"""Kubeconfigs of seed step 6, read back by a real kubectl and matched to the stored certificates."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem

from blocks.artifact_store import ArtifactStore, is_encrypted
from groundup import pki
from groundup.kubeconfig import (
    api_server_url,
    ensure_kubeconfig,
    kubeconfig_change,
    kubeconfig_requests,
    render_kubeconfig,
)
from groundup.spec import ClusterSpec

KUBECTL = str(Path(sys.executable).parent / "kubectl")
NLB = "k8s-api-1.elb.us-east-2.amazonaws.com"
PASSPHRASE = b"kubeconfig-test"

# name -> (user, server) as in the seed's `kubectl config set-credentials` / `--server`.
SEED_KUBECONFIGS = {
    "kc-worker-0": ("system:node:ip-172-31-0-20", f"https://{NLB}:6443"),
    "kc-worker-1": ("system:node:ip-172-31-0-21", f"https://{NLB}:6443"),
    "kube-proxy": ("system:kube-proxy", f"https://{NLB}:6443"),
    "kube-controller-manager": ("system:kube-controller-manager", "https://127.0.0.1:6443"),
    "kube-scheduler": ("system:kube-scheduler", "https://127.0.0.1:6443"),
    "admin": ("admin", f"https://{NLB}:6443"),
}


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return ClusterSpec(name="kc", master_count=1, worker_count=2, pki={"key_algorithm": "ecdsa-p256"})


@pytest.fixture(scope="module")
def store(spec, tmp_path_factory) -> ArtifactStore:
    store = ArtifactStore(LocalFileSystem(basepath=str(tmp_path_factory.mktemp("store"))), spec.name, PASSPHRASE)
    pki.ensure_ca(spec, store)
    for request in pki.leaf_requests(spec, NLB, {}).values():
        pki.ensure_certificate(spec, request, store)
    for request in kubeconfig_requests(spec, NLB).values():
        ensure_kubeconfig(spec, request, store)
    return store


def kubectl_view(store: ArtifactStore, name: str, tmp_path: Path) -> dict:
    path = tmp_path / f"{name}.kubeconfig"
    path.write_bytes(store.read(f"kubeconfigs/{name}.kubeconfig"))
    result = subprocess.run(
        [KUBECTL, "config", "view", "--raw", "-o", "json", "--kubeconfig", str(path)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(result.stdout)


def test_the_seed_kubeconfigs_are_all_there(spec):
    assert list(kubeconfig_requests(spec, NLB)) == list(SEED_KUBECONFIGS)


@pytest.mark.parametrize("name", list(SEED_KUBECONFIGS))
def test_kubectl_reads_the_kubeconfig_as_the_seed_builds_it(store, name, tmp_path):
    user, server = SEED_KUBECONFIGS[name]
    config = kubectl_view(store, name, tmp_path)
    assert config["current-context"] == "default"
    assert config["contexts"] == [{"name": "default", "context": {"cluster": "kc", "user": user}}]
    [cluster] = config["clusters"]
    assert cluster["name"] == "kc" and cluster["cluster"]["server"] == server
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == store.read("pki/ca.pem")
    [entry] = config["users"]
    assert entry["name"] == user
    cert_pem = base64.b64decode(entry["user"]["client-certificate-data"])
    assert cert_pem == store.read(f"pki/{name}.pem")
    key = store.read_private_key(f"pki/{name}-key.pem")
    assert base64.b64decode(entry["user"]["client-key-data"]) == pki.private_key_pem(key)
    cert = pki.load_certificate(cert_pem)
    assert cert.subject.rfc4514_string().startswith(f"CN={user},")


def test_kubectl_sees_the_current_context(store, tmp_path):
    path = tmp_path / "admin.kubeconfig"
    path.write_bytes(store.read("kubeconfigs/admin.kubeconfig"))
    result = subprocess.run(
        [KUBECTL, "config", "current-context", "--kubeconfig", str(path)], check=True, capture_output=True, text=True
    )
    assert result.stdout.strip() == "default"


def test_kubeconfigs_are_encrypted_at_rest(store, spec):
    root = Path(store.filesystem.basepath) / spec.name / "kubeconfigs"
    for path in root.iterdir():
        blob = path.read_bytes()
        assert is_encrypted(blob)
        assert b"client-key-data" not in blob and b"PRIVATE KEY" not in blob


def test_an_unchanged_kubeconfig_is_not_rewritten(store, spec):
    path = Path(store.filesystem.basepath) / "kc/kubeconfigs/admin.kubeconfig"
    before = path.read_bytes()
    outcome = ensure_kubeconfig(spec, kubeconfig_requests(spec, NLB)["admin"], store)
    assert (outcome.action, outcome.paths) == ("reused", ("kc/kubeconfigs/admin.kubeconfig",))
    assert path.read_bytes() == before


def test_render_is_deterministic_and_uses_the_given_names():
    text = render_kubeconfig("c", "https://h:6443", b"CA", "u", b"CERT", b"KEY")
    assert text == render_kubeconfig("c", "https://h:6443", b"CA", "u", b"CERT", b"KEY")
    assert "certificate-authority-data: Q0E=" in text and "client-key-data: S0VZ" in text


def test_changes_are_explained():
    old = render_kubeconfig("c", "https://a:6443", b"CA", "u", b"CERT", b"KEY")
    assert kubeconfig_change(None, old) == "not written yet"
    assert kubeconfig_change(old, old) is None
    assert kubeconfig_change(old, render_kubeconfig("c", "https://b:6443", b"CA", "u", b"CERT", b"KEY")) == "server now https://b:6443"
    assert kubeconfig_change(old, render_kubeconfig("c", "https://a:6443", b"CA2", "u", b"C2", b"K2")) == "new CA, new client certificate"
    assert kubeconfig_change("garbage: [", old) == "stored file is not a kubeconfig"


def test_api_server_url():
    assert api_server_url("nlb.example.com.") == "https://nlb.example.com:6443"
    with pytest.raises(ValueError, match="api_endpoint"):
        api_server_url(" ")
