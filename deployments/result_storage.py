"""Where task results go, so a Retry can resume on any worker.

Task results are references only (resource IDs, storage paths, public facts), persisted with a cache
scoped to the flow run. By default they sit in the worker's `$PREFECT_HOME/storage`, so only that
machine can resume a run. `configure_result_storage()` saves the block `groundup-results`: the
artifact store's own filesystem (the `groundup-artifacts` block, e.g. an S3 bucket) under the folder
`prefect-results/`. Deployments registered with it set `PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK` for
their runs, so every worker that can read the artifact store can resume any run.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from prefect.filesystems import LocalFileSystem, WritableFileSystem

RESULTS_BLOCK = "groundup-results"
RESULTS_FOLDER = "prefect-results"
RESULTS_ENV = "PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK"


def results_filesystem(store: WritableFileSystem, folder: str = RESULTS_FOLDER) -> WritableFileSystem:
    """The same filesystem as the artifact store, one folder down."""
    if isinstance(store, LocalFileSystem):
        return LocalFileSystem(basepath=str(Path(store.basepath or ".") / folder))
    if hasattr(store, "bucket_folder"):
        copy = store.model_copy(deep=True)
        copy.bucket_folder = posixpath.join(store.bucket_folder or "", folder)
        copy._block_document_id = None
        copy._block_document_name = None
        return copy
    if hasattr(store, "basepath"):
        copy = store.model_copy(deep=True)
        copy.basepath = posixpath.join(store.basepath.rstrip("/"), folder)
        copy._block_document_id = None
        copy._block_document_name = None
        return copy
    raise TypeError(f"{type(store).__name__}: cannot derive a results folder; save a filesystem block named "
                    f"{RESULTS_BLOCK!r} yourself and pass its slug")


def configure_result_storage(store: WritableFileSystem | None = None, folder: str = RESULTS_FOLDER) -> str:
    """Save `groundup-results` next to the artifact store (default: the configured one); returns its slug."""
    if store is None:
        from blocks.artifact_store import load_filesystem

        store = load_filesystem()
    results = results_filesystem(store, folder)
    results.save(RESULTS_BLOCK, overwrite=True, _sync=True)
    return f"{results.get_block_type_slug()}/{RESULTS_BLOCK}"


def result_storage_env(slug: str | None) -> dict[str, str]:
    """The environment that makes a flow run persist its results in the block `slug`."""
    return {RESULTS_ENV: slug} if slug else {}
