"""Seed steps 5-7, distribution: which files each node gets, where they land, and the per-node result.

Files land where the bootstrap uses them, the way kubernetes-the-hard-way places them:
masters keep everything under /var/lib/kubernetes/ (etcd's serving/peer pair under /etc/etcd/);
workers get the CA in /var/lib/kubernetes/, their kubelet pair and kubeconfig in /var/lib/kubelet/
and kube-proxy's kubeconfig in /var/lib/kube-proxy/. Nothing here imports Prefect.
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv4Network
from collections.abc import Callable
from dataclasses import dataclass, field

from groundup import artifacts
from groundup.hostkeys import resolve_host_keys
from groundup.spec import ClusterSpec, Node, NodeAccess, Role
from groundup.ssh import RemoteFile, Target, sync_files

KUBERNETES_DIR = "/var/lib/kubernetes"
KUBELET_DIR = "/var/lib/kubelet"
KUBE_PROXY_DIR = "/var/lib/kube-proxy"
ETCD_DIR = "/etc/etcd"


class NodeUnreachable(RuntimeError):
    """The spec's access mode gives no address for a node."""


def remote_path(node: Node, relpath: str) -> str:
    """Where a stored artifact lands on the node."""
    name = artifacts.node_file_name(relpath)
    if node.role is Role.master:
        directory = ETCD_DIR if name.startswith("etcd-") else KUBERNETES_DIR
        return f"{directory}/{name}"
    if name == "ca.pem":
        return f"{KUBERNETES_DIR}/ca.pem"
    if name == "kube-proxy.kubeconfig":
        return f"{KUBE_PROXY_DIR}/kubeconfig"
    if name.endswith(".kubeconfig"):
        return f"{KUBELET_DIR}/kubeconfig"
    return f"{KUBELET_DIR}/{name}"


def node_layout(node: Node) -> dict[str, tuple[str, int]]:
    """Per store path of the node's artifacts: (remote path, mode)."""
    return {rel: (remote_path(node, rel), artifacts.node_file_mode(rel)) for rel in artifacts.node_artifacts(node)}


def node_files(store, node: Node, remote_root: str = "") -> list[RemoteFile]:
    """The node's files with their plain bytes (private keys decrypted), modes and root ownership.

    `remote_root` prefixes every remote path (tests place files under a scratch directory).
    """
    return [RemoteFile(path=remote_root.rstrip("/") + path, data=artifacts.node_file_bytes(store, rel), mode=mode)
            for rel, (path, mode) in node_layout(node).items()]


def node_address(spec: ClusterSpec, node: Node, instance: dict | None) -> str:
    """The address the flows connect to, chosen by `spec.ssh.access` only."""
    access = spec.ssh.access
    if access is NodeAccess.private_ip:
        return str(node.private_ip)
    if access is NodeAccess.public_ip:
        public = (instance or {}).get("public_ip")
        if not public:
            raise NodeUnreachable(
                f"{node.short_name}: ssh.access is public_ip but its instance has no public IP; set "
                "associate_public_ip, or use ssh.access private_ip from inside the VPC"
            )
        return public
    raise NodeUnreachable(f"{node.short_name}: ssh.access '{access.value}' is not supported by distribution yet")


ALLOWED_NETWORKS_ENV = "GROUNDUP_ALLOWED_NODE_NETWORKS"


def allowed_node_networks(value: str | None) -> list[IPv4Network] | None:
    """The CIDRs the flows may connect to (`$GROUNDUP_ALLOWED_NODE_NETWORKS`, comma-separated); None: any."""
    if not value:
        return None
    return [IPv4Network(item.strip(), strict=False) for item in value.split(",") if item.strip()]


def check_node_address(address: str, allowed: list[IPv4Network] | None) -> None:
    """Refuse a node address outside the allowed networks (the sandbox allows only its own subnet)."""
    if allowed is not None and not any(IPv4Address(address) in net for net in allowed):
        raise NodeUnreachable(
            f"{address} is outside the networks the flows may connect to "
            f"({', '.join(map(str, allowed))}, from ${ALLOWED_NETWORKS_ENV}): in the sandbox the flows connect "
            "only to the nodes' private IPs (moto's public IPs are real internet addresses). Set ssh.access: private_ip."
        )


@dataclass
class NodeDistribution:
    """What distribution did on one node: storage-free facts, safe to persist and show."""

    node: str
    address: str
    uploaded: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    host_key_source: str = ""
    seconds: float = 0.0
    reconnects: list[str] = field(default_factory=list)

    def as_result(self) -> dict:
        return {
            "node": self.node, "address": self.address, "uploaded": self.uploaded, "fixed": self.fixed,
            "skipped": self.skipped, "host_key_source": self.host_key_source, "seconds": round(self.seconds, 3),
            "reconnects": self.reconnects,
        }


def distribute_to_node(spec: ClusterSpec, node: Node, address: str, instance_id: str | None, store, pkey,
                       console_output: Callable[[str], str] | None = None, *,
                       boot_timeout: float = 120.0, remote_root: str = "") -> NodeDistribution:
    """Resolve the node's pinned host keys, then sync its role's files over one SSH connection."""
    started = time.monotonic()
    pin = resolve_host_keys(store, node.short_name, address, instance_id, console_output, timeout=boot_timeout)
    target = Target(name=node.short_name, address=address, user=spec.ssh.user, port=spec.ssh.port,
                    host_keys=pin.keys)
    report = sync_files(target, pkey, node_files(store, node, remote_root), boot_timeout=boot_timeout)
    return NodeDistribution(
        node=node.short_name, address=address, uploaded=report.uploaded, fixed=report.fixed,
        skipped=report.skipped, host_key_source=pin.source, seconds=time.monotonic() - started,
        reconnects=report.reconnects,
    )


@dataclass
class GroupResult:
    """Per node, 'ok' or the error text, in the spirit of fabric's GroupResult."""

    results: dict[str, str]
    phase: str = "distribution"

    @property
    def succeeded(self) -> list[str]:
        return [n for n, r in self.results.items() if r == "ok"]

    @property
    def failed(self) -> dict[str, str]:
        return {n: r for n, r in self.results.items() if r != "ok"}

    def summary(self) -> str:
        lines = [f"{self.phase}: {len(self.succeeded)} of {len(self.results)} nodes ok"]
        lines += [f"  {node}: {error}" for node, error in self.failed.items()]
        return "\n".join(lines)


class NodesFailed(RuntimeError):
    """Some nodes failed a per-node phase; the message lists each with its error."""

    def __init__(self, group: GroupResult) -> None:
        super().__init__(group.summary() + "\nRetry the flow run: only the failed nodes run again.")
        self.group = group


DistributionFailed = NodesFailed


def remote_dirs() -> tuple[str, ...]:
    """Every directory distribution writes to."""
    return (KUBERNETES_DIR, KUBELET_DIR, KUBE_PROXY_DIR, ETCD_DIR)
