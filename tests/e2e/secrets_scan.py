"""Look for a cluster's secrets where they must never be: logs, results, artifacts, databases, `ps`.

A `Secret` is a name ("private key pki/ca-key.pem") and the byte strings ("needles") whose presence
means it leaked: for a private key its PEM body lines (PKCS#8, traditional and OpenSSH DER in base64),
the base64 of its PEM text (a kubeconfig's client-key-data), its private numbers in hex and decimal
and their raw bytes. Needles that would also occur in the key's public encodings (the public key,
and so every certificate) are left out, so a certificate in a log is not mistaken for its key.

`Scanner.scan(where, data)` reports `Finding(where, secret name)`: never the secret itself. It also
looks one level into base64 blocks (Prefect's pickled results, anything base64-wrapped) and reports
plaintext-key markers of keys it was not told about (`-----BEGIN PRIVATE KEY-----`, a
`client-key-data` value). Pure: no Prefect, no sandbox; `tests/unit/test_secrets_scan.py` proves it
finds what it is meant to find.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import gzip
import lzma
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

PROBE = 16
MIN_NEEDLE = 2 * PROBE
"""Every needle is at least this long, so each occurrence holds one PROBE-long slice at a multiple of
PROBE from the start of its run of text characters: the scan looks up only those slices."""
_TEXT_CHARS = rb"A-Za-z0-9+/=_-"
_RUN = re.compile(rb"[" + _TEXT_CHARS + rb"]{%d,}" % MIN_NEEDLE)
_TEXT_NEEDLE = re.compile(rb"[" + _TEXT_CHARS + rb"]+")
_B64_BLOCK = re.compile(rb"[A-Za-z0-9+/=\\\r\n]{64,}")
_RAW_BYTES = 24
"""Leading bytes of a key's first private number (RSA d, an EC scalar) searched for as raw binary."""

PLAINTEXT_MARKERS: dict[str, re.Pattern[bytes]] = {
    "a plaintext PEM private key": re.compile(rb"-----BEGIN (?:RSA |EC |DSA |OPENSSH )?PRIVATE KEY-----"),
    "a kubeconfig client-key-data value": re.compile(rb"client-key-data\\?\"?'?\s*[:=]\s*\\?\"?'?[A-Za-z0-9+/]{40}"),
}
"""Signs of key material the scan was not told about (encrypted PEM, `ENCRYPTED PRIVATE KEY`, is fine)."""


@dataclass(frozen=True)
class Secret:
    name: str
    needles: frozenset[bytes]


@dataclass(frozen=True, order=True)
class Finding:
    where: str
    secret: str

    def __str__(self) -> str:
        return f"{self.where}: {self.secret}"


def _chunks(text: bytes, width: int) -> Iterator[tuple[int, bytes]]:
    """`width`-long slices at multiples of `width` (PEM lines), and the tail if it is long enough."""
    for start in range(0, len(text), width):
        chunk = text[start:start + width]
        if len(chunk) >= MIN_NEEDLE:
            yield start, chunk


def _is_public(covered: bytes, public: list[bytes]) -> bool:
    return len(covered) < 12 or any(covered in blob for blob in public)


def _blob_needles(blob: bytes, public: list[bytes], widths: Iterable[int]) -> set[bytes]:
    """Base64 of `blob` in PEM-line slices, keeping only slices that encode bytes found in no public form."""
    text = base64.b64encode(blob)
    needles = set()
    for width in widths:
        for start, chunk in _chunks(text, width):
            covered = blob[-(-start // 4) * 3:(start + len(chunk)) // 4 * 3]
            if not _is_public(covered, public):
                needles.add(chunk)
    return needles


def _pem_text_needles(pem: bytes, der: bytes, public: list[bytes], widths: Iterable[int]) -> set[bytes]:
    """Base64 of the PEM text (kubeconfig client-key-data), in slices that cover private DER bytes."""
    body_index = []  # per PEM text byte: its index in the unfolded base64 body, or -1
    count = 0
    lines = pem.splitlines(keepends=True)
    for line in lines:
        is_body = not line.startswith(b"-----")
        for char in line:
            if is_body and char not in b"\r\n":
                body_index.append(count)
                count += 1
            else:
                body_index.append(-1)
    text = base64.b64encode(pem)
    needles = set()
    for width in widths:
        for start, chunk in _chunks(text, width):
            span = [i for i in body_index[-(-start // 4) * 3:(start + len(chunk)) // 4 * 3] if i >= 0]
            if not span:
                continue
            first, last = span[0], span[-1] + 1
            covered = der[-(-first // 4) * 3:last // 4 * 3]
            if not _is_public(covered, public):
                needles.add(chunk)
    return needles


def _private_numbers(key) -> list[int]:
    if isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        return [n.d, n.p, n.q, n.dmp1, n.dmq1, n.iqmp]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return [key.private_numbers().private_value]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        return [int.from_bytes(raw, "big")]
    raise TypeError(f"unsupported key type {type(key).__name__}")


def _number_needles(value: int) -> set[bytes]:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    hexa = format(value, "x").encode()
    return {hexa[:32], hexa[:32].upper(), raw.hex().encode()[:32], str(value).encode()[:40]}


def private_key_secret(name: str, key) -> Secret:
    """Every form in which `key` (a cryptography private key) could leak."""
    none = serialization.NoEncryption()
    public_key = key.public_key()
    public = [public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)]
    if isinstance(key, rsa.RSAPrivateKey):
        public.append(public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1))
    openssh_public = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    public.append(base64.b64decode(openssh_public.split()[1]))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        public.append(public_key.public_bytes(serialization.Encoding.X962,
                                              serialization.PublicFormat.UncompressedPoint))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        public.append(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    needles: set[bytes] = set()
    formats = [serialization.PrivateFormat.PKCS8]
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        formats.append(serialization.PrivateFormat.TraditionalOpenSSL)
    for private_format in formats:
        der = key.private_bytes(serialization.Encoding.DER, private_format, none)
        pem = key.private_bytes(serialization.Encoding.PEM, private_format, none)
        needles |= _blob_needles(der, public, (64, 76))
        needles |= _pem_text_needles(pem, der, public, (64, 76))
    openssh = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, none)
    blob = base64.b64decode(b"".join(line for line in openssh.splitlines() if not line.startswith(b"-----")))
    needles |= _blob_needles(blob, public, (70, 64))
    numbers = _private_numbers(key)
    for value in numbers:
        needles |= _number_needles(value)
    needles.add(numbers[0].to_bytes((numbers[0].bit_length() + 7) // 8, "big")[:_RAW_BYTES])
    return Secret(name, frozenset(needles))


def value_secret(name: str, value: str | bytes) -> Secret:
    """A secret string (passphrase, token, encryption key): the string itself."""
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) < MIN_NEEDLE:
        raise ValueError(f"{name}: a secret shorter than {MIN_NEEDLE} bytes cannot be told from chance")
    return Secret(name, frozenset({raw}))


def encryption_key_secret(name: str, key_b64: str) -> Secret:
    """An aescbc key: its base64 as configured, its bytes in hex and raw, and base64url."""
    raw = base64.b64decode(key_b64)
    return Secret(name, frozenset({key_b64.encode(), base64.urlsafe_b64encode(raw), raw.hex().encode(),
                                   raw.hex().upper().encode(), raw}))


def kubeconfig_secrets(name: str, kubeconfig: bytes) -> list[Secret]:
    """Each user's client key (every form, as `private_key_secret`), token and password in a kubeconfig."""
    config = yaml.safe_load(kubeconfig) or {}
    found = []
    for user in config.get("users") or []:
        credentials = user.get("user") or {}
        label = f"{name} user {user.get('name')}"
        if credentials.get("client-key-data"):
            pem = base64.b64decode(credentials["client-key-data"])
            key = serialization.load_pem_private_key(pem, password=None)
            found.append(private_key_secret(f"{label} client-key-data", key))
        for field in ("token", "password"):
            if credentials.get(field):
                found.append(value_secret(f"{label} {field}", credentials[field]))
    return found


def _decoded_blocks(data: bytes) -> Iterator[bytes]:
    """Each base64 block of `data` (line breaks, escaped or not, allowed) decoded, and decompressed if it is."""
    for match in _B64_BLOCK.finditer(data):
        text = re.sub(rb"\\[nr]|[\r\n]", b"", match.group())
        try:
            decoded = base64.b64decode(text)
        except (binascii.Error, ValueError):
            text = text.strip(b"=")  # padding in the middle, or none where some is due: decode what is whole
            try:
                decoded = base64.b64decode(text[:len(text) // 4 * 4])
            except (binascii.Error, ValueError):
                continue
        yield decoded
        for magic, decompress in ((b"\xfd7zXZ\x00", lzma.decompress), (b"\x1f\x8b", gzip.decompress),
                                  (b"BZh", bz2.decompress), (b"\x78\x9c", zlib.decompress)):
            if decoded.startswith(magic):
                try:
                    yield decompress(decoded)
                except Exception:
                    pass


class Scanner:
    """Finds the given secrets (and plaintext key markers) in bytes, files and directory trees."""

    def __init__(self, secrets: Iterable[Secret]) -> None:
        self.secrets = list(secrets)
        self._probes: dict[bytes, list[tuple[int, bytes, str]]] = {}
        self._binary: list[tuple[bytes, str]] = []
        for secret in self.secrets:
            for needle in secret.needles:
                if len(needle) < (MIN_NEEDLE if _TEXT_NEEDLE.fullmatch(needle) else PROBE):
                    raise ValueError(f"{secret.name}: a needle too short to be told from chance")
                if _TEXT_NEEDLE.fullmatch(needle):
                    for offset in range(len(needle) - PROBE + 1):
                        self._probes.setdefault(needle[offset:offset + PROBE], []).append(
                            (offset, needle, secret.name))
                else:
                    self._binary.append((needle, secret.name))

    def __repr__(self) -> str:
        return f"Scanner({len(self.secrets)} secrets)"

    def scan(self, where: str, data: bytes | str) -> list[Finding]:
        """Which secrets occur in `data` (and in its base64 blocks), each once."""
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        names = self._names(raw)
        for decoded in _decoded_blocks(raw):
            names |= {f"{name} (base64-encoded)" for name in self._names(decoded)}
        return sorted(Finding(where, name) for name in names)

    def _names(self, data: bytes) -> set[str]:
        names = {label for label, marker in PLAINTEXT_MARKERS.items() if marker.search(data)}
        probes = self._probes
        for run in _RUN.finditer(data):
            text = run.group()
            for i in range(0, len(text) - PROBE + 1, PROBE):
                hits = probes.get(text[i:i + PROBE])
                if hits:
                    names.update(name for offset, needle, name in hits
                                 if i >= offset and text.startswith(needle, i - offset))
        names.update(name for needle, name in self._binary if needle in data)
        return names

    def scan_file(self, path: Path, where: str | None = None) -> list[Finding]:
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return []
        return self.scan(where or str(path), data)

    def scan_tree(self, root: Path, exclude: Iterable[Path] = ()) -> tuple[list[Finding], int]:
        """Every regular file under `root` except those under `exclude`; returns (findings, files scanned)."""
        skipped = {Path(p).resolve() for p in exclude}
        findings: list[Finding] = []
        files = 0
        for directory, subdirs, names in os.walk(root):
            here = Path(directory).resolve()
            subdirs[:] = [d for d in subdirs if (here / d) not in skipped]
            for name in names:
                path = here / name
                if path in skipped or not path.is_file() or path.is_symlink():
                    continue
                files += 1
                findings += self.scan_file(path)
        return findings, files


def report(findings: Iterable[Finding]) -> str:
    """One line per finding: where, and which secret by name."""
    return "\n".join(f"  {finding}" for finding in sorted(set(findings)))


def redacted(text: str) -> str:
    """`text` fit for a failure message before the secrets are known: PEM blocks and every run of 32 or
    more base64/hex characters replaced by a marker."""
    text = re.sub(r"-----BEGIN [A-Z ]+-----.*?(-----END [A-Z ]+-----|$)", "[PEM block]", text, flags=re.S)
    return re.sub(r"[A-Za-z0-9+/=_-]{32,}", "[redacted]", text)
