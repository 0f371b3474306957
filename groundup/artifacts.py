"""What the build stores for a cluster, and which stored files each node needs (seed steps 5 and 6).

Relative paths here are under `<cluster>/` in the artifact store. Pure: the store is any object
with the `ArtifactStore` methods (`blocks/artifact_store.py`); nothing here imports Prefect.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol

from groundup.spec import Node, Role

PKI_DIR = "pki"
KUBECONFIG_DIR = "kubeconfigs"
ENCRYPTION_CONFIG = "encryption-config.yaml"
SECRET_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644

ROLE_ARTIFACTS: dict[Role, tuple[str, ...]] = {
    Role.worker: (
        "pki/ca.pem",
        "pki/{node.name}.pem",
        "pki/{node.name}-key.pem",
        "kubeconfigs/{node.name}.kubeconfig",
        "kubeconfigs/kube-proxy.kubeconfig",
    ),
    Role.master: (
        "pki/ca.pem",
        "pki/ca-key.pem",
        "pki/master-kubernetes.pem",
        "pki/master-kubernetes-key.pem",
        "pki/service-account.pem",
        "pki/service-account-key.pem",
        "pki/etcd-{node.short_name}.pem",
        "pki/etcd-{node.short_name}-key.pem",
        "kubeconfigs/kube-controller-manager.kubeconfig",
        "kubeconfigs/kube-scheduler.kubeconfig",
        "kubeconfigs/admin.kubeconfig",
        ENCRYPTION_CONFIG,
    ),
}
"""Per role, the stored files a node receives (templates over the `Node`)."""


def node_artifacts(node: Node) -> list[str]:
    """The relative store paths of every file `node` needs, e.g. `pki/ca.pem`."""
    return [template.format(node=node) for template in ROLE_ARTIFACTS[node.role]]


def is_private_key(relpath: str) -> bool:
    """Stored as passphrase-encrypted PKCS#8: read with `read_private_key`."""
    return relpath.endswith("-key.pem")


def is_secret(relpath: str) -> bool:
    """Holds key material: encrypted in the store, owner-only on the node."""
    return is_private_key(relpath) or relpath.endswith((".kubeconfig", ENCRYPTION_CONFIG))


def node_file_mode(relpath: str) -> int:
    """File mode on the node: 0600 for key material, 0644 otherwise."""
    return SECRET_FILE_MODE if is_secret(relpath) else PUBLIC_FILE_MODE


def node_file_name(relpath: str) -> str:
    """The file name on the node (the seed copies into the home directory): `ca.pem`."""
    return PurePosixPath(relpath).name


def node_file_bytes(store: Store, relpath: str) -> bytes:
    """The plain bytes a node receives: private keys decrypted to unencrypted PKCS#8 PEM."""
    if is_private_key(relpath):
        from groundup.pki import private_key_pem

        return private_key_pem(store.read_private_key(relpath))
    return store.read(relpath)


class Store(Protocol):
    """The artifact store interface the pure PKI code works against."""

    def path(self, relpath: str) -> str: ...
    def exists(self, relpath: str) -> bool: ...
    def write(self, relpath: str, data: bytes, *, secret: bool = False) -> str: ...
    def read(self, relpath: str) -> bytes: ...
    def write_private_key(self, relpath: str, key: Any) -> str: ...
    def read_private_key(self, relpath: str) -> Any: ...


def read_optional(store: Store, relpath: str) -> bytes | None:
    """An artifact's bytes, or None when it is not stored."""
    try:
        return store.read(relpath)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class Outcome:
    """What one PKI step did: storage paths and public facts only, never key material."""

    name: str
    action: str
    reason: str
    paths: tuple[str, ...]
    fingerprint: str = ""

    @property
    def changed(self) -> bool:
        return self.action != "reused"

    def as_result(self) -> dict[str, Any]:
        """Plain data for a Prefect task result."""
        result = asdict(self)
        result["paths"] = list(self.paths)
        return result
