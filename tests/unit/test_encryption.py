"""The EncryptionConfiguration of seed step 7: shape, key, and a key that never changes once made."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from prefect.filesystems import LocalFileSystem

from blocks.artifact_store import ArtifactStore, is_encrypted
from groundup.encryption import encryption_key, ensure_encryption_config, generate_encryption_key, render_encryption_config


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(LocalFileSystem(basepath=str(tmp_path)), "enc", b"encryption-test")


def test_config_has_aescbc_key1_then_identity():
    key = generate_encryption_key()
    config = yaml.safe_load(render_encryption_config(key))
    assert config == {
        "kind": "EncryptionConfiguration",
        "apiVersion": "apiserver.config.k8s.io/v1",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [{"aescbc": {"keys": [{"name": "key1", "secret": key}]}}, {"identity": {}}],
            }
        ],
    }


def test_keys_are_32_random_bytes_in_base64():
    keys = {generate_encryption_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(len(base64.b64decode(k, validate=True)) == 32 for k in keys)


@pytest.mark.parametrize("bad", ["not base64!", base64.b64encode(b"short").decode()])
def test_a_bad_key_is_refused(bad):
    with pytest.raises(ValueError, match="aescbc key"):
        render_encryption_config(bad)


def test_the_key_reads_back():
    key = generate_encryption_key()
    assert encryption_key(render_encryption_config(key)) == key
    with pytest.raises(ValueError, match="EncryptionConfiguration"):
        encryption_key("kind: Pod\n")


def test_the_key_is_made_once_and_kept(store, tmp_path):
    first = ensure_encryption_config(store)
    assert (first.action, first.paths) == ("written", ("enc/encryption-config.yaml",))
    stored = (tmp_path / "enc/encryption-config.yaml").read_bytes()
    key = encryption_key(store.read("encryption-config.yaml").decode())
    for _ in range(3):
        assert ensure_encryption_config(store).action == "reused"
    assert (tmp_path / "enc/encryption-config.yaml").read_bytes() == stored
    assert encryption_key(store.read("encryption-config.yaml").decode()) == key


def test_the_config_is_encrypted_at_rest(store, tmp_path):
    ensure_encryption_config(store)
    key = encryption_key(store.read("encryption-config.yaml").decode())
    blob = (tmp_path / "enc/encryption-config.yaml").read_bytes()
    assert is_encrypted(blob)
    assert key.encode() not in blob and base64.b64decode(key) not in blob and b"aescbc" not in blob


def test_a_damaged_config_stops_the_run_instead_of_losing_the_key(store):
    store.write("encryption-config.yaml", b"kind: EncryptionConfiguration\nresources: []\n", secret=True)
    with pytest.raises(ValueError, match="aescbc key1"):
        ensure_encryption_config(store)
