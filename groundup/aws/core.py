"""What every AWS step shares: clients, the cluster's tags, error classes, and the look-then-act context.

Every step follows one pattern (pyinfra's facts-then-operations): look the resource up by
the cluster's tags, compare, and act only on what differs. In a dry run the same code records
what it would do instead of doing it; that record is `groundup plan`.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from groundup.spec import ClusterSpec

CLUSTER_TAG = "groundup/cluster"
ROLE_TAG = "groundup/role"

# Codes that heal with time: throttling, eventual consistency, dependencies still draining.
# Every other error (no AMI, no permission, bad parameter) fails at once.
TRANSIENT_CODES = frozenset(
    {
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestThrottled",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "InvalidInstanceID.NotFound",
        "InvalidGroup.NotFound",
        "InvalidVpcID.NotFound",
        "InvalidSubnetID.NotFound",
        "InvalidRouteTableID.NotFound",
        "InvalidInternetGatewayID.NotFound",
        "InvalidDhcpOptionID.NotFound",
        "DependencyViolation",
        "IncorrectState",
        "IncorrectInstanceState",
        "ResourceInUse",
    }
)

# An endpoint that drops out is retried by botocore inside each call (standard mode: jittered
# backoff 1, 2, 4, 8 s at most), then the call, and with it the step, fails naming the endpoint.
# Not again by the task: a step that cannot connect ends within `endpoint_retry_budget_s()`.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
CALL_ATTEMPTS = 5
AWS_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": CALL_ATTEMPTS},
    connect_timeout=CONNECT_TIMEOUT_S,
    read_timeout=READ_TIMEOUT_S,
    max_pool_connections=32,
)


def endpoint_retry_budget_s(hanging: bool = False) -> float:
    """Longest a step waits on an endpoint that refuses connections (or, `hanging`, accepts and never answers)."""
    backoff = sum(min(20.0, 2.0**i) for i in range(CALL_ATTEMPTS - 1))
    per_attempt = CONNECT_TIMEOUT_S + (READ_TIMEOUT_S if hanging else 0)
    return CALL_ATTEMPTS * per_attempt + backoff


class ClusterStateError(RuntimeError):
    """What exists in AWS conflicts with the spec in a way groundup will not fix silently."""


def error_code(exc: BaseException) -> str | None:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def is_transient(exc: BaseException) -> bool:
    """True for AWS errors a later task attempt can cure (throttling, eventual consistency).

    Connection failures are not: botocore already retried them within the call's bounded budget.
    """
    code = error_code(exc)
    return code is not None and code in TRANSIENT_CODES


T = TypeVar("T")


def retry_transient(
    fn: Callable[..., T],
    *args: Any,
    codes: Iterable[str] | None = None,
    attempts: int = 10,
    base_delay: float = 0.5,
    max_delay: float = 10.0,
    **kwargs: Any,
) -> T:
    """Call `fn`, retrying with jittered exponential backoff on the given (default: transient) codes."""
    retry_codes = frozenset(codes) if codes is not None else TRANSIENT_CODES
    for attempt in range(1, attempts + 1):
        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            if error_code(exc) not in retry_codes or attempt == attempts:
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            time.sleep(delay * (0.5 + random.random() / 2))
    raise AssertionError("unreachable")


def cluster_tags(spec: ClusterSpec, role: str, name: str | None = None) -> list[dict[str, str]]:
    """Tags on every resource: Name, the cluster and the resource's role, then the user's tags."""
    tags = {"Name": name or spec.name, CLUSTER_TAG: spec.name, ROLE_TAG: role, **spec.tags}
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_spec(spec: ClusterSpec, resource_type: str, role: str, name: str | None = None) -> list[dict]:
    return [{"ResourceType": resource_type, "Tags": cluster_tags(spec, role, name)}]


def tag_filters(cluster: str, role: str | None = None) -> list[dict]:
    filters = [{"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster]}]
    if role is not None:
        filters.append({"Name": f"tag:{ROLE_TAG}", "Values": [role]})
    return filters


def describe_instances(ec2: Any, filters: list[dict]) -> list[dict]:
    """Every instance matching `filters`, across all pages (EC2 pages past a few hundred)."""
    pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def tags_dict(tags: list[dict] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


@dataclass
class Change:
    """One thing a build did or would do."""

    action: str
    resource: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.action:<8} {self.resource}" + (f"  ({self.detail})" if self.detail else "")


@dataclass
class Context:
    """Clients plus the record of changes; `dry_run` turns every action into a record."""

    spec: ClusterSpec
    ec2: Any
    elbv2: Any
    dry_run: bool = False
    changes: list[Change] = field(default_factory=list)
    live_instances: dict[str, list[dict]] | None = None
    """A dry run's one look at the cluster's live instances, by role tag; None: each step looks itself."""

    def act(self, action: str, resource: str, fn: Callable[..., T], *args: Any, detail: str = "", **kwargs: Any) -> T | None:
        """Record a change and perform it unless this is a dry run."""
        self.changes.append(Change(action, resource, detail))
        if self.dry_run:
            return None
        return fn(*args, **kwargs)

    def note(self, resource: str, detail: str = "") -> None:
        """Record that a resource already matches the spec."""
        self.changes.append(Change("exists", resource, detail))


def planned(resource: str) -> str:
    """Placeholder ID of a resource a dry run would create."""
    return f"<new {resource}>"


def is_planned(resource_id: str | None) -> bool:
    return resource_id is None or resource_id.startswith("<new ")


_CLIENTS: dict[tuple, tuple[Any, Any]] = {}
_CLIENTS_LOCK = threading.Lock()


def aws_clients(region: str) -> tuple[Any, Any]:
    """EC2 and ELBv2 clients for a region, made once per process (clients are thread-safe; making
    one costs ~0.3 s of model loading). Keyed by endpoint and credentials so a changed environment
    gets new clients."""
    key = (region, *(os.environ.get(v) for v in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID")))
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            session = boto3.session.Session(region_name=region)
            _CLIENTS[key] = (session.client("ec2", config=AWS_CONFIG), session.client("elbv2", config=AWS_CONFIG))
        return _CLIENTS[key]


def make_context(spec: ClusterSpec, dry_run: bool = False) -> Context:
    """Clients for the spec's region. boto3 honours AWS_ENDPOINT_URL, so a moto server works unchanged."""
    ec2, elbv2 = aws_clients(spec.region)
    return Context(spec=spec, ec2=ec2, elbv2=elbv2, dry_run=dry_run)
