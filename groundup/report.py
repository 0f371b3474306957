"""The markdown a build and a nightly rebuild leave in the Prefect UI (pure: no secrets, only names,
IDs, addresses, storage locations and times)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from groundup.smoke import Check, Status, table_rows
from groundup.spec import ClusterSpec


@dataclass
class PhaseTimes:
    """Wall-clock seconds per phase, in the order the phases ran; a phase that raised is timed too."""

    seconds: dict[str, float] = field(default_factory=dict)
    outcome: dict[str, str] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except BaseException:
            self.outcome[name] = "failed"
            raise
        else:
            self.outcome[name] = "completed"
        finally:
            self.seconds[name] = time.monotonic() - started

    def record(self, name: str, seconds: float, outcome: str) -> None:
        self.seconds[name] = seconds
        self.outcome[name] = outcome

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def format_seconds(seconds: float) -> str:
    """12.3 s, 4 min 05 s."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def phase_table(times: PhaseTimes | Mapping[str, float]) -> list[str]:
    """| phase | time | outcome | rows, then the total."""
    seconds = times.seconds if isinstance(times, PhaseTimes) else dict(times)
    outcome = times.outcome if isinstance(times, PhaseTimes) else {}
    rows = ["| phase | time | outcome |", "|---|---|---|"]
    rows += [f"| {name} | {format_seconds(s)} | {outcome.get(name, 'completed')} |" for name, s in seconds.items()]
    rows.append(f"| **total** | {format_seconds(sum(seconds.values()))} | |")
    return rows


def smoke_summary(checks: Sequence[Check]) -> str:
    """'7 passed, 1 failed, 3 not run (11 real)'."""
    by_status = {s: sum(1 for c in checks if c.status is s) for s in Status}
    where: dict[str, int] = {}
    for check in checks:
        where[check.where.value] = where.get(check.where.value, 0) + 1
    counts = ", ".join(f"{n} {s.value}" for s, n in by_status.items() if n)
    return f"{counts} ({', '.join(f'{n} {w}' for w, n in where.items())})" if checks else "no checks ran"


def smoke_table(checks: Sequence[Check]) -> list[str]:
    return table_rows(list(checks))


def build_report(spec: ClusterSpec, net: dict[str, str], nodes: dict[str, dict], phases: list[str], *,
                 timings: PhaseTimes | Mapping[str, float] | None = None,
                 smoke: Sequence[Check] | None = None,
                 kubeconfig: str | None = None,
                 artifacts: str | None = None) -> str:
    """The cluster report: nodes with roles, instance IDs and IPs, API endpoint, where the admin
    kubeconfig and the artifacts are, each phase's time, and the smoke summary when smoke ran."""
    rows = []
    for node in spec.nodes:
        found = nodes.get(node.short_name, {})
        rows.append(
            f"| {node.name} | {node.role.value} | {node.private_ip} | {found.get('public_ip') or '-'} "
            f"| {found.get('instance_id') or 'missing'} | {found.get('state') or '-'} | {node.pod_cidr or '-'} |"
        )
    lines = [
        f"# Cluster `{spec.name}` ({spec.region})",
        "",
        f"API endpoint: `https://{net['load_balancer_dns']}:6443`  ",
        f"VPC `{net['vpc_id']}` {spec.vpc_cidr}, subnet `{net['subnet_id']}` {spec.subnet_cidr}, "
        f"security group `{net['security_group_id']}`  ",
    ]
    if kubeconfig:
        lines.append(f"Admin kubeconfig: `{kubeconfig}` (`kubectl --kubeconfig {kubeconfig} get nodes`)  ")
    if artifacts:
        lines.append(f"Artifacts (certificates, keys encrypted, kubeconfigs, SSH key): `{artifacts}`  ")
    lines += [
        f"Phases run: {', '.join(phases)}",
        "",
        "| node | role | private IP | public IP | instance | state | pod CIDR |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    if timings:
        lines += ["", "## Phase times", "", *phase_table(timings)]
    if smoke is not None:
        lines += ["", f"## Smoke test: {smoke_summary(smoke)}", "", *smoke_table(smoke)]
    return "\n".join(lines)


def rebuild_report(cluster: str, outcome: str, times: PhaseTimes, smoke: Sequence[Check] | None,
                   left_up: bool | None, failure: str | None = None) -> str:
    """The nightly rebuild's artifact: outcome, each phase's time, the smoke table, whether the cluster is up."""
    lines = [f"# Nightly rebuild of `{cluster}`: {outcome}", ""]
    if failure:
        shown = failure.strip().splitlines()[:20]
        lines += ["```", *shown, "```", ""]
    if left_up is True:
        lines += ["The cluster was left up for inspection (`teardown_on_failure` is off).", ""]
    elif left_up is False:
        lines += ["The cluster was torn down after the failure (`teardown_on_failure` is on).", ""]
    lines += ["## Phase times", "", *phase_table(times)]
    if smoke is not None:
        lines += ["", f"## Smoke test: {smoke_summary(smoke)}", "", *smoke_table(smoke)]
    return "\n".join(lines) + "\n"
