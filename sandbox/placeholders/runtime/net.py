"""TLS both ways: clients that dial with client certs and verify the server, servers that require them."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

from .pki import CheckError


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}", file=sys.stderr, flush=True)


@contextmanager
def pem_files(**contents: bytes) -> Iterator[dict[str, str]]:
    """PEM bytes as private temporary files (Python's ssl loads keys only from files)."""
    folder = tempfile.mkdtemp(prefix="placeholder-tls-")
    try:
        paths = {}
        for name, data in contents.items():
            path = os.path.join(folder, f"{name}.pem")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as handle:
                handle.write(data)
            paths[name] = path
        yield paths
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def client_context(ca_pem: bytes, cert_pem: bytes | None, key_pem: bytes | None) -> ssl.SSLContext:
    """Verifies the server against the CA and its name; presents the client certificate."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.check_hostname = True
    if cert_pem is not None and key_pem is not None:
        with pem_files(cert=cert_pem, key=key_pem) as paths:
            context.load_cert_chain(paths["cert"], paths["key"])
    return context


def https_get(host: str, port: int, path: str, context: ssl.SSLContext, timeout: float = 5.0) -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": "groundup-placeholder"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def describe(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS verification failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve host: {error.strerror}"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def retry_until(deadline_s: float, attempt: Callable[[], str | None], what: str, every_s: float = 1.0) -> None:
    """Call `attempt` (None = success, else the reason) until it succeeds or the deadline passes."""
    end = time.monotonic() + deadline_s
    reason = "not tried"
    while True:
        reason = attempt()
        if reason is None:
            return
        if time.monotonic() >= end:
            raise CheckError(f"{what}: gave up after {deadline_s:.0f}s: {reason}")
        log(f"{what}: {reason}; retrying")
        time.sleep(every_s)


def server_context(cert_path: str, key_path: str, client_ca_path: str | None) -> ssl.SSLContext:
    """Serves the given certificate; a client certificate is optional but, if given, must chain to the client CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    if client_ca_path:
        context.load_verify_locations(cafile=client_ca_path)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def peer_identity(request: BaseHTTPRequestHandler) -> tuple[str, str] | None:
    """(CN, O) of a verified client certificate, None for a client without one."""
    cert = request.connection.getpeercert()
    if not cert:
        return None
    names = dict(item for rdn in cert.get("subject", ()) for item in rdn)
    orgs = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "organizationName"]
    return names.get("commonName", ""), "+".join(orgs)


class TLSServer(ThreadingHTTPServer):
    """Threaded HTTPS server; the handshake happens in the worker thread, so a slow client blocks nobody."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler, context: ssl.SSLContext):
        self.context = context
        super().__init__(address, handler)

    def get_request(self):
        sock, address = self.socket.accept()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

    def finish_request(self, request, client_address):
        try:
            request.settimeout(10)
            request.do_handshake()
        except (ssl.SSLError, OSError) as error:
            log(f"TLS handshake from {client_address[0]} refused: {describe(error)}")
            return
        super().finish_request(request, client_address)


def serve(server: ThreadingHTTPServer, name: str) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    return thread


def json_response(handler: BaseHTTPRequestHandler, code: int, body: dict | list) -> None:
    data = json.dumps(body, indent=2).encode() + b"\n"
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def text_response(handler: BaseHTTPRequestHandler, code: int, text: str) -> None:
    data = text.encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def status(code: int, reason: str, message: str) -> dict:
    """A metav1 Status, as the API server answers errors."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def grpc_socket_answers(path: str, timeout: float = 3.0) -> str | None:
    """None when a gRPC server (HTTP/2) answers on the unix socket, else why not."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(preface)
            frame = sock.recv(9)
    except FileNotFoundError:
        return f"{path}: no such socket"
    except OSError as error:
        return f"{path}: {describe(error)}"
    if len(frame) < 9 or frame[3] != 0x04:
        return f"{path}: the server there does not speak gRPC (HTTP/2)"
    return None
