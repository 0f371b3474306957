"""Seed step 7: the EncryptionConfiguration that makes the apiserver encrypt Secrets in etcd.

`aescbc` with `key1` (32 random bytes, base64) first, then `identity` so Secrets written before
encryption stay readable. The key is made once per cluster and never replaced: a new key would make
every stored Secret unreadable. Pure: no Prefect.
"""

from __future__ import annotations

import base64
import binascii
import secrets

import yaml

from groundup.artifacts import ENCRYPTION_CONFIG, Outcome, Store, read_optional

KEY_BYTES = 32
KEY_NAME = "key1"


def generate_encryption_key() -> str:
    """32 random bytes, base64 (the seed's `head -c 32 /dev/urandom | base64`)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def render_encryption_config(key: str) -> str:
    """The `apiserver.config.k8s.io/v1` EncryptionConfiguration for Secrets."""
    _check_key(key)
    config = {
        "kind": "EncryptionConfiguration",
        "apiVersion": "apiserver.config.k8s.io/v1",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    {"aescbc": {"keys": [{"name": KEY_NAME, "secret": key}]}},
                    {"identity": {}},
                ],
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def encryption_key(config_text: str) -> str:
    """The aescbc key1 secret of an EncryptionConfiguration; ValueError if the file is not one."""
    try:
        config = yaml.safe_load(config_text)
        providers = config["resources"][0]["providers"]
        key = next(k["secret"] for k in providers[0]["aescbc"]["keys"] if k["name"] == KEY_NAME)
    except (yaml.YAMLError, KeyError, IndexError, TypeError, StopIteration):
        raise ValueError("not an EncryptionConfiguration with an aescbc key1") from None
    if config.get("kind") != "EncryptionConfiguration":
        raise ValueError("not an EncryptionConfiguration")
    _check_key(key)
    return key


def _check_key(key: str) -> None:
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the aescbc key is not base64") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"the aescbc key must be {KEY_BYTES} bytes, not {len(raw)}")


def ensure_encryption_config(store: Store) -> Outcome:
    """Keep the stored encryption config (and its key); create one only when there is none.

    A stored file that is not a valid config raises instead of being replaced.
    """
    stored = read_optional(store, ENCRYPTION_CONFIG)
    if stored is not None:
        key = encryption_key(stored.decode())
        wanted = render_encryption_config(key)
        if stored.decode() == wanted:
            return Outcome("encryption-config", "reused", "unchanged", (store.path(ENCRYPTION_CONFIG),))
        path = store.write(ENCRYPTION_CONFIG, wanted.encode(), secret=True)
        return Outcome("encryption-config", "written", "layout updated, same key", (path,))
    path = store.write(ENCRYPTION_CONFIG, render_encryption_config(generate_encryption_key()).encode(), secret=True)
    return Outcome("encryption-config", "written", "not written yet", (path,))
