"""Seed step 4: the certificate authority and every TLS certificate of the cluster.

Replaces cfssl: each `CertRequest` is one of the seed's CSR JSON files (subject and `hosts`), the
issued certificates carry the seed's `kubernetes` profile (signing, key encipherment, server auth,
client auth). `ensure_ca` and `ensure_certificate` reuse a stored certificate while its subject,
SANs, key and issuing CA still match, and issue a new key and certificate otherwise.
Pure: no Prefect; the store is any `groundup.artifacts.Store`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Mapping, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from groundup.artifacts import PKI_DIR, Outcome, Store, read_optional
from groundup.spec import ClusterSpec, KeyAlgorithm, Node, PKISettings

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]

CA = "ca"
APISERVER = "master-kubernetes"
KUBE_SCHEDULER = "kube-scheduler"
KUBE_PROXY = "kube-proxy"
KUBE_CONTROLLER_MANAGER = "kube-controller-manager"
ADMIN = "admin"
SERVICE_ACCOUNT = "service-account"
BACKDATE = dt.timedelta(minutes=5)
RENEW_BEFORE_FRACTION = 0.1
"""Reissue a certificate once less than this fraction of its lifetime is left."""


@dataclass(frozen=True)
class CertRequest:
    """One certificate as the seed's CSR JSON describes it: subject CN and O, and its `hosts`."""

    name: str
    common_name: str
    organization: str
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()

    @property
    def cert_path(self) -> str:
        return f"{PKI_DIR}/{self.name}.pem"

    @property
    def key_path(self) -> str:
        return f"{PKI_DIR}/{self.name}-key.pem"

    @property
    def sans(self) -> frozenset[str]:
        """SANs as `dns:<name>` and `ip:<address>` strings, order-free."""
        return frozenset(
            [f"dns:{name}" for name in self.dns_names]
            + [f"ip:{ipaddress.ip_address(ip)}" for ip in self.ip_addresses]
        )


def ca_request(spec: ClusterSpec) -> CertRequest:
    """The self-signed root CA (seed `ca-csr.json`)."""
    return CertRequest(CA, spec.pki.ca_common_name, spec.pki.subject.organization)


def apiserver_request(spec: ClusterSpec, api_endpoint: str) -> CertRequest:
    """kube-apiserver (seed `master-kubernetes-csr.json`) plus the `kubernetes` service IP."""
    dns = [m.hostname for m in spec.masters]
    dns += [f"{m.hostname}.{spec.internal_domain}" for m in spec.masters]
    ips = ["127.0.0.1"] + [str(m.private_ip) for m in spec.masters]
    _add_host(api_endpoint, dns, ips)
    dns += [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster",
        f"kubernetes.default.svc.{spec.cluster_domain}",
    ]
    ips.append(str(spec.kubernetes_service_ip))
    return CertRequest(APISERVER, "kubernetes", spec.pki.subject.organization, _unique(dns), _unique(ips))


def kube_scheduler_request(spec: ClusterSpec) -> CertRequest:
    return CertRequest(KUBE_SCHEDULER, "system:kube-scheduler", "system:kube-scheduler")


def kube_proxy_request(spec: ClusterSpec) -> CertRequest:
    return CertRequest(KUBE_PROXY, "system:kube-proxy", "system:node-proxier")


def kube_controller_manager_request(spec: ClusterSpec) -> CertRequest:
    return CertRequest(KUBE_CONTROLLER_MANAGER, "system:kube-controller-manager", "system:kube-controller-manager")


def admin_request(spec: ClusterSpec) -> CertRequest:
    return CertRequest(ADMIN, "admin", "system:masters")


def service_account_request(spec: ClusterSpec) -> CertRequest:
    """The key pair that signs service account tokens (seed `service-account-csr.json`)."""
    return CertRequest(SERVICE_ACCOUNT, "service-accounts", spec.pki.subject.organization)


def worker_kubelet_request(spec: ClusterSpec, worker: Node, external_ip: str | None) -> CertRequest:
    """A worker's kubelet (Node Authorizer identity), SANs hostname, internal and external IP."""
    ips = [str(worker.private_ip)] + ([external_ip] if external_ip else [])
    return CertRequest(
        worker.name, f"system:node:{worker.hostname}", "system:nodes", (worker.hostname,), _unique(ips)
    )


def etcd_request(spec: ClusterSpec, master: Node) -> CertRequest:
    """etcd server and peer certificate of one master."""
    return CertRequest(
        f"etcd-{master.short_name}",
        master.hostname,
        spec.pki.subject.organization,
        (master.hostname, "localhost"),
        (str(master.private_ip), "127.0.0.1"),
    )


def leaf_requests(
    spec: ClusterSpec, api_endpoint: str, external_ips: Mapping[str, str | None]
) -> dict[str, CertRequest]:
    """Every certificate the CA signs, by artifact name.

    `external_ips` maps node names (`<cluster>-worker-0`, or short names `worker-0`) to public IPs.
    """
    requests = [
        apiserver_request(spec, api_endpoint),
        kube_scheduler_request(spec),
        kube_proxy_request(spec),
        kube_controller_manager_request(spec),
        admin_request(spec),
        service_account_request(spec),
    ]
    requests += [worker_kubelet_request(spec, w, external_ip(external_ips, w)) for w in spec.workers]
    requests += [etcd_request(spec, m) for m in spec.masters]
    return {r.name: r for r in requests}


def external_ip(external_ips: Mapping[str, str | None], node: Node) -> str | None:
    """A node's public IP from a map keyed by node name or short name."""
    return external_ips.get(node.name) or external_ips.get(node.short_name) or None


def _add_host(host: str, dns: list[str], ips: list[str]) -> None:
    if not host:
        raise ValueError("api_endpoint: the NLB DNS name (or an IP) is required for the apiserver SANs")
    try:
        ips.append(str(ipaddress.ip_address(host)))
    except ValueError:
        dns.append(host.lower().rstrip("."))


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def generate_private_key(algorithm: KeyAlgorithm) -> PrivateKey:
    """A new RSA 2048 (the seed's) or ECDSA P-256 key."""
    if algorithm is KeyAlgorithm.ecdsa_p256:
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_algorithm(key: PrivateKey | x509.Certificate) -> KeyAlgorithm | None:
    """The spec's name for a key's algorithm, None for anything else."""
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048:
        return KeyAlgorithm.rsa2048
    if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        return KeyAlgorithm.ecdsa_p256
    return None


def subject_name(request: CertRequest, settings: PKISettings) -> x509.Name:
    """The subject in cfssl's order: C, ST, L, O, OU, CN."""
    subject = settings.subject
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, subject.country),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, subject.state),
            x509.NameAttribute(NameOID.LOCALITY_NAME, subject.locality),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, request.organization),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, subject.organizational_unit),
            x509.NameAttribute(NameOID.COMMON_NAME, request.common_name),
        ]
    )


def _key_usage(key: PrivateKey, *, ca: bool) -> x509.KeyUsage:
    # RFC 5480: an EC key must not assert key encipherment.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(key, rsa.RSAPrivateKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    request: CertRequest, settings: PKISettings, key: PrivateKey, issuer: x509.Name, now: dt.datetime, not_after: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject_name(request, settings))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def issue_ca(request: CertRequest, settings: PKISettings, key: PrivateKey, now: dt.datetime | None = None) -> x509.Certificate:
    """A self-signed CA certificate valid for `settings.validity_hours`."""
    now = now or _now()
    name = subject_name(request, settings)
    builder = (
        _builder(request, settings, key, name, now, now + dt.timedelta(hours=settings.validity_hours))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key, ca=True), critical=True)
    )
    return builder.sign(key, hashes.SHA256())


def issue_certificate(
    request: CertRequest,
    settings: PKISettings,
    key: PrivateKey,
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """A leaf certificate signed by the CA, never outliving it."""
    now = now or _now()
    not_after = min(now + dt.timedelta(hours=settings.validity_hours), ca_cert.not_valid_after_utc)
    builder = (
        _builder(request, settings, key, ca_cert.subject, now, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key, ca=False), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False  # type: ignore[arg-type]
        )
    )
    if request.sans:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in request.dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in request.ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def certificate_sans(cert: x509.Certificate) -> frozenset[str]:
    """A certificate's SANs in the form of `CertRequest.sans`."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(
        [f"dns:{d}" for d in ext.get_values_for_type(x509.DNSName)]
        + [f"ip:{ip}" for ip in ext.get_values_for_type(x509.IPAddress)]
    )


def reissue_reason(
    request: CertRequest,
    settings: PKISettings,
    cert: x509.Certificate | None,
    key: PrivateKey | None,
    ca_cert: x509.Certificate | None = None,
    now: dt.datetime | None = None,
) -> str | None:
    """Why a stored certificate cannot be reused, or None when it can.

    `ca_cert` None means `cert` is the CA itself.
    """
    if cert is None:
        return "not issued yet"
    if key is None:
        return "its private key is missing"
    if not same_public_key(cert, key):
        return "certificate does not match its private key"
    if key_algorithm(key) is not settings.key_algorithm:
        return f"key algorithm changed to {settings.key_algorithm.value}"
    wanted = subject_name(request, settings)
    if cert.subject != wanted:
        return f"subject changed: {cert.subject.rfc4514_string()} -> {wanted.rfc4514_string()}"
    sans = certificate_sans(cert)
    if sans != request.sans:
        added, removed = sorted(request.sans - sans), sorted(sans - request.sans)
        change = [f"+{s}" for s in added] + [f"-{s}" for s in removed]
        return "SANs changed: " + " ".join(change)
    if ca_cert is None:
        if not _is_ca(cert):
            return "not a CA certificate"
    elif not signed_by(cert, ca_cert):
        return "not signed by the current CA"
    return _expiry_reason(cert, now or _now())


def _expiry_reason(cert: x509.Certificate, now: dt.datetime) -> str | None:
    not_after = cert.not_valid_after_utc
    lifetime = not_after - cert.not_valid_before_utc
    if now >= not_after:
        return f"expired {not_after:%Y-%m-%d %H:%M} UTC"
    if not_after - now < lifetime * RENEW_BEFORE_FRACTION:
        return f"expires {not_after:%Y-%m-%d %H:%M} UTC, within the renewal window"
    if now < cert.not_valid_before_utc:
        return "not valid yet (clock skew?)"
    return None


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def same_public_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    """The certificate was issued for this private key."""
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*der) == key.public_key().public_bytes(*der)


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """The certificate's signature verifies with the CA's key and names the CA as issuer."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_certificate(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM: what kubeconfigs embed and the nodes receive."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class StoredPair:
    """A certificate and its key as found in the store (either may be missing or unreadable)."""

    cert: x509.Certificate | None
    key: PrivateKey | None


def read_pair(store: Store, request: CertRequest) -> StoredPair:
    """The stored certificate and key of a request.

    An unreadable certificate counts as missing (it is public and reissued); a key that does not
    decrypt raises: the passphrase is wrong, and reissuing would hide it.
    """
    pem = read_optional(store, request.cert_path)
    cert = None
    if pem is not None:
        try:
            cert = load_certificate(pem)
        except ValueError:
            cert = None
    try:
        key = store.read_private_key(request.key_path)
    except FileNotFoundError:
        key = None
    return StoredPair(cert, key)


def ensure_ca(spec: ClusterSpec, store: Store, now: dt.datetime | None = None) -> Outcome:
    """Reuse the stored CA while it matches the spec, or create a new one (then every leaf follows)."""
    request = ca_request(spec)
    pair = read_pair(store, request)
    reason = reissue_reason(request, spec.pki, pair.cert, pair.key, None, now)
    if reason is None:
        assert pair.cert is not None
        return _outcome(store, request, "reused", "unchanged", pair.cert)
    key = generate_private_key(spec.pki.key_algorithm)
    cert = issue_ca(request, spec.pki, key, now)
    _write_pair(store, request, key, cert)
    return _outcome(store, request, "issued", reason, cert)


def ensure_certificate(
    spec: ClusterSpec, request: CertRequest, store: Store, now: dt.datetime | None = None
) -> Outcome:
    """Reuse the stored leaf while subject, SANs, key and CA match; otherwise issue a new key and cert."""
    ca_cert = stored_ca_certificate(store)
    pair = read_pair(store, request)
    reason = reissue_reason(request, spec.pki, pair.cert, pair.key, ca_cert, now)
    if reason is None:
        assert pair.cert is not None
        return _outcome(store, request, "reused", "unchanged", pair.cert)
    ca_key = store.read_private_key(ca_request(spec).key_path)
    key = generate_private_key(spec.pki.key_algorithm)
    cert = issue_certificate(request, spec.pki, key, ca_cert, ca_key, now)
    _write_pair(store, request, key, cert)
    return _outcome(store, request, "issued", reason, cert)


def stored_ca_certificate(store: Store) -> x509.Certificate:
    """The stored CA certificate; raises with the next step when there is none."""
    pem = read_optional(store, f"{PKI_DIR}/{CA}.pem")
    if pem is None:
        raise FileNotFoundError(f"{store.path(f'{PKI_DIR}/{CA}.pem')}: no CA yet; issue the CA first")
    return load_certificate(pem)


def _write_pair(store: Store, request: CertRequest, key: PrivateKey, cert: x509.Certificate) -> None:
    # Key first: a crash in between leaves a certificate that no longer matches its key, which
    # `reissue_reason` rejects on the next run.
    store.write_private_key(request.key_path, key)
    store.write(request.cert_path, certificate_pem(cert))


def _outcome(store: Store, request: CertRequest, action: str, reason: str, cert: x509.Certificate) -> Outcome:
    return Outcome(
        name=request.name,
        action=action,
        reason=reason,
        paths=(store.path(request.cert_path), store.path(request.key_path)),
        fingerprint=fingerprint(cert),
    )
