"""Runs for one cluster never overlap: a Prefect global concurrency limit of one slot per cluster.

    with cluster_lock(spec.name, lock):      # lock: "wait" (queue behind the holder) or "fail"
        ...                                  # build, teardown or rebuild

The limit (`groundup-cluster-<name>`) is created on first use and shows under Concurrency in the UI.
The run holding it is recorded in the Prefect Variable `groundup-lock-<name>`, so a run that may not
wait fails with a message naming it. A flow that already holds the cluster (rebuild-and-test) runs
its subflows (teardown, build) inside the same lock: nested `cluster_lock` calls for a held cluster
pass straight through.

The record also names the lease, the host and the process, so a run that died holding the cluster
(its process killed: no `finally` ran) does not keep it for the lease's five minutes: a Retry of
that run, any run once the holder's run has ended (Crashed, ...), or any run on the same machine
once the holder's process is gone, takes the lock back at once and logs whose it was; a run that
waits keeps looking, so a holder that dies while it waits is relieved too. A slot taken with no run
recorded as holding it for longer than a lease (a lease the server lost) is freed the same way.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from dataclasses import replace
from datetime import datetime, timezone

import httpx
from prefect.client.orchestration import get_client
from prefect.concurrency._leases import maintain_concurrency_lease
from prefect.concurrency._sync import acquire_concurrency_slots_with_lease, release_concurrency_slots_with_lease
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from groundup.concurrency import ClusterBusy, Holder, LockMode, holder_variable, limit_name, stale_reason

__all__ = ["ClusterBusy", "LockMode", "cluster_lock", "current_holder", "ensure_cluster_limit"]

_held: ContextVar[frozenset[str]] = ContextVar("groundup_held_clusters", default=frozenset())
LEASE_SECONDS = 300.0
CHECK_EVERY_S = 10.0
ORPHAN_AFTER_S = LEASE_SECONDS + 30.0


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
                  datetime.now(timezone.utc).isoformat(timespec="seconds"), host=socket.gethostname(), pid=os.getpid())


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError

    mode = LockMode(mode)
    if cluster in _held.get():
        yield None
        return
    name = ensure_cluster_limit(cluster)
    logger = _logger()
    me = _this_run()
    _take_back_stale(cluster, me, logger)
    if mode is LockMode.wait and _slots_in_use(cluster):
        holder = current_holder(cluster)
        logger.info("cluster %s is held by %s: waiting for it", cluster,
                    holder.describe() if holder else "another run")
    waited = threading.Event()
    if mode is LockMode.wait:
        threading.Thread(target=copy_context().run, args=(_relieve_while_waiting, cluster, me, logger, waited),
                         daemon=True, name=f"groundup-lock-watch-{cluster}").start()
    try:
        acquired = acquire_concurrency_slots_with_lease(
            [name], 1, timeout_seconds=timeout_s, strict=True, lease_duration=LEASE_SECONDS,
            max_retries=0 if mode is LockMode.fail else None,
            holder=ConcurrencyLeaseHolder(type="flow_run", id=me.flow_run_id) if me else None,
        )
    except ConcurrencySlotAcquisitionError as exc:
        if _is_locked(exc):
            raise ClusterBusy(cluster, current_holder(cluster)) from None
        raise
    finally:
        waited.set()
    if me is not None:
        me = replace(me, lease_id=str(acquired.lease_id))
    try:
        with maintain_concurrency_lease(acquired.lease_id, LEASE_SECONDS, raise_on_lease_renewal_failure=True):
            token = _held.set(_held.get() | {cluster})
            _record(cluster, me)
            logger.info("cluster %s: lock %s held by %s", cluster, name, me.describe() if me else "this process")
            try:
                yield me
            finally:
                _forget(cluster, me)
                _held.reset(token)
    finally:
        release_concurrency_slots_with_lease(acquired.lease_id)


def _take_back_stale(cluster: str, me: Holder | None, logger) -> None:
    """Release the lock of a recorded holder that died holding it (its process was killed, so its
    lease would keep the cluster for up to LEASE_SECONDS): an earlier attempt of this very run, or a
    run that has ended."""
    from uuid import UUID

    holder = current_holder(cluster)
    if holder is None or not holder.lease_id:
        return
    state = None
    if me is None or holder.flow_run_id != me.flow_run_id:
        try:
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(UUID(holder.flow_run_id))
            state = run.state.type.value if run.state else None
        except (ObjectNotFound, ValueError):
            state = "COMPLETED"
    gone = holder.host == socket.gethostname() and holder.pid > 0 and not _process_alive(holder.pid)
    why = stale_reason(holder, me.flow_run_id if me else None, state, process_gone=gone)
    if why is None:
        return
    try:
        release_concurrency_slots_with_lease(UUID(holder.lease_id))
    except (httpx.HTTPStatusError, ObjectNotFound) as exc:
        logger.info("cluster %s: the lease of %s is already gone (%s)", cluster, holder.describe(), exc)
    _forget(cluster, holder)
    logger.warning("cluster %s: took back the lock held by %s, %s", cluster, holder.describe(), why)


def _relieve_while_waiting(cluster: str, me: Holder | None, logger, waited: threading.Event) -> None:
    """Until `waited` is set: take the lock back from a holder that dies meanwhile, and free a slot
    that nobody holds. A server that keeps its leases in memory (Prefect's default) loses them when it
    restarts, and the slot of a lost lease is never given back; a live holder records itself right
    after taking the slot, so a slot taken with no holder recorded for longer than a lease
    (ORPHAN_AFTER_S) belongs to no one."""
    unrecorded_since: float | None = None
    while not waited.wait(CHECK_EVERY_S):
        try:
            _take_back_stale(cluster, me, logger)
            if current_holder(cluster) is not None or not _slots_in_use(cluster):
                unrecorded_since = None
                continue
            unrecorded_since = unrecorded_since or time.monotonic()
            if time.monotonic() - unrecorded_since >= ORPHAN_AFTER_S and not waited.is_set():
                _free_orphaned_slot(cluster)
                logger.warning("cluster %s: freed its lock's slot, taken for %.0f s with no run recorded as "
                               "holding it (a lease the Prefect server lost, e.g. in a restart)", cluster,
                               time.monotonic() - unrecorded_since)
                unrecorded_since = None
        except Exception as exc:  # noqa: BLE001 - a look that failed is tried again; the wait goes on
            logger.debug("cluster %s: lock watch: %s", cluster, exc)


def _free_orphaned_slot(cluster: str) -> None:
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(limit_name(cluster), GlobalConcurrencyLimitUpdate(active_slots=0))


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
