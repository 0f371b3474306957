"""Bootstrapping the worker nodes (kubernetes-the-hard-way 09): containerd with runc (systemd cgroup
driver), the CNI bridge with the node's own pod CIDR plus loopback, kubelet, kube-proxy, and the kernel
settings pod networking needs (applied where the kernel lets the node change them)."""

from __future__ import annotations

import json

from groundup.bootstrap import Directory, NodePlan, RenderedFile
from groundup.bootstrap.control_plane import yaml_bytes
from groundup.bootstrap.units import exec_start, unit_file
from groundup.spec import ClusterSpec, Node

CA = "/var/lib/kubernetes/ca.pem"
CONTAINERD = "/usr/local/bin/containerd"
CONTAINERD_SHIM = "/usr/local/bin/containerd-shim-runc-v2"
RUNC = "/usr/local/sbin/runc"
CONTAINERD_CONFIG = "/etc/containerd/config.toml"
CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
CNI_BIN = "/opt/cni/bin"
CNI_CONF = "/etc/cni/net.d"
BRIDGE_CONF = f"{CNI_CONF}/10-bridge.conf"
LOOPBACK_CONF = f"{CNI_CONF}/99-loopback.conf"
CNI_VERSION = "1.0.0"
KUBELET = "/usr/local/bin/kubelet"
KUBELET_CONFIG = "/var/lib/kubelet/kubelet-config.yaml"
KUBELET_KUBECONFIG = "/var/lib/kubelet/kubeconfig"
KUBE_PROXY = "/usr/local/bin/kube-proxy"
KUBE_PROXY_CONFIG = "/var/lib/kube-proxy/kube-proxy-config.yaml"
KUBE_PROXY_KUBECONFIG = "/var/lib/kube-proxy/kubeconfig"
MODULES_LOAD = "/etc/modules-load.d/groundup.conf"
SYSCTL = "/etc/sysctl.d/90-groundup.conf"
DOCS = "https://github.com/kubernetes/kubernetes"


def kubelet_cert_paths(node: Node) -> tuple[str, str]:
    """The worker's own certificate (CN system:node:<hostname>): kubelet's client and serving pair."""
    return f"/var/lib/kubelet/{node.name}.pem", f"/var/lib/kubelet/{node.name}-key.pem"


def containerd_config() -> bytes:
    """Config version 2 (containerd 1.6 and 2.x): the CRI plugin with runc under the systemd cgroup driver."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join([
        "version = 2",
        "",
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        "",
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        "",
        f"[{cri}.containerd.runtimes.runc.options]",
        "  SystemdCgroup = true",
        f'  BinaryName = "{RUNC}"',
        "",
        f"[{cri}.cni]",
        f'  bin_dir = "{CNI_BIN}"',
        f'  conf_dir = "{CNI_CONF}"',
        "",
    ]).encode()


def bridge_conf(node: Node) -> bytes:
    """The CNI bridge with host-local addresses from this worker's pod CIDR, masquerading out of it."""
    return (json.dumps({
        "cniVersion": CNI_VERSION,
        "name": "bridge",
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": True,
        "ipMasq": True,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": str(node.pod_cidr)}]], "routes": [{"dst": "0.0.0.0/0"}]},
    }, indent=2) + "\n").encode()


def loopback_conf() -> bytes:
    return (json.dumps({"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"}, indent=2) + "\n").encode()


def kubelet_config(spec: ClusterSpec, node: Node) -> bytes:
    cert, key = kubelet_cert_paths(node)
    return yaml_bytes({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "0.0.0.0",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": CA}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "systemd",
        "clusterDomain": spec.cluster_domain,
        "clusterDNS": [str(spec.cluster_dns_ip)],
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "podCIDR": str(node.pod_cidr),
        "resolvConf": "/etc/resolv.conf",
        "runtimeRequestTimeout": "15m",
        "tlsCertFile": cert,
        "tlsPrivateKeyFile": key,
        "registerNode": True,
    })


def kube_proxy_config(spec: ClusterSpec) -> bytes:
    return yaml_bytes({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": KUBE_PROXY_KUBECONFIG},
        "mode": "iptables",
        "clusterCIDR": str(spec.pod_cidr),
    })


def kernel_files() -> list[RenderedFile]:
    """br_netfilter and IP forwarding: loaded and applied by the executor, tolerated where a container refuses."""
    return [RenderedFile(MODULES_LOAD, b"overlay\nbr_netfilter\n"),
            RenderedFile(SYSCTL, b"net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\n"
                                 b"net.bridge.bridge-nf-call-ip6tables = 1\n")]


def add_worker(plan: NodePlan, spec: ClusterSpec, node: Node) -> None:
    plan.files += kernel_files()
    plan.dirs += [Directory("/var/lib/kubelet", 0o700), Directory("/var/lib/kube-proxy", 0o700),
                  Directory(CNI_BIN, 0o755)]
    cni = [RenderedFile(BRIDGE_CONF, bridge_conf(node)), RenderedFile(LOOPBACK_CONF, loopback_conf())]
    plan.add_unit("containerd", unit_file(
        "containerd container runtime", CONTAINERD, documentation="https://containerd.io", after=("network.target",),
        service={"Restart": "always", "Delegate": "yes", "KillMode": "process", "OOMScoreAdjust": "-999",
                 "LimitNOFILE": "1048576", "LimitNPROC": "infinity", "LimitCORE": "infinity"}),
        [CONTAINERD, CONTAINERD_SHIM, RUNC], [RenderedFile(CONTAINERD_CONFIG, containerd_config()), *cni])
    cert, key = kubelet_cert_paths(node)
    plan.add_unit("kubelet", unit_file(
        "Kubernetes Kubelet",
        exec_start(KUBELET, {"config": KUBELET_CONFIG, "kubeconfig": KUBELET_KUBECONFIG, "register-node": "true",
                             "v": "2"}),
        documentation=DOCS, after=("containerd.service",), requires=("containerd.service",)),
        [KUBELET, CA, cert, key, KUBELET_KUBECONFIG],
        [RenderedFile(KUBELET_CONFIG, kubelet_config(spec, node))])
    plan.add_unit("kube-proxy", unit_file(
        "Kubernetes Kube Proxy", exec_start(KUBE_PROXY, {"config": KUBE_PROXY_CONFIG}), documentation=DOCS),
        [KUBE_PROXY, KUBE_PROXY_KUBECONFIG], [RenderedFile(KUBE_PROXY_CONFIG, kube_proxy_config(spec))])
