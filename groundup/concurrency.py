"""One cluster, one change at a time: the names and messages of the per-cluster lock (pure; the
Prefect side is `deployments.concurrency.cluster_lock`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

LIMIT_PREFIX = "groundup-cluster-"


class LockMode(str, Enum):
    """What a run does when another run holds its cluster: wait for it, or fail at once."""

    wait = "wait"
    fail = "fail"


def limit_name(cluster: str) -> str:
    """The Prefect global concurrency limit (one slot) that serialises every run changing `cluster`."""
    return LIMIT_PREFIX + cluster


def holder_variable(cluster: str) -> str:
    """The Prefect Variable that names the run holding the cluster (Variable names: a-z, 0-9, '-', '_')."""
    return "groundup-lock-" + re.sub(r"[^a-z0-9_-]", "-", cluster.lower())


@dataclass(frozen=True)
class Holder:
    """The flow run that holds a cluster's lock."""

    flow_run_id: str
    flow_run_name: str
    flow_name: str
    since: str
    lease_id: str = ""
    host: str = ""
    pid: int = 0

    def as_dict(self) -> dict[str, str | int]:
        return {"flow_run_id": self.flow_run_id, "flow_run_name": self.flow_run_name,
                "flow_name": self.flow_name, "since": self.since, "lease_id": self.lease_id,
                "host": self.host, "pid": self.pid}

    @classmethod
    def from_dict(cls, data: object) -> Holder | None:
        if not isinstance(data, dict) or not data.get("flow_run_id"):
            return None
        return cls(str(data["flow_run_id"]), str(data.get("flow_run_name", "")), str(data.get("flow_name", "")),
                   str(data.get("since", "")), str(data.get("lease_id", "")), str(data.get("host", "")),
                   int(data.get("pid") or 0))

    def describe(self) -> str:
        return f"{self.flow_name} run '{self.flow_run_name}' (flow run {self.flow_run_id}, since {self.since})"


# A holder whose flow run is in one of these states died without giving the lock back (a crashed
# process never runs its `finally`); its lease would keep the cluster for up to LEASE_SECONDS.
ENDED_STATES = frozenset({"CRASHED", "FAILED", "CANCELLED", "COMPLETED"})


def stale_reason(holder: Holder, me_flow_run_id: str | None, holder_state: str | None,
                 process_gone: bool = False) -> str | None:
    """Why a recorded holder's lock may be taken back, or None while it may still be in use: the
    holder is an earlier attempt of this very run (a Retry after a crash), its run has ended, or its
    process (on this machine) is gone."""
    if not holder.lease_id:
        return None
    if me_flow_run_id and holder.flow_run_id == me_flow_run_id:
        return "an earlier attempt of this run that ended without releasing it"
    if holder_state in ENDED_STATES:
        return f"a run that ended {holder_state.lower()} without releasing it"
    if process_gone:
        return f"a run whose process ({holder.pid} on {holder.host}) is gone"
    return None


class ClusterBusy(RuntimeError):
    """Another run holds the cluster's lock and the run was asked not to wait."""

    def __init__(self, cluster: str, holder: Holder | None) -> None:
        who = holder.describe() if holder else "another run (its name was not recorded)"
        super().__init__(
            f"cluster {cluster} is being changed by {who}; wait for it to finish, cancel it, "
            f"or start this run with lock='wait' to queue behind it"
        )
        self.cluster = cluster
        self.holder = holder
