"""Every per-node fan-out of the build (distribute, bootstrap, smoke) in one place.

`fan_out` submits one task per node, all in parallel, waits for every one of them, reports per node
'ok' or why it failed (instead of stopping at the first error), publishes a table artifact, and
raises at the end if any node failed. Results persist with the flow-run-scoped cache, so a Retry
from the UI reruns only the failed nodes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from prefect import get_run_logger
from prefect.futures import PrefectFuture, wait

from groundup.aws.compute import describe_nodes
from groundup.aws.core import make_context
from groundup.distribution import (ALLOWED_NETWORKS_ENV, GroupResult, NodesFailed, allowed_node_networks,
                                   check_node_address, node_address)
from groundup.spec import ClusterSpec, Node


class PhaseFailed(RuntimeError):
    """Some steps of a phase failed; the message lists each with its error."""


def gather(futures: dict[str, PrefectFuture], phase: str) -> dict:
    """Wait for every future; raise one error naming each failed step after all have finished."""
    wait(list(futures.values()))
    failed = {}
    values = {}
    for key, future in futures.items():
        state = future.state
        if state.is_completed():
            values[key] = future.result()
        else:
            failed[key] = state.message or state.name
    if failed:
        lines = "\n".join(f"  {key}: {why}" for key, why in failed.items())
        raise PhaseFailed(f"{phase}: {len(failed)} of {len(futures)} steps failed (retry the run to redo only them):\n{lines}")
    return values


def nothing_to_change(phase: str, dry_run: PrefectFuture) -> dict | None:
    """A phase's dry-run task's result (`{"changes": [...], ...}`) when it found nothing to change; None
    when the phase's steps must run: it found changes, or it failed (each step then names its own error)."""
    logger = get_run_logger()
    dry_run.wait()
    if not dry_run.state.is_completed():
        logger.warning("%s: the dry run of its steps failed (%s); running every step", phase,
                       (dry_run.state.message or dry_run.state.name)[:300])
        return None
    result = dry_run.result()
    changes = result["changes"]
    if changes:
        shown = "; ".join(" ".join(c.split()) for c in changes[:8])
        logger.info("%s: %d to change: %s%s", phase, len(changes), shown,
                    f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        return None
    logger.info("%s: every step finds what the spec asks for; nothing to change", phase)
    return result


def boot_timeout_for(spec: ClusterSpec) -> float:
    """How long a node may stay unreachable: `$GROUNDUP_SSH_BOOT_TIMEOUT`, else the spec's `ssh.boot_timeout_s`."""
    return float(os.environ.get("GROUNDUP_SSH_BOOT_TIMEOUT", spec.ssh.boot_timeout_s))


def console_output_reader(spec: ClusterSpec) -> Callable[[str], str]:
    """EC2 GetConsoleOutput for the host keys cloud-init prints."""
    ec2 = make_context(spec).ec2

    def fetch(instance_id: str) -> str:
        return ec2.get_console_output(InstanceId=instance_id, Latest=True).get("Output") or ""

    return fetch


def fan_out(spec: ClusterSpec, phase: str, nodes: list[Node],
            submit: Callable[[Node, str, str | None], PrefectFuture],
            columns: Callable[[dict], dict] | None = None) -> tuple[dict[str, str], dict[str, dict]]:
    """Run `submit(node, address, instance_id)` for every node; returns ({node: 'ok'|error}, {node: result}).

    Raises NodesFailed after every node has finished when any failed.
    """
    logger = get_run_logger()
    instances = describe_nodes(make_context(spec))
    allowed = allowed_node_networks(os.environ.get(ALLOWED_NETWORKS_ENV))
    outcomes: dict[str, str] = {}
    futures: dict[str, PrefectFuture] = {}
    for node in nodes:
        instance = instances.get(node.short_name)
        try:
            if instance is None:
                raise RuntimeError(f"no live instance tagged groundup/role={node.short_name}; run the compute phase")
            address = node_address(spec, node, instance)
            check_node_address(address, allowed)
        except Exception as exc:
            outcomes[node.short_name] = f"{type(exc).__name__}: {exc}"
            continue
        futures[node.short_name] = submit(node, address, instance.get("instance_id"))
    details: dict[str, dict] = {}
    for name, future in futures.items():
        future.wait()
        if future.state.is_completed():
            details[name] = future.result()
            outcomes[name] = "ok"
        else:
            try:
                future.result(raise_on_failure=True)
                outcomes[name] = f"{future.state.name}: {future.state.message}"
            except Exception as exc:
                outcomes[name] = f"{type(exc).__name__}: {exc}"
    ordered = {n.short_name: outcomes[n.short_name] for n in nodes}
    group = GroupResult(ordered, phase=phase)
    publish_table(spec, phase, group, details, columns)
    if group.failed:
        logger.error(group.summary())
        raise NodesFailed(group)
    logger.info(group.summary())
    return ordered, details


def publish_table(spec: ClusterSpec, phase: str, group: GroupResult, details: dict[str, dict],
                  columns: Callable[[dict], dict] | None) -> None:
    from prefect.artifacts import create_table_artifact

    rows = [{"node": node, "result": outcome, **(columns(details.get(node, {})) if columns else {})}
            for node, outcome in group.results.items()]
    try:
        create_table_artifact(rows, key=f"{spec.name}-{phase}".lower().replace("_", "-"),
                              description=group.summary().splitlines()[0])
    except Exception as exc:  # an artifact is a report: never the reason the phase fails
        get_run_logger().warning("could not publish the %s table: %s", phase, exc)
