"""The secrets scanner finds every form a planted key or secret can leak in, and nothing public."""

from __future__ import annotations

import base64
import datetime
import json
import lzma
import pickle

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.e2e.secrets_scan import (Scanner, encryption_key_secret, kubeconfig_secrets, private_key_secret,
                                    redacted, value_secret)

NONE = serialization.NoEncryption()


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(65537, 2048)


@pytest.fixture(scope="module")
def ec_key():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def scanner(rsa_key, ec_key) -> Scanner:
    return Scanner([private_key_secret("pki/ca-key.pem", rsa_key), private_key_secret("pki/etcd-key.pem", ec_key),
                    value_secret("store passphrase", "Vq3x_1cJ-9kq0jY8d2mN4pL6rS7tU5wZ0aBcDeFgHiJ"),
                    encryption_key_secret("encryption key1", base64.b64encode(bytes(range(1, 33))).decode())])


def pem(key, private_format=serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, private_format, NONE)


def certificate_pem(key) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def names(findings) -> set[str]:
    return {f.secret for f in findings}


def test_a_pem_key_in_a_log_line_is_found_by_name(scanner, rsa_key):
    line = b"2026-11-23 12:00:01 INFO distribute: writing " + pem(rsa_key) + b" to master-0"
    assert names(scanner.scan("log", line)) >= {"pki/ca-key.pem", "a plaintext PEM private key"}


@pytest.mark.parametrize("private_format", [serialization.PrivateFormat.PKCS8,
                                            serialization.PrivateFormat.TraditionalOpenSSL,
                                            serialization.PrivateFormat.OpenSSH])
def test_every_pem_format_of_both_key_types_is_found(scanner, rsa_key, ec_key, private_format):
    assert "pki/ca-key.pem" in names(scanner.scan("x", pem(rsa_key, private_format)))
    assert "pki/etcd-key.pem" in names(scanner.scan("x", pem(ec_key, private_format)))


def test_a_single_pem_line_of_a_truncated_key_is_enough(scanner, rsa_key):
    lines = pem(rsa_key).splitlines()
    assert names(scanner.scan("x", b"... " + lines[12] + b" ...")) == {"pki/ca-key.pem"}


def test_a_json_escaped_key_and_a_repr_of_it_are_found(scanner, rsa_key):
    text = pem(rsa_key).decode()
    assert "pki/ca-key.pem" in names(scanner.scan("api", json.dumps({"message": text})))
    assert "pki/ca-key.pem" in names(scanner.scan("api", repr(text.encode())))


def test_base64_der_and_the_private_numbers_are_found(scanner, rsa_key, ec_key):
    der = rsa_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, NONE)
    d = rsa_key.private_numbers().d
    assert "pki/ca-key.pem" in names(scanner.scan("x", base64.b64encode(der)))
    assert "pki/ca-key.pem" in names(scanner.scan("x", f"d={d:x}"))
    assert "pki/ca-key.pem" in names(scanner.scan("x", f"d={d}"))
    assert "pki/ca-key.pem" in names(scanner.scan("x", b"\x00\x01" + der + b"\x02"))
    scalar = ec_key.private_numbers().private_value
    assert "pki/etcd-key.pem" in names(scanner.scan("x", f"{scalar:064x}"))


def test_a_kubeconfig_client_key_data_is_found(scanner, rsa_key):
    kubeconfig = yaml.safe_dump({"users": [{"name": "admin", "user": {
        "client-key-data": base64.b64encode(pem(rsa_key)).decode()}}]}).encode()
    assert names(scanner.scan("x", kubeconfig)) >= {"pki/ca-key.pem", "a kubeconfig client-key-data value"}
    from_kubeconfig = Scanner(kubeconfig_secrets("admin.kubeconfig", kubeconfig))
    assert names(from_kubeconfig.scan("x", pem(rsa_key))) >= {"admin.kubeconfig user admin client-key-data"}


def test_a_kubeconfig_token_is_a_secret():
    kubeconfig = yaml.safe_dump({"users": [{"name": "ci", "user": {"token": "t0k3n-" + "a" * 40}}]}).encode()
    scanner = Scanner(kubeconfig_secrets("ci.kubeconfig", kubeconfig))
    assert names(scanner.scan("x", b"Authorization: Bearer t0k3n-" + b"a" * 40)) == {"ci.kubeconfig user ci token"}


@pytest.mark.parametrize("padding", ["", "x", "xy"])
def test_a_pickled_result_in_prefect_s_result_file_is_found(scanner, rsa_key, padding):
    """Prefect persists a result as JSON holding base64 of a pickle, wrapped at 76 columns."""
    pickled = pickle.dumps({"node": "master-0" + padding, "key": pem(rsa_key).decode()})
    record = json.dumps({"metadata": {"serializer": {"type": "pickle"}},
                         "result": base64.encodebytes(pickled).decode()})
    assert "pki/ca-key.pem (base64-encoded)" in names(scanner.scan("storage/abc", record))
    compressed = json.dumps({"result": base64.b64encode(lzma.compress(pickled)).decode()})
    assert "pki/ca-key.pem (base64-encoded)" in names(scanner.scan("storage/abc", compressed))


def test_passphrase_and_encryption_key_are_found_in_any_encoding(scanner):
    assert names(scanner.scan("ps", "openssl pkcs8 -passin pass:Vq3x_1cJ-9kq0jY8d2mN4pL6rS7tU5wZ0aBcDeFgHiJ")) \
        == {"store passphrase"}
    key = bytes(range(1, 33))
    for form in (base64.b64encode(key), key.hex().encode(), base64.urlsafe_b64encode(key), b"\x00" + key):
        assert names(scanner.scan("db", b"secret: " + form + b"\n")) == {"encryption key1"}, form


def test_public_material_and_encrypted_keys_are_not_findings(scanner, rsa_key, ec_key):
    for key in (rsa_key, ec_key):
        public = [certificate_pem(key),
                  key.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo),
                  key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH),
                  key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.BestAvailableEncryption(b"passphrase"))]
        for blob in public:
            for form in (blob, base64.b64encode(blob), json.dumps(blob.decode()).encode()):
                assert scanner.scan("x", form) == [], form[:40]
    if isinstance(rsa_key, rsa.RSAPrivateKey):
        n = rsa_key.public_key().public_numbers().n
        assert scanner.scan("x", f"{n:x} {n}") == []


def test_another_key_is_reported_as_a_plaintext_key_not_by_a_wrong_name(scanner):
    other = rsa.generate_private_key(65537, 2048)
    assert names(scanner.scan("x", pem(other))) == {"a plaintext PEM private key"}


def test_a_finding_names_where_and_what_but_never_holds_the_secret(scanner, rsa_key):
    findings = scanner.scan("Prefect log of flow run brave-fox", pem(rsa_key))
    text = "\n".join(map(str, findings))
    assert "Prefect log of flow run brave-fox: pki/ca-key.pem" in text
    body = b"".join(pem(rsa_key).splitlines()[1:-1]).decode()
    assert not any(body[i:i + 16] in text for i in range(0, len(body) - 16, 8))


def test_a_tree_scan_reports_the_file_and_skips_excluded_directories(scanner, rsa_key, tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "worker.log").write_bytes(b"ok\n" + pem(rsa_key))
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "ca-key.pem").write_bytes(pem(rsa_key))
    (tmp_path / "clean.txt").write_text("nothing here")
    findings, files = scanner.scan_tree(tmp_path, exclude=[tmp_path / "nodes"])
    assert files == 2
    assert {(f.where, f.secret) for f in findings} >= {(str(tmp_path / "logs" / "worker.log"), "pki/ca-key.pem")}
    assert all("nodes" not in f.where for f in findings)


def test_short_secrets_are_refused_rather_than_matched_by_chance():
    with pytest.raises(ValueError, match="shorter"):
        value_secret("pin", "1234")


def test_redacted_output_keeps_the_words_and_drops_key_material(rsa_key):
    text = "build failed on master-0 (10.240.0.10):\n" + pem(rsa_key).decode() + "\nkey1: " + "A" * 44
    out = redacted(text)
    assert out.startswith("build failed on master-0 (10.240.0.10):") and "[PEM block]" in out
    assert "BEGIN" not in out and "A" * 32 not in out
    assert Scanner([private_key_secret("k", rsa_key)]).scan("x", out) == []
