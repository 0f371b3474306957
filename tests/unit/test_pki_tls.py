"""A real TLS handshake on 127.0.0.1: the apiserver certificate serves, the admin certificate authenticates.

The stored keys are passphrase-encrypted PKCS#8 files, loaded by Python's ssl (OpenSSL) directly.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from prefect.filesystems import LocalFileSystem

from blocks.artifact_store import ArtifactStore
from groundup import pki
from groundup.spec import ClusterSpec, KeyAlgorithm

NLB = "k8s-api-1234567890.elb.us-east-2.amazonaws.com"
PASSPHRASE = b"tls-test-passphrase"


@pytest.fixture(scope="module", params=[KeyAlgorithm.rsa2048, KeyAlgorithm.ecdsa_p256], ids=["rsa", "ecdsa"])
def pki_dir(request, tmp_path_factory) -> Path:
    """A full PKI in a local store; returns the cluster's directory in it."""
    base = tmp_path_factory.mktemp("store")
    spec = ClusterSpec(name="tls", pki={"key_algorithm": request.param})
    store = ArtifactStore(LocalFileSystem(basepath=str(base)), spec.name, PASSPHRASE)
    pki.ensure_ca(spec, store)
    for name in (pki.APISERVER, pki.ADMIN):
        pki.ensure_certificate(spec, pki.leaf_requests(spec, NLB, {})[name], store)
    other = ArtifactStore(LocalFileSystem(basepath=str(base)), "other", PASSPHRASE)
    pki.ensure_ca(spec, other)
    pki.ensure_certificate(spec, pki.admin_request(spec), other)
    return base


def server_context(d: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "tls/pki/master-kubernetes.pem", d / "tls/pki/master-kubernetes-key.pem", PASSPHRASE)
    ctx.load_verify_locations(d / "tls/pki/ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(d: Path, cluster: str = "tls") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(d / "tls/pki/ca.pem")
    ctx.load_cert_chain(d / f"{cluster}/pki/admin.pem", d / f"{cluster}/pki/admin-key.pem", PASSPHRASE)
    return ctx


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_hostname: str) -> dict:
    """Connect once; returns the peer subject each side saw, or the error each side hit."""
    outcome: dict = {}
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                outcome["client"] = dict(x[0] for x in tls.getpeercert()["subject"])
                tls.recv(1)
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            outcome["server_error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                outcome["server"] = dict(x[0] for x in tls.getpeercert()["subject"])
                tls.sendall(b"x")
                outcome["reply"] = tls.recv(2)
    except (ssl.SSLError, OSError) as exc:
        outcome["client_error"] = exc
    thread.join(timeout=5)
    listener.close()
    return outcome


APISERVER_NAMES = sorted(
    s.split(":", 1)[1] for s in pki.apiserver_request(ClusterSpec(name="tls"), NLB).sans
)


@pytest.mark.parametrize("server_hostname", APISERVER_NAMES)
def test_admin_reaches_the_apiserver_by_every_san(pki_dir, server_hostname):
    outcome = handshake(server_context(pki_dir), client_context(pki_dir), server_hostname)
    assert outcome.get("reply") == b"ok", outcome
    assert outcome["server"]["commonName"] == "kubernetes"
    assert outcome["client"] == {
        "countryName": "UK",
        "stateOrProvinceName": "London",
        "localityName": "England",
        "organizationName": "system:masters",
        "organizationalUnitName": "DAREY.IO DEVOPS",
        "commonName": "admin",
    }


@pytest.mark.parametrize("server_hostname", ["kubernetes.svc.cluster.local", "ip-172-31-0-13", "172.31.0.20", "example.com"])
def test_a_name_outside_the_sans_is_rejected(pki_dir, server_hostname):
    outcome = handshake(server_context(pki_dir), client_context(pki_dir), server_hostname)
    assert "reply" not in outcome
    assert isinstance(outcome["client_error"], ssl.SSLCertVerificationError)
    assert "mismatch" in str(outcome["client_error"]) or "match" in str(outcome["client_error"])


def test_a_client_certificate_from_another_ca_is_refused(pki_dir):
    outcome = handshake(server_context(pki_dir), client_context(pki_dir, cluster="other"), "kubernetes")
    assert "reply" not in outcome and "client" not in outcome
    assert isinstance(outcome["server_error"], ssl.SSLError)
    assert "certificate verify failed" in str(outcome["server_error"])


def test_a_client_without_a_certificate_is_refused(pki_dir):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki_dir / "tls/pki/ca.pem")
    outcome = handshake(server_context(pki_dir), ctx, "kubernetes")
    assert "reply" not in outcome
    assert "certificate" in str(outcome["server_error"])
