"""Certificate and key checks with the APIs of Debian 12's python3-cryptography (38)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID


_PEM = re.compile(rb"-----BEGIN ([A-Z ]+)-----.*?-----END \1-----", re.S)


class CheckError(Exception):
    """A file, certificate or setting is wrong; the message names it and says what is wrong."""


def read(path: str, what: str) -> bytes:
    """The file's bytes, or CheckError naming the flag or field that pointed at it."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise CheckError(f"{what}: {path}: no such file") from None
    except OSError as error:
        raise CheckError(f"{what}: {path}: {error.strerror}") from None


def certificates(data: bytes, where: str) -> list[x509.Certificate]:
    """Every PEM certificate in `data` (a bundle may hold several)."""
    marker = b"-----BEGIN CERTIFICATE-----"
    chunks = [marker + part for part in data.split(marker)[1:]]
    if not chunks:
        raise CheckError(f"{where}: no PEM certificate in it")
    try:
        return [x509.load_pem_x509_certificate(chunk) for chunk in chunks]
    except ValueError as error:
        raise CheckError(f"{where}: not a valid PEM certificate ({error})") from None


def private_key(data: bytes, where: str):
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise CheckError(f"{where}: not an unencrypted PEM private key ({error})") from None


def public_keys(data: bytes, where: str) -> list:
    """Public keys in a PEM file of public keys, private keys or certificates (as the apiserver reads SA keys)."""
    found = []
    for match in _PEM.finditer(data):
        kind, text = match.group(1), match.group(0)
        try:
            if kind.endswith(b"PRIVATE KEY"):
                found.append(serialization.load_pem_private_key(text, password=None).public_key())
            elif kind.endswith(b"PUBLIC KEY"):
                found.append(serialization.load_pem_public_key(text))
            elif kind == b"CERTIFICATE":
                found.append(x509.load_pem_x509_certificate(text).public_key())
        except (ValueError, TypeError) as error:
            raise CheckError(f"{where}: unreadable {kind.decode()} ({error})") from None
    if not found:
        raise CheckError(f"{where}: no PEM key in it")
    return found


def _der(public) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_key(public, key) -> bool:
    return _der(public) == _der(key.public_key())


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """The certificate names the CA as issuer and its signature verifies with the CA's key."""
    if cert.issuer != ca.subject:
        return False
    public = ca.public_key()
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def subject(cert: x509.Certificate) -> str:
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    org = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return f"CN={','.join(cn)} O={'+'.join(org)}"


def check_validity(cert: x509.Certificate, where: str) -> None:
    now = dt.datetime.utcnow()
    if now < cert.not_valid_before:
        raise CheckError(f"{where}: certificate not valid before {cert.not_valid_before:%Y-%m-%d %H:%M} UTC (clock skew?)")
    if now > cert.not_valid_after:
        raise CheckError(f"{where}: certificate expired {cert.not_valid_after:%Y-%m-%d %H:%M} UTC")


def check_ca_bundle(data: bytes, where: str) -> list[x509.Certificate]:
    """A CA bundle: parses, every certificate is a CA and currently valid."""
    cas = certificates(data, where)
    for ca in cas:
        check_validity(ca, where)
        try:
            is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise CheckError(f"{where}: {subject(ca)} is not a CA certificate")
    return cas


def check_pair(cert_data: bytes, key_data: bytes, cert_where: str, key_where: str,
               cas: list[x509.Certificate] | None = None, ca_where: str = "") -> x509.Certificate:
    """A certificate with its key: both parse, the key is the certificate's, and it chains to one of `cas`."""
    cert = certificates(cert_data, cert_where)[0]
    key = private_key(key_data, key_where)
    check_validity(cert, cert_where)
    if not same_key(cert.public_key(), key):
        raise CheckError(f"{key_where}: this key does not belong to the certificate in {cert_where} ({subject(cert)})")
    if cas is not None and not any(signed_by(cert, ca) for ca in cas):
        issuers = "; ".join(ca.subject.rfc4514_string() for ca in cas)
        raise CheckError(f"{cert_where}: certificate {subject(cert)} is not signed by the CA in {ca_where} "
                         f"(issuer {cert.issuer.rfc4514_string()}, CA {issuers}); reissue it from that CA")
    return cert


def check_pair_files(cert_path: str, key_path: str, cert_what: str, key_what: str,
                     cas: list[x509.Certificate] | None = None, ca_where: str = "") -> x509.Certificate:
    return check_pair(read(cert_path, cert_what), read(key_path, key_what), f"{cert_what} {cert_path}",
                      f"{key_what} {key_path}", cas, ca_where)
