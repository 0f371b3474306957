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

    def as_dict(self) -> dict[str, str]:
        return {"flow_run_id": self.flow_run_id, "flow_run_name": self.flow_run_name,
                "flow_name": self.flow_name, "since": self.since}

    @classmethod
    def from_dict(cls, data: object) -> Holder | None:
        if not isinstance(data, dict) or not data.get("flow_run_id"):
            return None
        return cls(str(data["flow_run_id"]), str(data.get("flow_run_name", "")), str(data.get("flow_name", "")),
                   str(data.get("since", "")))

    def describe(self) -> str:
        return f"{self.flow_name} run '{self.flow_run_name}' (flow run {self.flow_run_id}, since {self.since})"


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
