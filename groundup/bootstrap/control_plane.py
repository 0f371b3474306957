"""Bootstrapping the control plane (kubernetes-the-hard-way 08) on every master: kube-apiserver with
etcd over mTLS, encryption at rest, audit log and Node,RBAC; kube-controller-manager; kube-scheduler."""

from __future__ import annotations

import yaml

from groundup.bootstrap import NodePlan, RenderedFile
from groundup.bootstrap.units import exec_start, unit_file
from groundup.spec import ClusterSpec, Node

K8S = "/var/lib/kubernetes"
CA, CA_KEY = f"{K8S}/ca.pem", f"{K8S}/ca-key.pem"
API_CERT, API_KEY = f"{K8S}/master-kubernetes.pem", f"{K8S}/master-kubernetes-key.pem"
SA_CERT, SA_KEY = f"{K8S}/service-account.pem", f"{K8S}/service-account-key.pem"
ENCRYPTION_CONFIG = f"{K8S}/encryption-config.yaml"
AUDIT_POLICY = f"{K8S}/audit-policy.yaml"
AUDIT_LOG = "/var/log/audit.log"
CM_KUBECONFIG = f"{K8S}/kube-controller-manager.kubeconfig"
SCHEDULER_KUBECONFIG = f"{K8S}/kube-scheduler.kubeconfig"
SCHEDULER_CONFIG = "/etc/kubernetes/config/kube-scheduler.yaml"
DOCS = "https://github.com/kubernetes/kubernetes"


def yaml_bytes(data: dict) -> bytes:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).encode()


def audit_policy() -> bytes:
    """Metadata for every request: who did what, never request or response bodies (no Secret values)."""
    return yaml_bytes({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [{"level": "Metadata"}]})


def apiserver_flags(spec: ClusterSpec, node: Node, api_endpoint: str) -> dict[str, str | bool]:
    return {
        "advertise-address": str(node.private_ip),
        "allow-privileged": "true",
        "audit-log-maxage": "30",
        "audit-log-maxbackup": "3",
        "audit-log-maxsize": "100",
        "audit-log-path": AUDIT_LOG,
        "audit-policy-file": AUDIT_POLICY,
        "authorization-mode": "Node,RBAC",
        "bind-address": "0.0.0.0",
        "secure-port": "6443",
        "client-ca-file": CA,
        "enable-admission-plugins": "NamespaceLifecycle,NodeRestriction,LimitRanger,ServiceAccount,"
                                    "DefaultStorageClass,ResourceQuota",
        "etcd-cafile": CA,
        "etcd-certfile": API_CERT,
        "etcd-keyfile": API_KEY,
        "etcd-servers": ",".join(f"https://{m.private_ip}:2379" for m in spec.masters),
        "event-ttl": "1h",
        "encryption-provider-config": ENCRYPTION_CONFIG,
        "kubelet-certificate-authority": CA,
        "kubelet-client-certificate": API_CERT,
        "kubelet-client-key": API_KEY,
        "runtime-config": "api/all=true",
        "service-account-key-file": SA_CERT,
        "service-account-signing-key-file": SA_KEY,
        "service-account-issuer": f"https://{api_endpoint}:6443",
        "service-cluster-ip-range": str(spec.service_cidr),
        "service-node-port-range": "30000-32767",
        "tls-cert-file": API_CERT,
        "tls-private-key-file": API_KEY,
        "v": "2",
    }


def controller_manager_flags(spec: ClusterSpec) -> dict[str, str | bool]:
    return {
        "bind-address": "0.0.0.0",
        "allocate-node-cidrs": "true",
        "cluster-cidr": str(spec.pod_cidr),
        "cluster-name": spec.name,
        "cluster-signing-cert-file": CA,
        "cluster-signing-key-file": CA_KEY,
        "kubeconfig": CM_KUBECONFIG,
        "leader-elect": "true",
        "root-ca-file": CA,
        "service-account-private-key-file": SA_KEY,
        "service-cluster-ip-range": str(spec.service_cidr),
        "use-service-account-credentials": "true",
        "v": "2",
    }


def scheduler_config() -> bytes:
    return yaml_bytes({
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": SCHEDULER_KUBECONFIG},
        "leaderElection": {"leaderElect": True},
    })


def add_control_plane(plan: NodePlan, spec: ClusterSpec, node: Node, api_endpoint: str) -> None:
    binary = "/usr/local/bin/kube-apiserver"
    policy = RenderedFile(AUDIT_POLICY, audit_policy())
    plan.add_unit("kube-apiserver", unit_file(
        "Kubernetes API Server", exec_start(binary, apiserver_flags(spec, node, api_endpoint)),
        documentation=DOCS, after=("etcd.service",)),
        [binary, CA, API_CERT, API_KEY, SA_CERT, SA_KEY, ENCRYPTION_CONFIG], [policy])
    binary = "/usr/local/bin/kube-controller-manager"
    plan.add_unit("kube-controller-manager", unit_file(
        "Kubernetes Controller Manager", exec_start(binary, controller_manager_flags(spec)),
        documentation=DOCS, after=("kube-apiserver.service",)),
        [binary, CA, CA_KEY, SA_KEY, CM_KUBECONFIG])
    binary = "/usr/local/bin/kube-scheduler"
    plan.add_unit("kube-scheduler", unit_file(
        "Kubernetes Scheduler", exec_start(binary, {"config": SCHEDULER_CONFIG, "v": "2"}),
        documentation=DOCS, after=("kube-apiserver.service",)),
        [binary, SCHEDULER_KUBECONFIG], [RenderedFile(SCHEDULER_CONFIG, scheduler_config())])
