"""The markdown summary a build leaves in the Prefect UI."""

from __future__ import annotations

from groundup.spec import ClusterSpec


def build_report(spec: ClusterSpec, net: dict[str, str], nodes: dict[str, dict], phases: list[str]) -> str:
    """Nodes, addresses, endpoint and phases run: no secrets, only names and IDs."""
    rows = []
    for node in spec.nodes:
        found = nodes.get(node.short_name, {})
        rows.append(
            f"| {node.name} | {node.role.value} | {node.private_ip} | {found.get('public_ip') or '-'} "
            f"| {found.get('instance_id') or 'missing'} | {found.get('state') or '-'} | {node.pod_cidr or '-'} |"
        )
    return "\n".join(
        [
            f"# Cluster `{spec.name}` ({spec.region})",
            "",
            f"API endpoint: `https://{net['load_balancer_dns']}:6443`  ",
            f"VPC `{net['vpc_id']}` {spec.vpc_cidr}, subnet `{net['subnet_id']}` {spec.subnet_cidr}, "
            f"security group `{net['security_group_id']}`  ",
            f"Phases run: {', '.join(phases)}",
            "",
            "| node | role | private IP | public IP | instance | state | pod CIDR |",
            "|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
