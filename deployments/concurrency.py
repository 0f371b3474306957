"""Runs for one cluster never overlap: a Prefect global concurrency limit of one slot per cluster.

    with cluster_lock(spec.name, lock):      # lock: "wait" (queue behind the holder) or "fail"
        ...                                  # build, teardown or rebuild

The limit (`groundup-cluster-<name>`) is created on first use and shows under Concurrency in the UI.
The run holding it is recorded in the Prefect Variable `groundup-lock-<name>`, so a run that may not
wait fails with a message naming it. A flow that already holds the cluster (rebuild-and-test) runs
its subflows (teardown, build) inside the same lock: nested `cluster_lock` calls for a held cluster
pass straight through.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone

import httpx
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from groundup.concurrency import ClusterBusy, Holder, LockMode, holder_variable, limit_name

__all__ = ["ClusterBusy", "LockMode", "cluster_lock", "current_holder", "ensure_cluster_limit"]

_held: ContextVar[frozenset[str]] = ContextVar("groundup_held_clusters", default=frozenset())
LEASE_SECONDS = 300.0


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("groundup.lock")


def ensure_cluster_limit(cluster: str) -> str:
    """Create the cluster's one-slot global concurrency limit unless it exists; returns its name."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = limit_name(cluster)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except (ObjectAlreadyExists, httpx.HTTPStatusError) as exc:
                if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code != 409:
                    raise
    return name


def current_holder(cluster: str) -> Holder | None:
    """The run recorded as holding the cluster, if any."""
    from prefect.variables import Variable

    return Holder.from_dict(Variable.get(holder_variable(cluster), default=None, _sync=True))


def _this_run() -> Holder | None:
    from prefect.runtime import flow_run

    if not flow_run.id:
        return None
    return Holder(str(flow_run.id), str(flow_run.name), str(flow_run.flow_name),
                  datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _slots_in_use(cluster: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(limit_name(cluster)).active_slots


def _is_locked(exc: BaseException) -> bool:
    cause = exc.__cause__
    return isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code == 423


@contextmanager
def cluster_lock(cluster: str, mode: LockMode | str = LockMode.wait,
                 timeout_s: float | None = None) -> Iterator[Holder | None]:
    """Hold the cluster's slot for the block; `mode` says whether to wait for a holder or fail at once.

    Raises ClusterBusy (naming the holder) in `fail` mode, TimeoutError after `timeout_s` in `wait` mode.
    """
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency.sync import concurrency
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError

    mode = LockMode(mode)
    if cluster in _held.get():
        yield None
        return
    name = ensure_cluster_limit(cluster)
    logger = _logger()
    me = _this_run()
    if mode is LockMode.wait and _slots_in_use(cluster):
        holder = current_holder(cluster)
        logger.info("cluster %s is held by %s: waiting for it", cluster,
                    holder.describe() if holder else "another run")
    stack = ExitStack()
    try:
        stack.enter_context(concurrency(
            name, occupy=1, strict=True, timeout_seconds=timeout_s, lease_duration=LEASE_SECONDS,
            max_retries=0 if mode is LockMode.fail else None,
            holder=ConcurrencyLeaseHolder(type="flow_run", id=me.flow_run_id) if me else None,
        ))
    except ConcurrencySlotAcquisitionError as exc:
        if _is_locked(exc):
            raise ClusterBusy(cluster, current_holder(cluster)) from None
        raise
    with stack:
        token = _held.set(_held.get() | {cluster})
        _record(cluster, me)
        logger.info("cluster %s: lock %s held by %s", cluster, name, me.describe() if me else "this process")
        try:
            yield me
        finally:
            _forget(cluster, me)
            _held.reset(token)


def _record(cluster: str, me: Holder | None) -> None:
    from prefect.variables import Variable

    if me is not None:
        Variable.set(holder_variable(cluster), me.as_dict(), overwrite=True, _sync=True)


def _forget(cluster: str, me: Holder | None) -> None:
    """Remove the record while still holding the slot, and only when it is ours."""
    from prefect.variables import Variable

    recorded = current_holder(cluster)
    if recorded is not None and (me is None or recorded.flow_run_id == me.flow_run_id):
        Variable.unset(holder_variable(cluster), _sync=True)
