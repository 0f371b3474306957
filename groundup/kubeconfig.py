"""Seed step 6: the kubeconfig files, rendered in Python instead of `kubectl config`.

Each kubeconfig holds one cluster (named after the spec, CA embedded), one user (client
certificate and key embedded) and the context `default`, which is current. Pure: no Prefect.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import yaml

from groundup import pki
from groundup.artifacts import KUBECONFIG_DIR, Outcome, Store, read_optional
from groundup.spec import ClusterSpec

API_PORT = 6443
LOCAL_API_SERVER = f"https://127.0.0.1:{API_PORT}"


@dataclass(frozen=True)
class KubeconfigRequest:
    """One kubeconfig: its user, the certificate it embeds (a `CertRequest` name), its server."""

    name: str
    user: str
    certificate: str
    server: str

    @property
    def path(self) -> str:
        return f"{KUBECONFIG_DIR}/{self.name}.kubeconfig"


def api_server_url(api_endpoint: str) -> str:
    """`https://<NLB DNS name>:6443`."""
    host = api_endpoint.strip().rstrip(".")
    if not host:
        raise ValueError("api_endpoint: the NLB DNS name is required for the kubeconfigs")
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}:{API_PORT}"


def kubeconfig_requests(spec: ClusterSpec, api_endpoint: str) -> dict[str, KubeconfigRequest]:
    """Every kubeconfig of the seed, by name: one per worker kubelet, kube-proxy, controller-manager,
    scheduler (those two on the masters' loopback) and admin."""
    remote = api_server_url(api_endpoint)
    requests = [
        KubeconfigRequest(w.name, f"system:node:{w.hostname}", w.name, remote) for w in spec.workers
    ]
    requests += [
        KubeconfigRequest(pki.KUBE_PROXY, "system:kube-proxy", pki.KUBE_PROXY, remote),
        KubeconfigRequest(
            pki.KUBE_CONTROLLER_MANAGER, "system:kube-controller-manager", pki.KUBE_CONTROLLER_MANAGER, LOCAL_API_SERVER
        ),
        KubeconfigRequest(pki.KUBE_SCHEDULER, "system:kube-scheduler", pki.KUBE_SCHEDULER, LOCAL_API_SERVER),
        KubeconfigRequest(pki.ADMIN, "admin", pki.ADMIN, remote),
    ]
    return {r.name: r for r in requests}


def render_kubeconfig(
    cluster: str, server: str, ca_pem: bytes, user: str, client_cert_pem: bytes, client_key_pem: bytes
) -> str:
    """A kubeconfig as `kubectl config set-cluster/set-credentials/set-context --embed-certs` writes it."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"certificate-authority-data": _b64(ca_pem), "server": server}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": _b64(client_cert_pem), "client-key-data": _b64(client_key_pem)},
            }
        ],
        "contexts": [{"name": "default", "context": {"cluster": cluster, "user": user}}],
        "current-context": "default",
        "preferences": {},
    }
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def kubeconfig_change(stored: str | None, wanted: str) -> str | None:
    """Why the stored kubeconfig must be rewritten, or None when it already says what is wanted."""
    if stored is None:
        return "not written yet"
    if stored == wanted:
        return None
    try:
        old, new = yaml.safe_load(stored), yaml.safe_load(wanted)
        old_cluster, new_cluster = old["clusters"][0], new["clusters"][0]
        old_user, new_user = old["users"][0], new["users"][0]
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        return "stored file is not a kubeconfig"
    changes = []
    if old_cluster["cluster"].get("server") != new_cluster["cluster"]["server"]:
        changes.append(f"server now {new_cluster['cluster']['server']}")
    if old_cluster["cluster"].get("certificate-authority-data") != new_cluster["cluster"]["certificate-authority-data"]:
        changes.append("new CA")
    if old_user.get("user", {}).get("client-certificate-data") != new_user["user"]["client-certificate-data"]:
        changes.append("new client certificate")
    if old_user.get("name") != new_user["name"] or old_cluster.get("name") != new_cluster["name"]:
        changes.append("cluster or user name changed")
    return ", ".join(changes) or "content differs"


def wanted_kubeconfig(spec: ClusterSpec, request: KubeconfigRequest, store: Store) -> str:
    """The kubeconfig rendered from the stored CA and client certificate and key."""
    cert_request = pki.CertRequest(request.certificate, "", "")
    ca_pem = store.read(f"{pki.PKI_DIR}/{pki.CA}.pem")
    cert_pem = store.read(cert_request.cert_path)
    key = store.read_private_key(cert_request.key_path)
    if not pki.same_public_key(pki.load_certificate(cert_pem), key):
        raise ValueError(f"{cert_request.cert_path} does not match its key: run the PKI phase to reissue it")
    return render_kubeconfig(spec.name, request.server, ca_pem, request.user, cert_pem, pki.private_key_pem(key))


def ensure_kubeconfig(spec: ClusterSpec, request: KubeconfigRequest, store: Store) -> Outcome:
    """Write the kubeconfig (encrypted) unless the stored one already says the same."""
    wanted = wanted_kubeconfig(spec, request, store)
    stored = read_optional(store, request.path)
    reason = kubeconfig_change(stored.decode() if stored is not None else None, wanted)
    if reason is None:
        return Outcome(f"{request.name}.kubeconfig", "reused", "unchanged", (store.path(request.path),))
    path = store.write(request.path, wanted.encode(), secret=True)
    return Outcome(f"{request.name}.kubeconfig", "written", reason, (path,))
