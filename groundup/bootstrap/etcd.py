"""Bootstrapping the etcd cluster (kubernetes-the-hard-way 07) on every master, with TLS for clients and
peers and client-certificate auth on both; `Type=notify`, so a start returns once the member has joined
a quorum, and all masters start at once."""

from __future__ import annotations

from groundup.bootstrap import Directory, NodePlan
from groundup.bootstrap.units import exec_start, unit_file
from groundup.spec import ClusterSpec, Node

CA = "/var/lib/kubernetes/ca.pem"
DATA_DIR = "/var/lib/etcd"
BINARIES = ("/usr/local/bin/etcd", "/usr/local/bin/etcdctl")
CLUSTER_TOKEN = "etcd-cluster-0"


def cert_paths(node: Node) -> tuple[str, str]:
    return f"/etc/etcd/etcd-{node.short_name}.pem", f"/etc/etcd/etcd-{node.short_name}-key.pem"


def initial_cluster(spec: ClusterSpec) -> str:
    """`master-0=https://10.240.0.10:2380,...`: member names are the masters' short names."""
    return ",".join(f"{m.short_name}=https://{m.private_ip}:2380" for m in spec.masters)


def etcd_flags(spec: ClusterSpec, node: Node) -> dict[str, str | bool]:
    cert, key = cert_paths(node)
    ip = node.private_ip
    return {
        "name": node.short_name,
        "cert-file": cert,
        "key-file": key,
        "peer-cert-file": cert,
        "peer-key-file": key,
        "trusted-ca-file": CA,
        "peer-trusted-ca-file": CA,
        "client-cert-auth": True,
        "peer-client-cert-auth": True,
        "initial-advertise-peer-urls": f"https://{ip}:2380",
        "listen-peer-urls": f"https://{ip}:2380",
        "listen-client-urls": f"https://{ip}:2379,https://127.0.0.1:2379",
        "advertise-client-urls": f"https://{ip}:2379",
        "initial-cluster-token": CLUSTER_TOKEN,
        "initial-cluster": initial_cluster(spec),
        "initial-cluster-state": "new",
        "data-dir": DATA_DIR,
    }


def add_etcd(plan: NodePlan, spec: ClusterSpec, node: Node) -> None:
    unit = unit_file("etcd", exec_start(BINARIES[0], etcd_flags(spec, node)),
                     documentation="https://github.com/etcd-io/etcd", after=("network-online.target",),
                     service={"Type": "notify", "TimeoutStartSec": "120", "LimitNOFILE": "40000"})
    plan.dirs.append(Directory(DATA_DIR, 0o700))
    plan.add_unit("etcd", unit, [*BINARIES, CA, *cert_paths(node)])
