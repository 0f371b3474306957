"""Bootstrapping the etcd cluster (kubernetes-the-hard-way 07) on every master, with client and peer
TLS and client-certificate auth, the members taken from the spec. Flags valid for etcd 3.4 and 3.5."""

from __future__ import annotations

from groundup.bootstrap.layout import ETCD_DATA_DIR, binary, distributed
from groundup.bootstrap.units import Unit
from groundup.spec import ClusterSpec, Node

CLIENT_PORT = 2379
PEER_PORT = 2380
START_TIMEOUT_S = 150


def member_name(master: Node) -> str:
    """The etcd member name: the master's short name, as in its certificate file `etcd-<short>.pem`."""
    return master.short_name


def peer_url(master: Node) -> str:
    return f"https://{master.private_ip}:{PEER_PORT}"


def client_url(master: Node) -> str:
    return f"https://{master.private_ip}:{CLIENT_PORT}"


def initial_cluster(spec: ClusterSpec) -> str:
    """`master-0=https://172.31.0.10:2380,...`: every master of the spec."""
    return ",".join(f"{member_name(m)}={peer_url(m)}" for m in spec.masters)


def etcd_servers(spec: ClusterSpec) -> str:
    """The client URLs of every member, for kube-apiserver's `--etcd-servers`."""
    return ",".join(client_url(m) for m in spec.masters)


def etcd_unit(spec: ClusterSpec, master: Node) -> Unit:
    """Type=notify: `systemctl start etcd` returns once the member has joined a cluster with quorum."""
    cert = distributed(master, f"pki/etcd-{master.short_name}.pem")
    key = distributed(master, f"pki/etcd-{master.short_name}-key.pem")
    ca = distributed(master, "pki/ca.pem")
    flags = {
        "name": member_name(master),
        "cert-file": cert,
        "key-file": key,
        "peer-cert-file": cert,
        "peer-key-file": key,
        "trusted-ca-file": ca,
        "peer-trusted-ca-file": ca,
        "client-cert-auth": True,
        "peer-client-cert-auth": True,
        "initial-advertise-peer-urls": peer_url(master),
        "listen-peer-urls": peer_url(master),
        "listen-client-urls": f"{client_url(master)},https://127.0.0.1:{CLIENT_PORT}",
        "advertise-client-urls": client_url(master),
        "initial-cluster-token": f"{spec.name}-etcd",
        "initial-cluster": initial_cluster(spec),
        "initial-cluster-state": "new",
        "data-dir": ETCD_DATA_DIR,
    }
    return Unit(
        name="etcd",
        description="etcd",
        documentation="https://github.com/etcd-io/etcd",
        command=binary("etcd"),
        flags=flags,
        reads=frozenset({cert, key, ca}),
        service=(("Type", "notify"), ("TimeoutStartSec", str(START_TIMEOUT_S)), ("Restart", "on-failure"),
                 ("RestartSec", "5"), ("LimitNOFILE", "40000")),
        after=("network-online.target",),
        wants=("network-online.target",),
    )
