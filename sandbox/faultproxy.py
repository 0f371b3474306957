"""A fault-injecting HTTP proxy in front of a moto server.

The flows reach AWS through `AWS_ENDPOINT_URL`; pointing it at this proxy injects a failure without
any flow code knowing. A `Fault` answers the next requests whose body holds every `match` string
with an AWS error (EC2's or the query protocol's error document, as the service would send it), or
forwards them late. Observers see each request with moto's answer, so a fault can follow what the
build does (an instance ID that RunInstances just returned).

    proxy = FaultProxy("http://127.0.0.1:5055").start()
    proxy.inject(throttle("ec2", times=4))
    env["AWS_ENDPOINT_URL"] = proxy.endpoint
"""

from __future__ import annotations

import http.client
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# The API version each query-protocol request carries names its service.
SERVICE_VERSIONS = {"ec2": "Version=2016-11-15", "elbv2": "Version=2015-12-01", "sts": "Version=2011-06-15"}
# What each service answers when it throttles: (code, HTTP status).
THROTTLING = {"ec2": ("RequestLimitExceeded", 503), "elbv2": ("Throttling", 400), "sts": ("Throttling", 400)}
EC2_VERSION = SERVICE_VERSIONS["ec2"]


@dataclass
class Fault:
    """Answer the next `times` requests whose body holds every `match` string with an AWS error
    (or, with `delay_s` or `hold`, forward them late: after the delay, once `hold` is set)."""

    match: tuple[str, ...]
    times: int = 1
    code: str = "UnauthorizedOperation"
    message: str = "You are not authorized to perform this operation (fault injected by the test)."
    status: int = 403
    delay_s: float = 0.0
    hold: threading.Event | None = None
    reached: threading.Event = field(default_factory=threading.Event)
    hits: int = 0


def throttle(service: str, times: int) -> Fault:
    """The first `times` requests to `service` (ec2, elbv2, sts) throttled, as that service throttles."""
    code, status = THROTTLING[service]
    return Fault(match=(SERVICE_VERSIONS[service],), times=times, code=code, status=status,
                 message="Rate exceeded (fault injected)")


Observer = Callable[["FaultProxy", str, str], None]


def new_instances_not_found(times: int = 1) -> Observer:
    """EC2's eventual consistency: for each instance RunInstances returns, the next `times` requests
    that name it answer `InvalidInstanceID.NotFound`."""

    def observe(proxy: FaultProxy, request: str, response: str) -> None:
        if "Action=RunInstances" not in request:
            return
        for instance_id in sorted(set(re.findall(r"<instanceId>(i-[0-9a-f]+)</instanceId>", response))):
            proxy.inject(Fault(match=(f"={instance_id}",), times=times, code="InvalidInstanceID.NotFound",
                               status=400, message=f"The instance ID '{instance_id}' does not exist"))
            proxy.noticed.append(instance_id)

    return observe


def error_document(fault: Fault, request: str) -> bytes:
    """The error body the service of `request` sends: EC2's `Response/Errors`, else the query protocol's."""
    if EC2_VERSION in request:
        return (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{fault.code}</Code>"
                f"<Message>{fault.message}</Message></Error></Errors><RequestID>fault-injected</RequestID>"
                f"</Response>").encode()
    return (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{fault.code}</Code><Message>{fault.message}</Message></Error>"
            f"<RequestId>fault-injected</RequestId></ErrorResponse>").encode()


@dataclass
class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of a moto server; `faults` are consulted per request."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    observers: list[Observer] = field(default_factory=list)
    noticed: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def inject(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def observe(self, observer: Observer) -> None:
        with self.lock:
            self.observers.append(observer)

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.observers.clear()

    def injected(self) -> int:
        """How many requests the faults have answered or delayed so far."""
        with self.lock:
            return sum(f.hits for f in self.faults)

    def _take(self, text: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.hits < fault.times and all(m in text for m in fault.match):
                    fault.hits += 1
                    fault.reached.set()
                    return fault
        return None

    def _observed(self, request: str, response: bytes) -> None:
        with self.lock:
            observers = list(self.observers)
        if observers:
            text = response.decode("utf-8", "replace")
            for observer in observers:
                observer(self, request, text)

    def start(self) -> FaultProxy:
        proxy = self
        target = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                text = body.decode("utf-8", "replace")
                fault = proxy._take(text)
                if fault is not None and not fault.delay_s and fault.hold is None:
                    payload = error_document(fault, text)
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault is not None:
                    time.sleep(fault.delay_s)
                    if fault.hold is not None:
                        fault.hold.wait(300)
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                proxy._observed(text, data)
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                """A client killed mid-request (a fault of its own) is not the proxy's error."""
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
