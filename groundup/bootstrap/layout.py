"""Where things are on a node (docs/node-layout.md): distributed files by their store names, binaries,
rendered configs and the directories the executor creates."""

from __future__ import annotations

from groundup import distribution
from groundup.releases import BIN
from groundup.spec import Node

KUBERNETES_DIR = distribution.KUBERNETES_DIR
KUBELET_DIR = distribution.KUBELET_DIR
KUBE_PROXY_DIR = distribution.KUBE_PROXY_DIR
ETCD_CERT_DIR = distribution.ETCD_DIR

ETCD_DATA_DIR = "/var/lib/etcd"
AUDIT_LOG_DIR = "/var/log/kubernetes"
AUDIT_LOG = f"{AUDIT_LOG_DIR}/audit.log"
AUDIT_POLICY = f"{KUBERNETES_DIR}/audit-policy.yaml"
SCHEDULER_CONFIG = "/etc/kubernetes/config/kube-scheduler.yaml"
KUBELET_CONFIG = f"{KUBELET_DIR}/kubelet-config.yaml"
KUBELET_RESOLV_CONF = f"{KUBELET_DIR}/resolv.conf"
KUBELET_DROP_INS = "/etc/kubernetes/kubelet.conf.d"
KUBELET_NO_CGROUP_CONTROLLERS = f"{KUBELET_DIR}/no-cgroup-controllers.conf"
KUBELET_NO_CGROUP_DROP_IN = f"{KUBELET_DROP_INS}/50-no-cgroup-controllers.conf"
RESOURCE_LIMITS_NOTE = "/run/groundup/resource-limits"
KUBE_PROXY_CONFIG = f"{KUBE_PROXY_DIR}/kube-proxy-config.yaml"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CONTAINERD_DROP_INS = "/etc/containerd/conf.d"
CRICTL_CONFIG = "/etc/crictl.yaml"
CONTAINERD_SOCKET = "/var/run/containerd/containerd.sock"
CNI_CONF_DIR = "/etc/cni/net.d"
CNI_BIN_DIR = "/opt/cni/bin"
CNI_BRIDGE_CONF = f"{CNI_CONF_DIR}/10-bridge.conf"
CNI_LOOPBACK_CONF = f"{CNI_CONF_DIR}/99-loopback.conf"
MODULES_LOAD = "/etc/modules-load.d/groundup.conf"
SYSCTL_CONF = "/etc/sysctl.d/90-groundup.conf"
RUNC = "/usr/local/sbin/runc"


def binary(name: str) -> str:
    """An installed release binary (`/usr/local/bin/<name>`)."""
    return f"{BIN}/{name}"


def cni_plugin(name: str) -> str:
    return f"{CNI_BIN_DIR}/{name}"


def distributed(node: Node, relpath: str) -> str:
    """Where the distribute phase put a stored artifact on `node`; refuses one the node never receives."""
    layout = distribution.node_layout(node)
    if relpath not in layout:
        raise KeyError(f"{node.short_name} ({node.role.value}) does not receive {relpath}; "
                       f"it gets: {', '.join(sorted(layout))}")
    return layout[relpath][0]
