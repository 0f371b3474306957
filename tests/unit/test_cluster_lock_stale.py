"""When a run that died holding a cluster's lock may be relieved of it (groundup.concurrency.stale_reason)."""

from __future__ import annotations

from groundup.concurrency import Holder, stale_reason

HOLDER = Holder("run-1", "brave-fox", "build-cluster", "2026-11-23T02:00:04+00:00", lease_id="lease-1",
                host="runner", pid=4242)


def test_the_record_keeps_lease_host_and_process() -> None:
    assert Holder.from_dict(HOLDER.as_dict()) == HOLDER
    old = {"flow_run_id": "run-1", "flow_run_name": "brave-fox", "flow_name": "build-cluster", "since": "x"}
    assert Holder.from_dict(old).lease_id == "" and Holder.from_dict(old).pid == 0


def test_a_retry_of_the_holding_run_takes_its_lock_back() -> None:
    assert "earlier attempt of this run" in stale_reason(HOLDER, "run-1", "RUNNING")


def test_a_holder_whose_run_ended_or_whose_process_is_gone_is_stale() -> None:
    assert "ended crashed" in stale_reason(HOLDER, "run-2", "CRASHED")
    assert "4242 on runner" in stale_reason(HOLDER, "run-2", "RUNNING", process_gone=True)
    assert stale_reason(HOLDER, None, "FAILED") is not None


def test_a_live_holder_or_one_without_a_recorded_lease_keeps_the_lock() -> None:
    assert stale_reason(HOLDER, "run-2", "RUNNING") is None
    assert stale_reason(HOLDER, None, None) is None
    unleased = Holder("run-1", "brave-fox", "build-cluster", "x")
    assert stale_reason(unleased, "run-1", "CRASHED", process_gone=True) is None
