"""Every certificate of seed step 4, checked by real openssl against the seed's subjects, SANs and usages."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from groundup import pki
from groundup.spec import ClusterSpec, KeyAlgorithm

NLB = "k8s-api-1234567890.elb.us-east-2.amazonaws.com"
EXTERNAL_IPS = {"k8s-cluster-from-ground-up-worker-0": "3.15.1.20", "worker-1": "3.15.1.21"}
SUBJECT = "C = UK, ST = London, L = England, O = {o}, OU = DAREY.IO DEVOPS, CN = {cn}"

# (CN, O) of every seed CSR.
SEED_SUBJECTS = {
    "ca": ("Kubernetes", "Kubernetes"),
    "master-kubernetes": ("kubernetes", "Kubernetes"),
    "kube-scheduler": ("system:kube-scheduler", "system:kube-scheduler"),
    "kube-proxy": ("system:kube-proxy", "system:node-proxier"),
    "kube-controller-manager": ("system:kube-controller-manager", "system:kube-controller-manager"),
    "admin": ("admin", "system:masters"),
    "service-account": ("service-accounts", "Kubernetes"),
    "k8s-cluster-from-ground-up-worker-0": ("system:node:ip-172-31-0-20", "system:nodes"),
    "k8s-cluster-from-ground-up-worker-1": ("system:node:ip-172-31-0-21", "system:nodes"),
    "k8s-cluster-from-ground-up-worker-2": ("system:node:ip-172-31-0-22", "system:nodes"),
    "etcd-master-0": ("ip-172-31-0-10", "Kubernetes"),
    "etcd-master-1": ("ip-172-31-0-11", "Kubernetes"),
    "etcd-master-2": ("ip-172-31-0-12", "Kubernetes"),
}

# The seed's master-kubernetes-csr.json `hosts` with AWS_REGION=us-east-2, plus the service IP.
SEED_APISERVER_SANS = {
    "IP Address:127.0.0.1",
    "IP Address:172.31.0.10",
    "IP Address:172.31.0.11",
    "IP Address:172.31.0.12",
    "DNS:ip-172-31-0-10",
    "DNS:ip-172-31-0-11",
    "DNS:ip-172-31-0-12",
    "DNS:ip-172-31-0-10.us-east-2.compute.internal",
    "DNS:ip-172-31-0-11.us-east-2.compute.internal",
    "DNS:ip-172-31-0-12.us-east-2.compute.internal",
    f"DNS:{NLB}",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster",
    "DNS:kubernetes.default.svc.cluster.local",
    "IP Address:10.32.0.1",
}


def issue_all(spec: ClusterSpec, directory: Path) -> dict[str, Path]:
    """Issue the CA and every leaf in memory and write the certificates as PEM files."""
    settings = spec.pki
    ca_key = pki.generate_private_key(settings.key_algorithm)
    ca_cert = pki.issue_ca(pki.ca_request(spec), settings, ca_key)
    files = {"ca": directory / "ca.pem"}
    files["ca"].write_bytes(pki.certificate_pem(ca_cert))
    for name, request in pki.leaf_requests(spec, NLB, EXTERNAL_IPS).items():
        key = pki.generate_private_key(settings.key_algorithm)
        cert = pki.issue_certificate(request, settings, key, ca_cert, ca_key)
        files[name] = directory / f"{name}.pem"
        files[name].write_bytes(pki.certificate_pem(cert))
    return files


@pytest.fixture(scope="module", params=[KeyAlgorithm.rsa2048, KeyAlgorithm.ecdsa_p256], ids=["rsa", "ecdsa"])
def issued(request, tmp_path_factory) -> tuple[KeyAlgorithm, dict[str, Path]]:
    algorithm = request.param
    spec = ClusterSpec(pki={"key_algorithm": algorithm})
    return algorithm, issue_all(spec, tmp_path_factory.mktemp(algorithm.value))


def openssl_text(path: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(path)], check=True, capture_output=True, text=True
    ).stdout


def openssl_verify(ca: Path, leaf: Path, *purpose: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["openssl", "verify", *purpose, "-CAfile", str(ca), str(leaf)], capture_output=True, text=True
    )


def extension(text: str, name: str) -> str:
    """The value line under an `X509v3 <name>` heading of `openssl x509 -text`."""
    match = re.search(rf"X509v3 {re.escape(name)}:(?: critical)? *\n\s+(.*)\n", text)
    assert match, f"no {name} in certificate"
    return match.group(1).strip()


def san_set(text: str) -> set[str]:
    return {s.strip() for s in extension(text, "Subject Alternative Name").split(",")}


def test_the_requests_cover_every_certificate_of_the_seed():
    spec = ClusterSpec()
    assert ["ca", *pki.leaf_requests(spec, NLB, {})] == list(SEED_SUBJECTS)


@pytest.mark.parametrize("name", list(SEED_SUBJECTS))
def test_subject_matches_the_seed_csr(issued, name):
    _, files = issued
    cn, o = SEED_SUBJECTS[name]
    text = openssl_text(files[name])
    assert f"Subject: {SUBJECT.format(o=o, cn=cn)}\n" in text
    assert "Issuer: " + SUBJECT.format(o="Kubernetes", cn="Kubernetes") in text


@pytest.mark.parametrize("name", [n for n in SEED_SUBJECTS if n != "ca"])
def test_every_leaf_verifies_against_the_ca_with_openssl(issued, name):
    _, files = issued
    result = openssl_verify(files["ca"], files[name])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")


@pytest.mark.parametrize("name", [n for n in SEED_SUBJECTS if n != "ca"])
def test_every_leaf_has_the_kubernetes_profile_usages(issued, name):
    algorithm, files = issued
    text = openssl_text(files[name])
    usages = "Digital Signature, Key Encipherment" if algorithm is KeyAlgorithm.rsa2048 else "Digital Signature"
    assert extension(text, "Key Usage") == usages
    assert extension(text, "Extended Key Usage") == "TLS Web Server Authentication, TLS Web Client Authentication"
    assert extension(text, "Basic Constraints") == "CA:FALSE"
    assert "X509v3 Authority Key Identifier" in text
    assert openssl_verify(files["ca"], files[name], "-purpose", "sslserver").returncode == 0
    assert openssl_verify(files["ca"], files[name], "-purpose", "sslclient").returncode == 0


def test_ca_is_a_ca_with_signing_usages(issued):
    algorithm, files = issued
    text = openssl_text(files["ca"])
    assert extension(text, "Basic Constraints") == "CA:TRUE, pathlen:0"
    expected = "Digital Signature, Key Encipherment, Certificate Sign, CRL Sign"
    if algorithm is KeyAlgorithm.ecdsa_p256:
        expected = "Digital Signature, Certificate Sign, CRL Sign"
    assert extension(text, "Key Usage") == expected
    assert extension(text, "Extended Key Usage") == "TLS Web Server Authentication, TLS Web Client Authentication"
    assert openssl_verify(files["ca"], files["ca"]).returncode == 0


def test_keys_use_the_spec_algorithm(issued):
    algorithm, files = issued
    text = openssl_text(files["admin"])
    if algorithm is KeyAlgorithm.rsa2048:
        assert "Public Key Algorithm: rsaEncryption" in text and "Public-Key: (2048 bit)" in text
    else:
        assert "Public Key Algorithm: id-ecPublicKey" in text and "NIST CURVE: P-256" in text
    assert "Signature Algorithm: " + ("sha256WithRSAEncryption" if algorithm is KeyAlgorithm.rsa2048 else "ecdsa-with-SHA256") in text


def test_apiserver_has_every_seed_san_plus_the_service_ip(issued):
    _, files = issued
    assert san_set(openssl_text(files["master-kubernetes"])) == SEED_APISERVER_SANS


def test_apiserver_takes_an_ip_endpoint_as_an_ip_san():
    request = pki.apiserver_request(ClusterSpec(), "172.31.0.10")
    assert "dns:172.31.0.10" not in request.sans and "ip:172.31.0.10" in request.sans


def test_apiserver_needs_an_endpoint():
    with pytest.raises(ValueError, match="api_endpoint"):
        pki.apiserver_request(ClusterSpec(), "")


def test_apiserver_sans_follow_region_cluster_domain_and_service_cidr():
    spec = ClusterSpec(region="us-east-1", cluster_domain="corp.example", service_cidr="10.96.0.0/12")
    sans = pki.apiserver_request(spec, NLB).sans
    assert "dns:ip-172-31-0-10.ec2.internal" in sans
    assert "dns:kubernetes.default.svc.corp.example" in sans
    assert "ip:10.96.0.1" in sans


def test_kubelet_sans_are_hostname_internal_and_external_ip(issued):
    _, files = issued
    with_public = san_set(openssl_text(files["k8s-cluster-from-ground-up-worker-0"]))
    assert with_public == {"DNS:ip-172-31-0-20", "IP Address:172.31.0.20", "IP Address:3.15.1.20"}
    by_short_name = san_set(openssl_text(files["k8s-cluster-from-ground-up-worker-1"]))
    assert by_short_name == {"DNS:ip-172-31-0-21", "IP Address:172.31.0.21", "IP Address:3.15.1.21"}
    private_only = san_set(openssl_text(files["k8s-cluster-from-ground-up-worker-2"]))
    assert private_only == {"DNS:ip-172-31-0-22", "IP Address:172.31.0.22"}


def test_etcd_sans_are_hostname_ip_and_loopback(issued):
    _, files = issued
    assert san_set(openssl_text(files["etcd-master-1"])) == {
        "DNS:ip-172-31-0-11",
        "DNS:localhost",
        "IP Address:172.31.0.11",
        "IP Address:127.0.0.1",
    }


def test_client_only_certificates_carry_no_sans(issued):
    _, files = issued
    for name in ("kube-scheduler", "kube-proxy", "kube-controller-manager", "admin", "service-account"):
        assert "Subject Alternative Name" not in openssl_text(files[name])


def test_validity_comes_from_the_spec():
    spec = ClusterSpec(pki={"validity_hours": 48})
    key = pki.generate_private_key(KeyAlgorithm.ecdsa_p256)
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    cert = pki.issue_ca(pki.ca_request(spec), spec.pki, key, now)
    assert cert.not_valid_before_utc == now - pki.BACKDATE
    assert cert.not_valid_after_utc == now + dt.timedelta(hours=48)


def test_a_leaf_never_outlives_its_ca():
    spec = ClusterSpec(pki={"validity_hours": 100, "key_algorithm": "ecdsa-p256"})
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    ca_key = pki.generate_private_key(KeyAlgorithm.ecdsa_p256)
    ca_cert = pki.issue_ca(pki.ca_request(spec), spec.pki, ca_key, now)
    key = pki.generate_private_key(KeyAlgorithm.ecdsa_p256)
    later = now + dt.timedelta(hours=50)
    leaf = pki.issue_certificate(pki.admin_request(spec), spec.pki, key, ca_cert, ca_key, later)
    assert leaf.not_valid_after_utc == ca_cert.not_valid_after_utc


def test_subject_fields_come_from_the_spec():
    spec = ClusterSpec(
        pki={
            "ca_common_name": "Acme Root",
            "subject": {"country": "DE", "locality": "Berlin", "state": "BE", "organization": "Acme", "organizational_unit": "Ops"},
        }
    )
    name = pki.subject_name(pki.ca_request(spec), spec.pki).rfc4514_string()
    assert name == "CN=Acme Root,OU=Ops,O=Acme,L=Berlin,ST=BE,C=DE"
    assert pki.subject_name(pki.admin_request(spec), spec.pki).rfc4514_string().startswith("CN=admin,OU=Ops,O=system:masters")


def test_ecdsa_keys_are_p256():
    key = pki.generate_private_key(KeyAlgorithm.ecdsa_p256)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert pki.key_algorithm(key) is KeyAlgorithm.ecdsa_p256
