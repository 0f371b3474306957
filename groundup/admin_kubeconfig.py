"""`groundup kubeconfig SPEC`: the stored admin kubeconfig, decrypted, where the user can use it."""

from __future__ import annotations

import os
from pathlib import Path

from groundup.files import atomic_write
from groundup.kubeconfig import KubeconfigRequest
from groundup.spec import ClusterSpec

ADMIN_KUBECONFIG = KubeconfigRequest("admin", "admin", "admin", "").path


def default_destination(spec: ClusterSpec) -> Path:
    return Path.home() / ".kube" / f"{spec.name}.kubeconfig"


def export_admin_kubeconfig(spec: ClusterSpec, dest: Path | None = None) -> Path:
    """Write the admin kubeconfig to `dest` (default `~/.kube/<cluster>.kubeconfig`), mode 0600."""
    from blocks.artifact_store import ArtifactError, ArtifactNotFound, StoreUnavailable, describe_filesystem, get_store

    store = get_store(spec.name)
    try:
        data = store.read(ADMIN_KUBECONFIG)
    except ArtifactNotFound:
        raise FileNotFoundError(
            f"no admin kubeconfig stored for {spec.name} ({store.path(ADMIN_KUBECONFIG)}): run build-cluster first"
        ) from None
    except ArtifactError:
        raise
    except Exception as exc:
        raise StoreUnavailable(
            f"artifact store {describe_filesystem(store.filesystem)} cannot be read: {type(exc).__name__}: {exc}"
        ) from None
    target = Path(dest).expanduser() if dest else default_destination(spec)
    write_private_file(target, data)
    return target


def write_private_file(target: Path, data: bytes) -> None:
    """Atomically replace `target` with `data`, readable by the owner only; missing parent
    directories are created owner-only (0700)."""
    missing = [d for d in target.parents if not d.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    atomic_write(target, data, mode=0o600)
