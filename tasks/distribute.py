"""The distribute phase as Prefect tasks: one task per node, all nodes in parallel (seed steps 5-7).

A node that runs again uploads nothing that already matches by checksum.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from groundup.distribution import distribute_to_node
from groundup.spec import ClusterSpec, node_by_name
from tasks.nodes import boot_timeout_for, console_output_reader, fan_out
from tasks.store import cluster_ssh_key, cluster_store


@task(name="distribute-node", task_run_name="distribute-{node}", persist_result=True)
def distribute_node(spec: ClusterSpec, node: str, address: str, instance_id: str | None,
                    boot_timeout: float = 120.0) -> dict:
    """One node's role files over one SSH connection with its pinned host key; returns paths only."""
    logger = get_run_logger()
    store = cluster_store(spec)
    pkey = cluster_ssh_key(spec)
    result = distribute_to_node(spec, node_by_name(spec, node), address, instance_id, store, pkey,
                                console_output_reader(spec), boot_timeout=boot_timeout)
    for reconnect in result.reconnects:
        logger.warning("%s (%s): %s; connected again and went on", node, address, reconnect)
    logger.info("%s (%s): %d uploaded, %d fixed, %d unchanged in %.1f s (host key from %s)", node, address,
                len(result.uploaded), len(result.fixed), len(result.skipped), result.seconds,
                result.host_key_source)
    return result.as_result()


def distribute_phase(spec: ClusterSpec, *, boot_timeout: float | None = None) -> dict:
    """Distribute to every node in parallel, raising if any failed; returns {'nodes': {node: 'ok'}} and
    how many files were uploaded, fixed (mode or owner) and found unchanged on all nodes together."""
    timeout = boot_timeout if boot_timeout is not None else boot_timeout_for(spec)
    outcomes, details = fan_out(
        spec, "distribution", spec.nodes,
        lambda node, address, instance_id: distribute_node.submit(spec, node.short_name, address, instance_id,
                                                                  timeout),
        lambda d: {"uploaded": len(d.get("uploaded", [])), "unchanged": len(d.get("skipped", [])),
                   "host key": d.get("host_key_source", ""), "seconds": d.get("seconds", "")},
    )
    totals = {key: sum(len(d.get(key, [])) for d in details.values()) for key in ("uploaded", "fixed", "skipped")}
    get_run_logger().info("distribution to %d nodes, files in all: uploaded %d, fixed %d, unchanged %d", len(details),
                          totals["uploaded"], totals["fixed"], totals["skipped"])
    return {"nodes": outcomes, "uploaded": totals["uploaded"], "fixed": totals["fixed"],
            "unchanged": totals["skipped"]}
