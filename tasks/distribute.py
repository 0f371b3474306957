"""The distribute phase as Prefect tasks: one task per node, all nodes in parallel (seed steps 5-7).

`distribute_phase(spec)` is called from inside the build flow. It fans out `distribute-<node>`
tasks, waits for all of them, reports per node 'ok' or why it failed (instead of stopping at the
first error), publishes that as a table artifact, and raises at the end if any node failed. Results
persist with the flow-run-scoped cache, so a Retry from the UI reruns only the failed nodes; a node
that runs again uploads nothing that already matches by checksum.
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import get_run_logger, task

from blocks.artifact_store import get_store
from groundup.aws.compute import describe_nodes, ssh_key_path
from groundup.aws.core import make_context
from groundup.distribution import (DistributionFailed, GroupResult, check_sandbox_address, distribute_to_node,
                                   node_address)
from groundup.spec import ClusterSpec, node_by_name
from groundup.ssh import pkey_from_cryptography

SANDBOX_STATE_ENV = "GROUNDUP_SANDBOX_STATE"


def sandbox_addresses() -> set[str] | None:
    """The sandbox's node addresses when the flows run against the sandbox, else None."""
    root = os.environ.get(SANDBOX_STATE_ENV)
    if not root:
        return None
    path = Path(root) / "known_hosts"
    if not path.is_file():
        return set()
    return {line.split()[0] for line in path.read_text().splitlines() if line.strip()}


def _console_output(spec: ClusterSpec):
    ec2 = make_context(spec).ec2

    def fetch(instance_id: str) -> str:
        return ec2.get_console_output(InstanceId=instance_id, Latest=True).get("Output") or ""

    return fetch


@task(name="distribute-node", task_run_name="distribute-{node}", persist_result=True)
def distribute_node(spec: ClusterSpec, node: str, address: str, instance_id: str | None,
                    boot_timeout: float = 120.0) -> dict:
    """One node's role files over one SSH connection with its pinned host key; returns paths only."""
    logger = get_run_logger()
    store = get_store(spec.name)
    pkey = pkey_from_cryptography(store.read_private_key(ssh_key_path(spec)))
    result = distribute_to_node(spec, node_by_name(spec, node), address, instance_id, store, pkey,
                                _console_output(spec), boot_timeout=boot_timeout)
    logger.info("%s (%s): %d uploaded, %d fixed, %d unchanged in %.1f s (host key from %s)", node, address,
                len(result.uploaded), len(result.fixed), len(result.skipped), result.seconds,
                result.host_key_source)
    return result.as_result()


def distribute_phase(spec: ClusterSpec, *, boot_timeout: float | None = None) -> dict[str, str]:
    """Distribute to every node in parallel; returns {node: 'ok' | error}, raising if any failed.

    `boot_timeout` bounds how long a node may stay unreachable (default `$GROUNDUP_SSH_BOOT_TIMEOUT`,
    else the spec's `ssh.boot_timeout_s`).
    """
    logger = get_run_logger()
    if boot_timeout is None:
        boot_timeout = float(os.environ.get("GROUNDUP_SSH_BOOT_TIMEOUT", spec.ssh.boot_timeout_s))
    instances = describe_nodes(make_context(spec))
    allowed = sandbox_addresses()
    results: dict[str, str] = {}
    futures = {}
    for node in spec.nodes:
        instance = instances.get(node.short_name)
        try:
            if instance is None:
                raise RuntimeError(f"no live instance tagged groundup/role={node.short_name}; run the compute phase")
            address = node_address(spec, node, instance)
            check_sandbox_address(address, allowed)
        except Exception as exc:
            results[node.short_name] = f"{type(exc).__name__}: {exc}"
            continue
        futures[node.short_name] = distribute_node.submit(
            spec, node.short_name, address, instance.get("instance_id"), boot_timeout
        )
    details: dict[str, dict] = {}
    for name, future in futures.items():
        future.wait()
        state = future.state
        if state.is_completed():
            details[name] = future.result()
            results[name] = "ok"
        else:
            try:
                future.result(raise_on_failure=True)
                results[name] = f"{state.name}: {state.message}"
            except Exception as exc:
                results[name] = f"{type(exc).__name__}: {exc}"
    ordered = {n.short_name: results[n.short_name] for n in spec.nodes}
    group = GroupResult(ordered)
    _publish(spec, group, details)
    if group.failed:
        logger.error(group.summary())
        raise DistributionFailed(group)
    logger.info(group.summary())
    return ordered


def _publish(spec: ClusterSpec, group: GroupResult, details: dict[str, dict]) -> None:
    from prefect.artifacts import create_table_artifact

    rows = []
    for node, outcome in group.results.items():
        detail = details.get(node, {})
        rows.append({
            "node": node,
            "result": outcome,
            "uploaded": len(detail.get("uploaded", [])),
            "unchanged": len(detail.get("skipped", [])),
            "host key": detail.get("host_key_source", ""),
            "seconds": detail.get("seconds", ""),
        })
    try:
        create_table_artifact(rows, key=f"{spec.name}-distribution".lower().replace("_", "-"),
                              description=group.summary().splitlines()[0])
    except Exception as exc:  # an artifact is a report: never the reason the phase fails
        get_run_logger().warning("could not publish the distribution table: %s", exc)
