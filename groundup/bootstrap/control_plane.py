"""Bootstrapping the Kubernetes control plane (kubernetes-the-hard-way 08) on every master:
kube-apiserver, kube-controller-manager and kube-scheduler, with the seed's HA topology."""

from __future__ import annotations

from groundup.bootstrap.etcd import etcd_servers
from groundup.bootstrap.layout import (AUDIT_LOG, AUDIT_POLICY, SCHEDULER_CONFIG, binary, distributed)
from groundup.bootstrap.render import to_yaml
from groundup.bootstrap.units import Unit
from groundup.kubeconfig import API_PORT
from groundup.spec import ClusterSpec, Node

DOCS = "https://github.com/kubernetes/kubernetes"
ADMISSION_PLUGINS = ("NamespaceLifecycle", "NodeRestriction", "LimitRanger", "ServiceAccount",
                     "DefaultStorageClass", "ResourceQuota")
NODE_PORT_RANGE = "30000-32767"
APISERVER_STOP_S = 15
"""kube-apiserver stops listening and drains its short requests at once on SIGTERM, then waits up to its
request timeout (60 s) for the open watch connections it says it will not wait for ("not going to wait for
active watch request(s) to drain"): measured, every stop and restart took 60 s. After 15 s systemd kills it;
clients re-establish their watches on another master."""


def audit_policy() -> bytes:
    """Metadata for every request (never bodies: Secrets stay out of the log), probes not logged."""
    return to_yaml({
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "None", "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*", "/version"]},
            {"level": "None", "users": ["system:kube-proxy"], "verbs": ["watch"],
             "resources": [{"group": "", "resources": ["endpoints", "services", "services/status"]}]},
            {"level": "Metadata"},
        ],
    })


def scheduler_config(master: Node) -> bytes:
    return to_yaml({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": distributed(master, "kubeconfigs/kube-scheduler.kubeconfig")},
        "leaderElection": {"leaderElect": True},
    })


def service_account_issuer(api_endpoint: str) -> str:
    """The issuer in service-account tokens: the API as clients reach it, through the load balancer."""
    return f"https://{api_endpoint}:{API_PORT}"


def apiserver_unit(spec: ClusterSpec, master: Node, api_endpoint: str) -> Unit:
    ca = distributed(master, "pki/ca.pem")
    cert = distributed(master, "pki/master-kubernetes.pem")
    key = distributed(master, "pki/master-kubernetes-key.pem")
    sa_cert = distributed(master, "pki/service-account.pem")
    sa_key = distributed(master, "pki/service-account-key.pem")
    encryption = distributed(master, "encryption-config.yaml")
    flags = {
        "advertise-address": str(master.private_ip),
        "allow-privileged": "true",
        "audit-log-maxage": "30",
        "audit-log-maxbackup": "3",
        "audit-log-maxsize": "100",
        "audit-log-path": AUDIT_LOG,
        "audit-policy-file": AUDIT_POLICY,
        "authorization-mode": "Node,RBAC",
        "bind-address": "0.0.0.0",
        "secure-port": str(API_PORT),
        "client-ca-file": ca,
        "enable-admission-plugins": ",".join(ADMISSION_PLUGINS),
        "encryption-provider-config": encryption,
        "etcd-cafile": ca,
        "etcd-certfile": cert,
        "etcd-keyfile": key,
        "etcd-servers": etcd_servers(spec),
        "event-ttl": "1h",
        "kubelet-certificate-authority": ca,
        "kubelet-client-certificate": cert,
        "kubelet-client-key": key,
        "kubelet-preferred-address-types": "InternalIP,InternalDNS,Hostname",
        "runtime-config": "api/all=true",
        "service-account-issuer": service_account_issuer(api_endpoint),
        "service-account-key-file": sa_cert,
        "service-account-signing-key-file": sa_key,
        "service-cluster-ip-range": str(spec.service_cidr),
        "service-node-port-range": NODE_PORT_RANGE,
        "tls-cert-file": cert,
        "tls-private-key-file": key,
        "v": "2",
    }
    return Unit(
        name="kube-apiserver",
        description="Kubernetes API Server",
        documentation=DOCS,
        command=binary("kube-apiserver"),
        flags=flags,
        reads=frozenset({ca, cert, key, sa_cert, sa_key, encryption, AUDIT_POLICY}),
        service=(("Restart", "on-failure"), ("RestartSec", "5"), ("TimeoutStopSec", str(APISERVER_STOP_S))),
        after=("network-online.target", "etcd.service"),
        wants=("network-online.target", "etcd.service"),
    )


def controller_manager_unit(spec: ClusterSpec, master: Node) -> Unit:
    ca = distributed(master, "pki/ca.pem")
    ca_key = distributed(master, "pki/ca-key.pem")
    sa_key = distributed(master, "pki/service-account-key.pem")
    kubeconfig = distributed(master, "kubeconfigs/kube-controller-manager.kubeconfig")
    flags = {
        "bind-address": "127.0.0.1",
        "allocate-node-cidrs": "false",
        "cluster-cidr": str(spec.pod_cidr),
        "cluster-name": spec.name,
        "cluster-signing-cert-file": ca,
        "cluster-signing-key-file": ca_key,
        "kubeconfig": kubeconfig,
        "leader-elect": "true",
        "root-ca-file": ca,
        "service-account-private-key-file": sa_key,
        "service-cluster-ip-range": str(spec.service_cidr),
        "use-service-account-credentials": "true",
        "v": "2",
    }
    return Unit(
        name="kube-controller-manager",
        description="Kubernetes Controller Manager",
        documentation=DOCS,
        command=binary("kube-controller-manager"),
        flags=flags,
        reads=frozenset({ca, ca_key, sa_key, kubeconfig}),
        after=("kube-apiserver.service",),
    )


def scheduler_unit(master: Node) -> Unit:
    return Unit(
        name="kube-scheduler",
        description="Kubernetes Scheduler",
        documentation=DOCS,
        command=binary("kube-scheduler"),
        flags={"config": SCHEDULER_CONFIG, "v": "2"},
        reads=frozenset({SCHEDULER_CONFIG, distributed(master, "kubeconfigs/kube-scheduler.kubeconfig")}),
        after=("kube-apiserver.service",),
    )
