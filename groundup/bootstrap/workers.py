"""Bootstrapping the Kubernetes workers (kubernetes-the-hard-way 09): kernel settings, containerd with
runc and the CNI bridge for the worker's own pod range, kubelet and kube-proxy."""

from __future__ import annotations

from groundup.bootstrap.layout import (CNI_BIN_DIR, CNI_BRIDGE_CONF, CNI_CONF_DIR, CNI_LOOPBACK_CONF,
                                       CONTAINERD_CONFIG, CONTAINERD_DROP_INS, CONTAINERD_SOCKET, KUBE_PROXY_CONFIG, KUBELET_CONFIG,
                                       KUBELET_DROP_INS, KUBELET_NO_CGROUP_CONTROLLERS,
                                       KUBELET_NO_CGROUP_DROP_IN, KUBELET_RESOLV_CONF, MODULES_LOAD,
                                       RESOURCE_LIMITS_NOTE, RUNC, SYSCTL_CONF, binary, cni_plugin,
                                       distributed)
from groundup.bootstrap.render import to_json, to_toml, to_yaml
from groundup.bootstrap.units import Unit, quote
from groundup.spec import ClusterSpec, Node
from groundup.versions import kubernetes_line, parse

DOCS = "https://github.com/kubernetes/kubernetes"
CNI_VERSION = "1.0.0"
"""The newest CNI spec version both plugins 1.1 (Debian 12's) and 1.6 accept."""
CNI_PLUGINS = ("bridge", "host-local", "loopback")
KERNEL_MODULES = ("overlay", "br_netfilter")
SYSCTLS = (
    ("net.ipv4.ip_forward", "1", True),
    ("net.bridge.bridge-nf-call-iptables", "1", False),
    ("net.bridge.bridge-nf-call-ip6tables", "1", False),
)
"""(key, value, required): a `-` before a key that is not required lets systemd-sysctl skip it
when br_netfilter is not loaded (a container's kernel)."""
SYSTEMD_RESOLVED_CONF = "/run/systemd/resolve/resolv.conf"
NODE_PREP = "groundup-node-prep"


def modules_load() -> bytes:
    return ("".join(f"{m}\n" for m in KERNEL_MODULES)).encode()


def sysctl_conf() -> bytes:
    return ("".join(f"{'' if required else '-'}{key} = {value}\n" for key, value, required in SYSCTLS)).encode()


CGROUP_CONTROLLERS = ("cpu", "memory", "pids")
"""What kubelet's QoS cgroups and node-allocatable enforcement write to (cpu.weight, memory.low, pids.max)."""
NO_LIMITS = "resource limits not enforced: this machine has no cgroup controllers"


def no_cgroup_controllers_config() -> bytes:
    """The kubelet drop-in for a node whose cgroup2 root lacks CGROUP_CONTROLLERS: no QoS cgroups and no
    node-allocatable enforcement (each needs those controllers; without them kubelet exits at restart with
    `memory.low can't be set: controller "memory" not available`). Nothing else differs."""
    return to_yaml({"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
                    "cgroupsPerQOS": False, "enforceNodeAllocatable": []})


def resource_limits_check() -> str:
    """Shell run at every boot: with cgroup v2 at /sys/fs/cgroup and a controller of CGROUP_CONTROLLERS
    missing, kubelet gets the no-controllers drop-in and the node says so loudly; otherwise (an EC2
    instance: controllers present, or cgroup v1) the drop-in is removed and kubelet manages resources fully."""
    wanted = " ".join(CGROUP_CONTROLLERS)
    return (f"mkdir -p {KUBELET_DROP_INS} /run/groundup; missing=''; "
            f"if [ -f /sys/fs/cgroup/cgroup.controllers ]; then for c in {wanted}; do "
            f"grep -qw $c /sys/fs/cgroup/cgroup.controllers || missing=\"$missing $c\"; done; fi; "
            f"if [ -n \"$missing\" ]; then cp {KUBELET_NO_CGROUP_CONTROLLERS} {KUBELET_NO_CGROUP_DROP_IN}; "
            f"echo \"{NO_LIMITS} (missing:$missing)\" | tee {RESOURCE_LIMITS_NOTE} >&2; "
            f"else rm -f {KUBELET_NO_CGROUP_DROP_IN}; echo enforced > {RESOURCE_LIMITS_NOTE}; fi")


def node_prep_unit() -> Unit:
    """Swap off, modules and sysctls, the resolv.conf kubelet hands to pods, and the decision whether this
    machine can enforce resource limits, at every boot.

    Each kernel step may fail without failing the unit (a container's kernel refuses them). Pods get
    systemd-resolved's upstream list where resolved runs (its 127.0.0.53 stub would loop CoreDNS),
    else /etc/resolv.conf.
    """
    link = (f"if [ -s {SYSTEMD_RESOLVED_CONF} ]; then ln -sfn {SYSTEMD_RESOLVED_CONF} {KUBELET_RESOLV_CONF}; "
            f"else ln -sfn /etc/resolv.conf {KUBELET_RESOLV_CONF}; fi")
    return Unit(
        name=NODE_PREP,
        description="Kernel settings for Kubernetes workers: swap off, overlay, br_netfilter, ip_forward",
        documentation="https://kubernetes.io/docs/setup/production-environment/container-runtimes/",
        command=None,
        reads=frozenset({MODULES_LOAD, SYSCTL_CONF, KUBELET_NO_CGROUP_CONTROLLERS}),
        service=(("Type", "oneshot"), ("RemainAfterExit", "yes"),
                 ("ExecStart", "-/sbin/swapoff -a"),
                 ("ExecStart", f"-/lib/systemd/systemd-modules-load {MODULES_LOAD}"),
                 ("ExecStart", f"-/lib/systemd/systemd-sysctl {SYSCTL_CONF}"),
                 ("ExecStart", f"/bin/sh -c {quote(link)}"),
                 ("ExecStart", f"/bin/sh -c {quote(resource_limits_check())}")),
        after=("swap.target", "systemd-modules-load.service", "systemd-sysctl.service"),
    )


def containerd_config_version(containerd_version: str) -> int:
    """The config version the spec's containerd reads without migrating it: 4 from 2.3 on, 3 before."""
    return 4 if parse(containerd_version)[:2] >= (2, 3) else 3


def containerd_config(spec: ClusterSpec) -> bytes:
    """containerd 2.x's own config version: runc with the systemd cgroup driver, the CNI bridge, and the
    pause image the spec's Kubernetes release names. Files in CONTAINERD_DROP_INS are merged over it
    (none on AWS)."""
    runtime = {
        "containerd": {
            "default_runtime_name": "runc",
            "runtimes": {"runc": {
                "runtime_type": "io.containerd.runc.v2",
                "options": {"SystemdCgroup": True, "BinaryName": RUNC},
            }},
        },
        "cni": {"bin_dirs": [CNI_BIN_DIR], "conf_dir": CNI_CONF_DIR},
    }
    images = {"snapshotter": "overlayfs", "pinned_images": {"sandbox": pause_image(spec)}}
    return to_toml({"version": containerd_config_version(spec.containerd_version), "imports": [f"{CONTAINERD_DROP_INS}/*.toml"],
                    "plugins": {"io.containerd.cri.v1.runtime": runtime, "io.containerd.cri.v1.images": images}})


def pause_image(spec: ClusterSpec) -> str:
    """The sandbox (pause) image kubeadm names for the spec's Kubernetes release."""
    return f"registry.k8s.io/pause:{kubernetes_line(spec.kubernetes_version).pause}"


def crictl_config() -> bytes:
    """crictl talks to containerd's CRI socket without being told each time."""
    return to_yaml({"runtime-endpoint": f"unix://{CONTAINERD_SOCKET}", "image-endpoint": f"unix://{CONTAINERD_SOCKET}",
                    "timeout": 10})


def bridge_conf(worker: Node) -> bytes:
    """The CNI bridge for this worker's own pod range (the seed routes each range to its worker)."""
    return to_json({
        "cniVersion": CNI_VERSION,
        "name": "bridge",
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": True,
        "ipMasq": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": str(pod_cidr(worker))}]],
            "routes": [{"dst": "0.0.0.0/0"}],
        },
    })


def loopback_conf() -> bytes:
    return to_json({"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"})


def pod_cidr(worker: Node):
    if worker.pod_cidr is None:
        raise ValueError(f"{worker.short_name} has no pod CIDR: only workers run pods")
    return worker.pod_cidr


def kubelet_cert(worker: Node) -> tuple[str, str]:
    return distributed(worker, f"pki/{worker.name}.pem"), distributed(worker, f"pki/{worker.name}-key.pem")


def kubelet_config(spec: ClusterSpec, worker: Node) -> bytes:
    cert, key = kubelet_cert(worker)
    return to_yaml({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "0.0.0.0",
        "port": 10250,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": distributed(worker, "pki/ca.pem")},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "systemd",
        "clusterDomain": spec.cluster_domain,
        "clusterDNS": [str(spec.cluster_dns_ip)],
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "enableServer": True,
        "failSwapOn": False,
        "memorySwap": {"swapBehavior": "NoSwap"},
        "podCIDR": str(pod_cidr(worker)),
        "registerNode": True,
        "resolvConf": KUBELET_RESOLV_CONF,
        "runtimeRequestTimeout": "15m",
        "tlsCertFile": cert,
        "tlsPrivateKeyFile": key,
    })


def kube_proxy_config(spec: ClusterSpec, worker: Node) -> bytes:
    return to_yaml({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": distributed(worker, "kubeconfigs/kube-proxy.kubeconfig")},
        "hostnameOverride": worker.hostname,
        "mode": "iptables",
        "clusterCIDR": str(spec.pod_cidr),
        **({"conntrack": {"maxPerCore": spec.kube_proxy_conntrack_max_per_core}}
           if spec.kube_proxy_conntrack_max_per_core is not None else {}),
    })


def containerd_unit() -> Unit:
    reads = {CONTAINERD_CONFIG, RUNC, binary("containerd-shim-runc-v2"), CNI_BRIDGE_CONF, CNI_LOOPBACK_CONF,
             *(cni_plugin(p) for p in CNI_PLUGINS)}
    return Unit(
        name="containerd",
        description="containerd container runtime",
        documentation="https://containerd.io",
        command=binary("containerd"),
        flags={"config": CONTAINERD_CONFIG},
        reads=frozenset(reads),
        service=(("Type", "notify"), ("Delegate", "yes"), ("KillMode", "process"), ("Restart", "always"),
                 ("RestartSec", "5"), ("LimitNPROC", "infinity"), ("LimitCORE", "infinity"),
                 ("LimitNOFILE", "1048576"), ("TasksMax", "infinity"), ("OOMScoreAdjust", "-999")),
        after=("network.target", f"{NODE_PREP}.service"),
        wants=(f"{NODE_PREP}.service",),
    )


def kubelet_unit(worker: Node) -> Unit:
    cert, key = kubelet_cert(worker)
    kubeconfig = distributed(worker, f"kubeconfigs/{worker.name}.kubeconfig")
    return Unit(
        name="kubelet",
        description="Kubernetes Kubelet",
        documentation=DOCS,
        command=binary("kubelet"),
        flags={"config": KUBELET_CONFIG, "config-dir": KUBELET_DROP_INS, "kubeconfig": kubeconfig,
               "register-node": "true",
               "hostname-override": worker.hostname, "node-ip": str(worker.private_ip), "v": "2"},
        reads=frozenset({KUBELET_CONFIG, KUBELET_NO_CGROUP_CONTROLLERS, kubeconfig, cert, key,
                         distributed(worker, "pki/ca.pem")}),
        after=("containerd.service", f"{NODE_PREP}.service"),
        wants=("containerd.service", f"{NODE_PREP}.service"),
    )


def kube_proxy_unit(worker: Node) -> Unit:
    return Unit(
        name="kube-proxy",
        description="Kubernetes Kube Proxy",
        documentation=DOCS,
        command=binary("kube-proxy"),
        flags={"config": KUBE_PROXY_CONFIG, "v": "2"},
        reads=frozenset({KUBE_PROXY_CONFIG, distributed(worker, "kubeconfigs/kube-proxy.kubeconfig")}),
        after=("network-online.target", f"{NODE_PREP}.service"),
        wants=("network-online.target", f"{NODE_PREP}.service"),
    )
