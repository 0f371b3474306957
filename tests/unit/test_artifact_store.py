"""The artifact store on a LocalFileSystem: layout, encryption at rest, atomic writes, the per-node map."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from prefect.filesystems import LocalFileSystem

from blocks import artifact_store
from blocks.artifact_store import ArtifactError, ArtifactNotFound, ArtifactStore, decrypt, encrypt, is_encrypted
from groundup import admin_kubeconfig, pki
from groundup.artifacts import node_artifacts, node_file_bytes, node_file_mode, node_file_name
from groundup.spec import ClusterSpec, KeyAlgorithm

PASSPHRASE = b"store-test-passphrase"


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(LocalFileSystem(basepath=str(tmp_path / "artifacts")), "demo", PASSPHRASE)


def test_plain_and_secret_round_trip(store, tmp_path):
    assert store.write("pki/ca.pem", b"public") == "demo/pki/ca.pem"
    assert store.write("kubeconfigs/admin.kubeconfig", b"top secret", secret=True) == "demo/kubeconfigs/admin.kubeconfig"
    assert store.read("pki/ca.pem") == b"public"
    assert store.read("kubeconfigs/admin.kubeconfig") == b"top secret"
    on_disk = (tmp_path / "artifacts/demo/kubeconfigs/admin.kubeconfig").read_bytes()
    assert is_encrypted(on_disk) and b"top secret" not in on_disk


def test_files_are_owner_only_and_directories_0700(store, tmp_path):
    store.write("pki/ca.pem", b"x")
    root = tmp_path / "artifacts"
    assert stat.S_IMODE((root / "demo/pki/ca.pem").stat().st_mode) == 0o600
    for directory in (root, root / "demo", root / "demo/pki"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_missing_artifacts_raise_not_found(store):
    assert not store.exists("pki/nothing.pem")
    with pytest.raises(ArtifactNotFound):
        store.read("pki/nothing.pem")
    with pytest.raises(FileNotFoundError):
        store.read_private_key("pki/nothing-key.pem")
    store.write("pki/there.pem", b"x")
    assert store.exists("pki/there.pem")


@pytest.mark.parametrize("relpath", ["../other/pki/ca.pem", "pki/../../x", "/", "", "pki/./ca.pem"])
def test_paths_cannot_leave_the_cluster(store, relpath):
    with pytest.raises(ValueError, match="relative"):
        store.path(relpath)


def test_cluster_names_are_checked(tmp_path):
    with pytest.raises(ValueError, match="cluster name"):
        ArtifactStore(LocalFileSystem(basepath=str(tmp_path)), "../etc", PASSPHRASE)
    with pytest.raises(ValueError, match="passphrase"):
        ArtifactStore(LocalFileSystem(basepath=str(tmp_path)), "demo", b"")


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(store, tmp_path, monkeypatch):
    store.write("pki/admin.pem", b"old")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(artifact_store.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.write("pki/admin.pem", b"new")
    monkeypatch.undo()
    assert store.read("pki/admin.pem") == b"old"
    assert [p.name for p in (tmp_path / "artifacts/demo/pki").iterdir()] == ["admin.pem"]


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_private_keys_are_pkcs8_encrypted_and_openssl_needs_the_passphrase(store, tmp_path, algorithm):
    key = pki.generate_private_key(algorithm)
    store.write_private_key("pki/admin-key.pem", key)
    path = tmp_path / "artifacts/demo/pki/admin-key.pem"
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(pem, password=None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(pem, password=b"wrong")
    wrong = subprocess.run(["openssl", "pkey", "-in", str(path), "-passin", "pass:wrong", "-noout"], capture_output=True)
    assert wrong.returncode != 0
    right = subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-passin", f"pass:{PASSPHRASE.decode()}", "-pubout"],
        capture_output=True, check=True,
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert right.stdout == public
    assert pki.same_public_key(
        pki.issue_ca(pki.ca_request(ClusterSpec()), ClusterSpec().pki, store.read_private_key("pki/admin-key.pem")),
        key,
    )


def test_a_store_with_another_passphrase_cannot_read_secrets(store, tmp_path):
    store.write_private_key("pki/ca-key.pem", pki.generate_private_key(KeyAlgorithm.ecdsa_p256))
    store.write("encryption-config.yaml", b"secret", secret=True)
    other = ArtifactStore(store.filesystem, "demo", b"another passphrase")
    with pytest.raises(ArtifactError, match="wrong passphrase"):
        other.read_private_key("pki/ca-key.pem")
    with pytest.raises(ArtifactError, match="wrong passphrase"):
        other.read("encryption-config.yaml")


def test_a_plaintext_key_in_the_store_is_refused(store, tmp_path):
    key = pki.generate_private_key(KeyAlgorithm.ecdsa_p256)
    store.write("pki/admin-key.pem", pki.private_key_pem(key))
    with pytest.raises(ArtifactError, match="plaintext"):
        store.read_private_key("pki/admin-key.pem")


def test_encrypt_is_salted_and_detects_tampering():
    first, second = encrypt(b"data", b"p"), encrypt(b"data", b"p")
    assert first != second and decrypt(first, b"p") == b"data"
    with pytest.raises(ArtifactError):
        decrypt(first[:-3] + b"xyz", b"p")


def test_every_node_gets_the_files_of_its_role():
    spec = ClusterSpec(name="demo")
    worker, master = spec.workers[1], spec.masters[2]
    assert node_artifacts(worker) == [
        "pki/ca.pem",
        "pki/demo-worker-1.pem",
        "pki/demo-worker-1-key.pem",
        "kubeconfigs/demo-worker-1.kubeconfig",
        "kubeconfigs/kube-proxy.kubeconfig",
    ]
    assert node_artifacts(master) == [
        "pki/ca.pem",
        "pki/ca-key.pem",
        "pki/master-kubernetes.pem",
        "pki/master-kubernetes-key.pem",
        "pki/service-account.pem",
        "pki/service-account-key.pem",
        "pki/etcd-master-2.pem",
        "pki/etcd-master-2-key.pem",
        "kubeconfigs/kube-controller-manager.kubeconfig",
        "kubeconfigs/kube-scheduler.kubeconfig",
        "kubeconfigs/admin.kubeconfig",
        "encryption-config.yaml",
    ]
    assert node_file_name("kubeconfigs/demo-worker-1.kubeconfig") == "demo-worker-1.kubeconfig"
    modes = {path: node_file_mode(path) for path in node_artifacts(master)}
    assert {p for p, m in modes.items() if m == 0o644} == {"pki/ca.pem", "pki/master-kubernetes.pem", "pki/service-account.pem", "pki/etcd-master-2.pem"}


def test_nodes_receive_keys_decrypted(store):
    key = pki.generate_private_key(KeyAlgorithm.rsa2048)
    store.write_private_key("pki/ca-key.pem", key)
    store.write("encryption-config.yaml", b"config", secret=True)
    assert node_file_bytes(store, "pki/ca-key.pem") == pki.private_key_pem(key)
    assert node_file_bytes(store, "pki/ca-key.pem").startswith(b"-----BEGIN PRIVATE KEY-----")
    assert node_file_bytes(store, "encryption-config.yaml") == b"config"


def test_admin_kubeconfig_is_exported_owner_only(store, tmp_path, monkeypatch):
    monkeypatch.setattr(artifact_store, "get_store", lambda cluster: store)
    spec = ClusterSpec(name="demo")
    with pytest.raises(FileNotFoundError, match="run build-cluster first"):
        admin_kubeconfig.export_admin_kubeconfig(spec, tmp_path / "out.kubeconfig")
    store.write("kubeconfigs/admin.kubeconfig", b"apiVersion: v1\n", secret=True)
    dest = tmp_path / "new-dir" / "demo.kubeconfig"
    dest.parent.mkdir(mode=0o755)
    dest.write_bytes(b"stale")
    os.chmod(dest, 0o644)
    assert admin_kubeconfig.export_admin_kubeconfig(spec, dest) == dest
    assert dest.read_bytes() == b"apiVersion: v1\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    default = admin_kubeconfig.export_admin_kubeconfig(spec, None)
    assert default == tmp_path / "home/.kube/demo.kubeconfig"
    assert stat.S_IMODE(default.parent.stat().st_mode) == 0o700
