"""The cluster's artifact store and SSH key for the tasks of one flow run.

Opening the store reads Prefect blocks (the filesystem block, tried by type, and the passphrase
Secret): about five API requests, ~0.15 s alone and 3.3 s for 24 tasks at once on the sandbox. The
tasks of a flow run share one lookup instead; a new flow run looks the store up again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from paramiko import PKey

from blocks.artifact_store import ArtifactStore, get_store
from groundup.aws.compute import ssh_key_path
from groundup.spec import ClusterSpec
from groundup.ssh import pkey_from_cryptography

_KEEP = 8
_cache: dict[tuple[str, str, str], Any] = {}
_lock = threading.RLock()


def _per_flow_run(kind: str, spec: ClusterSpec, make: Callable[[], Any]) -> Any:
    from prefect.context import TaskRunContext

    context = TaskRunContext.get()
    flow_run_id = str(context.task_run.flow_run_id) if context and context.task_run.flow_run_id else ""
    if not flow_run_id:
        return make()
    key = (kind, flow_run_id, spec.name)
    with _lock:
        if key not in _cache:
            while len(_cache) >= _KEEP:
                _cache.pop(next(iter(_cache)))
            _cache[key] = make()
        return _cache[key]


def cluster_store(spec: ClusterSpec) -> ArtifactStore:
    """The cluster's store, looked up once per flow run (outside a task run: every call)."""
    return _per_flow_run("store", spec, lambda: get_store(spec.name))


def cluster_ssh_key(spec: ClusterSpec) -> PKey:
    """The cluster's SSH private key as paramiko uses it, loaded once per flow run (loading checks
    the RSA key: ~0.1 s of CPU each time)."""
    return _per_flow_run("ssh-key", spec,
                         lambda: pkey_from_cryptography(cluster_store(spec).read_private_key(ssh_key_path(spec))))
