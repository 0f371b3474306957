"""The per-cluster lock against a real Prefect server: a slot the server lost track of is freed for a
waiting run, a live holder is never relieved, and a holder that dies while another run waits is."""

from __future__ import annotations

import threading
import time
from contextvars import copy_context

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

from deployments import concurrency
from deployments.concurrency import cluster_lock, current_holder, ensure_cluster_limit
from groundup.concurrency import limit_name


@pytest.fixture
def quick_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(concurrency, "CHECK_EVERY_S", 0.3)
    monkeypatch.setattr(concurrency, "ORPHAN_AFTER_S", 2.0)


def _slots(cluster: str) -> int:
    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(limit_name(cluster)).active_slots


def _take_slot_without_a_lease(cluster: str) -> None:
    """What a server that kept its leases in memory leaves after a restart: a slot taken, no lease."""
    ensure_cluster_limit(cluster)
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(limit_name(cluster), GlobalConcurrencyLimitUpdate(active_slots=1))


@flow(name="lock-wait")
def _wait_and_hold(cluster: str, hold_s: float = 0.0) -> dict:
    began = time.monotonic()
    with cluster_lock(cluster, "wait", timeout_s=90) as me:
        got = time.monotonic()
        recorded = current_holder(cluster)
        time.sleep(hold_s)
    return {"waited": got - began, "got": got, "released": time.monotonic(),
            "recorded": recorded.flow_run_id if recorded else None, "me": me.flow_run_id if me else None}


def test_a_slot_nobody_holds_is_freed_for_a_waiting_run(stack, quick_watch) -> None:
    cluster = "lock-orphan"
    _take_slot_without_a_lease(cluster)
    assert _slots(cluster) == 1 and current_holder(cluster) is None
    result = _wait_and_hold(cluster)
    assert result["waited"] >= 2.0, "the slot was freed before it had been unheld for ORPHAN_AFTER_S"
    assert result["recorded"] == result["me"] is not None
    assert _slots(cluster) == 0, "the waiting run did not give the slot back"


def test_a_live_holder_keeps_the_cluster_however_long_another_run_waits(stack, quick_watch) -> None:
    cluster = "lock-live"
    first: dict = {}
    holder = threading.Thread(target=copy_context().run,  # the test's Prefect settings go with it
                              args=(lambda: first.update(_wait_and_hold(cluster, hold_s=5.0)),))
    holder.start()
    deadline = time.monotonic() + 30
    while current_holder(cluster) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert current_holder(cluster) is not None
    second = _wait_and_hold(cluster)
    holder.join(30)
    assert second["got"] >= first["released"] - 0.05, "the second run took the cluster while the first held it"
    assert _slots(cluster) == 0
