"""What a Retry must have done, read from task-run states (shared by the local and sandbox browser tests)."""

from __future__ import annotations

import re


def base_name(task_run_name: str) -> str:
    """`create-vpc-2e5` -> `create-vpc`; per-node names (`create-instance-worker-1`) stay whole."""
    return re.sub(r"-[0-9a-f]{3}$", "", task_run_name)


def check_retry(first_attempt: list[dict], all_runs: list[dict]) -> tuple[set[str], set[str]]:
    """Every task completed before the failure is Cached on retry; only the failed and the not-yet-run
    ones executed, and they completed. Returns (failed before, executed on retry)."""
    first_ids = {t["id"] for t in first_attempt}
    retried = [t for t in all_runs if t["id"] not in first_ids]
    completed_before = {base_name(t["name"]) for t in first_attempt if t["state_type"] == "COMPLETED"}
    failed_before = {base_name(t["name"]) for t in first_attempt if t["state_type"] in ("FAILED", "CRASHED")}
    states = {base_name(t["name"]): t["state_name"] for t in retried}
    rerun = sorted(name for name in completed_before if states.get(name) != "Cached")
    assert not rerun, f"completed before the failure, yet not Cached on retry: {rerun}"
    executed = {name for name, state in states.items() if state != "Cached"}
    not_run_before = set(states) - completed_before - failed_before
    assert executed == failed_before | not_run_before, {n: states[n] for n in sorted(states)}
    unfinished = {n: states[n] for n in executed if states[n] != "Completed"}
    assert not unfinished, f"tasks that did not complete on retry: {unfinished}"
    return failed_before, executed
