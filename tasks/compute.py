"""Seed step 3 as Prefect tasks: AMI, key pair, one launch per node."""

from __future__ import annotations

from groundup.aws import compute
from groundup.aws.core import make_context
from groundup.plan import pending, plan_compute
from groundup.spec import ClusterSpec, node_by_name
from tasks.aws import aws_task, context, run_step
from tasks.store import cluster_store


@aws_task("check-instances")
def check_instances(spec: ClusterSpec, subnet_id: str, security_group_id: str) -> dict:
    """AMI, key pair and every instance as a dry run, in one task: what the steps would change, and each
    node's instance ID; a re-run of a built cluster stops here."""
    ctx = make_context(spec, dry_run=True)
    instances = plan_compute(ctx, subnet_id, security_group_id, cluster_store(spec))
    return {"changes": pending(ctx.changes), "instances": instances}


@aws_task("get-ami")
def get_ami(spec: ClusterSpec) -> str:
    """Newest Canonical image of the spec's Ubuntu LTS; none found fails at once (no retry)."""
    return run_step(spec, compute.find_ami)


@aws_task("create-key-pair")
def create_key_pair(spec: ClusterSpec) -> str:
    """Key pair named after the cluster; the private key stays, encrypted, in the artifact store."""
    return run_step(spec, compute.ensure_key_pair, cluster_store(spec))


@aws_task("create-instance", task_run_name="create-instance-{node}")
def create_instance(spec: ClusterSpec, node: str, ami_id: str, subnet_id: str, sg_id: str, key_name: str) -> str:
    """One master or worker, running, with its fixed private IP and user-data."""
    return run_step(spec, compute.ensure_instance, node_by_name(spec, node), ami_id, subnet_id, sg_id, key_name)


@aws_task("describe-nodes")
def describe_nodes(spec: ClusterSpec) -> dict[str, dict[str, str | None]]:
    return compute.describe_nodes(context(spec))
