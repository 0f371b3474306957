"""Cluster manifests applied once the API answers through the load balancer (kubernetes-the-hard-way 08
and the DNS add-on): the apiserver -> kubelet RBAC, then CoreDNS serving the spec's cluster domain."""

from __future__ import annotations

import json

from groundup.bootstrap.render import to_yaml_documents
from groundup.spec import ClusterSpec

APISERVER_USER = "kubernetes"
"""The CN of master-kubernetes.pem, the client certificate kube-apiserver shows kubelets."""
KUBE_SYSTEM = "kube-system"
COREDNS_REPLICAS = 2
COREDNS_LABELS = {"k8s-app": "kube-dns"}


def apiserver_to_kubelet_rbac() -> list[dict]:
    """Lets the API server (user `kubernetes`) reach kubelets for logs, exec and metrics."""
    role = "system:kube-apiserver-to-kubelet"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": role,
                "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
                "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            },
            "rules": [{"apiGroups": [""],
                       "resources": ["nodes/proxy", "nodes/stats", "nodes/log", "nodes/spec", "nodes/metrics"],
                       "verbs": ["*"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:kube-apiserver"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": APISERVER_USER}],
        },
    ]


def pod_cidr_patches(spec: ClusterSpec, nodes_json: str) -> tuple[dict[str, str], list[str], list[str]]:
    """What makes each worker's Node carry the spec's pod range (the one its CNI bridge hands out and the
    VPC routes to it), read from `kubectl get nodes -o json`.

    Returns (node name -> merge patch for a Node whose podCIDR is still empty, workers not registered
    yet, conflicts). The controller-manager allocates no ranges itself (`--allocate-node-cidrs=false`):
    it would hand them out in registration order, not the spec's. A podCIDR, once set, cannot change, so
    a Node holding another range is a conflict to report, never to patch.
    """
    items = {n["metadata"]["name"]: n for n in json.loads(nodes_json or "{}").get("items", [])}
    patches, missing, conflicts = {}, [], []
    for worker in spec.workers:
        node = items.get(worker.hostname)
        if node is None:
            missing.append(f"{worker.short_name} ({worker.hostname})")
            continue
        wanted = str(worker.pod_cidr)
        current = node.get("spec", {}).get("podCIDR")
        if not current:
            patches[worker.hostname] = json.dumps({"spec": {"podCIDR": wanted, "podCIDRs": [wanted]}})
        elif current != wanted:
            conflicts.append(f"{worker.short_name}: its Node {worker.hostname} has podCIDR {current}, the spec "
                             f"gives it {wanted} (a podCIDR cannot change: delete the Node object and restart "
                             "its kubelet to register it again)")
    return patches, missing, conflicts


def corefile(spec: ClusterSpec) -> str:
    return (
        ".:53 {\n"
        "    errors\n"
        "    health {\n"
        "        lameduck 5s\n"
        "    }\n"
        "    ready\n"
        f"    kubernetes {spec.cluster_domain} in-addr.arpa ip6.arpa {{\n"
        "        pods insecure\n"
        "        fallthrough in-addr.arpa ip6.arpa\n"
        "        ttl 30\n"
        "    }\n"
        "    prometheus :9153\n"
        "    forward . /etc/resolv.conf {\n"
        "        max_concurrent 1000\n"
        "    }\n"
        "    cache 30\n"
        "    loop\n"
        "    reload\n"
        "    loadbalance\n"
        "}\n"
    )


def coredns_image(spec: ClusterSpec) -> str:
    return f"registry.k8s.io/coredns/coredns:v{spec.coredns_version}"


def coredns(spec: ClusterSpec) -> list[dict]:
    """ServiceAccount, RBAC, Corefile, Deployment and the `kube-dns` Service at the cluster DNS IP."""
    meta = {"name": "coredns", "namespace": KUBE_SYSTEM}
    container = {
        "name": "coredns",
        "image": coredns_image(spec),
        "imagePullPolicy": "IfNotPresent",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}},
        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": True}],
        "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080, "scheme": "HTTP"},
                          "initialDelaySeconds": 60, "timeoutSeconds": 5, "successThreshold": 1,
                          "failureThreshold": 5},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181, "scheme": "HTTP"}},
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                         "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": KUBE_SYSTEM}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": dict(meta), "data": {"Corefile": corefile(spec)}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {**meta, "labels": {**COREDNS_LABELS, "kubernetes.io/name": "CoreDNS"}},
            "spec": {
                "replicas": COREDNS_REPLICAS,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "selector": {"matchLabels": dict(COREDNS_LABELS)},
                "template": {
                    "metadata": {"labels": dict(COREDNS_LABELS)},
                    "spec": {
                        "priorityClassName": "system-cluster-critical",
                        "serviceAccountName": "coredns",
                        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                        "nodeSelector": {"kubernetes.io/os": "linux"},
                        "dnsPolicy": "Default",
                        "containers": [container],
                        "volumes": [{"name": "config-volume", "configMap": {
                            "name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": KUBE_SYSTEM,
                         "labels": {**COREDNS_LABELS, "kubernetes.io/cluster-service": "true",
                                    "kubernetes.io/name": "CoreDNS"},
                         "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
            "spec": {
                "selector": dict(COREDNS_LABELS),
                "clusterIP": str(spec.cluster_dns_ip),
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    {"name": "metrics", "port": 9153, "protocol": "TCP"},
                ],
            },
        },
    ]


def cluster_manifests(spec: ClusterSpec) -> list[tuple[str, bytes]]:
    """(name, YAML stream) in apply order; each stream is one `kubectl apply -f -`."""
    return [
        ("apiserver-to-kubelet RBAC", to_yaml_documents(apiserver_to_kubelet_rbac())),
        ("CoreDNS", to_yaml_documents(coredns(spec))),
    ]
