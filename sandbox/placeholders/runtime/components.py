"""The five placeholder programs: check flags, files and certificates, then do the TLS the real one would."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

from . import cli, configs, net, pki
from .configs import CheckError
from .net import log

WAIT_ENV = "GROUNDUP_PLACEHOLDER_WAIT_S"
RECHECK_ENV = "GROUNDUP_PLACEHOLDER_RECHECK_S"
AUTHZ_MODES = {"AlwaysAllow", "AlwaysDeny", "ABAC", "Webhook", "RBAC", "Node"}
PUBLIC_PATHS = {"/healthz", "/livez", "/readyz", "/version"}
WHOAMI = "/placeholder/v1/whoami"
CLIENTS = "/placeholder/v1/clients"


def embedded() -> dict:
    """The component, version and flag set this file was built with."""
    return json.loads((resources.files(__package__) / "data.json").read_text())


def _seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def main(argv: list[str] | None = None) -> int:
    spec = embedded()
    component, version = spec["component"], spec["version"]
    try:
        args = cli.parse(sys.argv[1:] if argv is None else argv, spec)
    except cli.UsageError as error:
        print(f"Error: {error}\nRun '{component} --help' for usage.", file=sys.stderr)
        return 1
    if args.flag("help"):
        print(f"{component} v{version} (placeholder): a groundup sandbox stand-in, not Kubernetes.\n"
              f"Accepts the flags of the real {component} {spec['minor']} ({spec['source']}).")
        return 0
    if args.has("version"):
        print(f"Kubernetes v{version} (placeholder)")
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log(f"{component} v{version} placeholder starting (not Kubernetes: checks flags, files and TLS only)")
    try:
        RUNNERS[component](args, version)
    except CheckError as error:
        log(f"E {component}: {error}")
        print(f"Error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


# Shared checks ------------------------------------------------------------------------------------

def required(args: cli.Args, *names: str) -> None:
    missing = [f"--{n}" for n in names if not args.get(n)]
    if missing:
        raise CheckError(f"{', '.join(missing)} must be specified")


def ca_flag(args: cli.Args, name: str) -> list | None:
    path = args.get(name)
    return pki.check_ca_bundle(pki.read(path, f"--{name}"), f"--{name} {path}") if path else None


def pair_flags(args: cli.Args, cert: str, key: str, cas: list | None = None, ca_where: str = "") -> None:
    cert_path, key_path = args.get(cert), args.get(key)
    if bool(cert_path) != bool(key_path):
        raise CheckError(f"--{cert} and --{key} must be given together")
    if cert_path:
        pki.check_pair_files(cert_path, key_path, f"--{cert}", f"--{key}", cas, ca_where)


def cidr_flag(args: cli.Args, name: str) -> None:
    if args.get(name):
        configs.check_cidrs(args.get(name), f"--{name}")


def ip_flag(args: cli.Args, name: str) -> None:
    if args.get(name):
        configs.check_ip(args.get(name), f"--{name}")


def port_value(value, where: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise CheckError(f"{where}: {value!r} is not a port number") from None
    if not 0 < port < 65536:
        raise CheckError(f"{where}: {port} is not a port number")
    return port


def yaml_flags(args: cli.Args, *names: str) -> None:
    for name in names:
        if args.get(name):
            configs.load_yaml(args.get(name), f"--{name}")


def serving_checks(args: cli.Args) -> None:
    """The secure-serving and delegated-auth flags controller-manager and scheduler share."""
    ca_flag(args, "client-ca-file")
    pair_flags(args, "tls-cert-file", "tls-private-key-file")
    ca_flag(args, "requestheader-client-ca-file")
    for name in ("authentication-kubeconfig", "authorization-kubeconfig"):
        if args.get(name):
            configs.load_kubeconfig(args.get(name), f"--{name}")
    ip_flag(args, "bind-address")


# Clients of the API server --------------------------------------------------------------------------

def reach_api_server(kubeconfig: configs.Kubeconfig, component: str) -> None:
    """Dial the kubeconfig's server with its client certificate until it answers, then re-check forever."""
    context = net.client_context(kubeconfig.ca_pem, kubeconfig.cert_pem, kubeconfig.key_pem)
    what = f"reaching the API server {kubeconfig.server} with {kubeconfig.path}"

    def attempt() -> str | None:
        try:
            code, body = net.https_get(kubeconfig.host, kubeconfig.port, WHOAMI, context)
        except Exception as error:  # every failure is a reason to retry, none is a crash
            return net.describe(error)
        if code == 200:
            return None
        if code in (401, 403):
            return f"the API server refused our client certificate ({kubeconfig.identity}): HTTP {code} {body[:200]!r}"
        return f"HTTP {code} from {WHOAMI}"

    net.retry_until(_seconds(WAIT_ENV, 300), attempt, what, every_s=2)
    log(f"{component}: reached the API server {kubeconfig.server} as {kubeconfig.identity}")
    keep_checking(attempt, f"{component}: API server {kubeconfig.server}")


def keep_checking(attempt, what: str) -> None:
    healthy = True
    while True:
        time.sleep(_seconds(RECHECK_ENV, 30))
        reason = attempt()
        if (reason is None) != healthy:
            log(f"{what}: {'answers again' if reason is None else 'lost: ' + reason}")
        healthy = reason is None


def run_controller_manager(args: cli.Args, version: str) -> None:
    required(args, "kubeconfig")
    kubeconfig = configs.load_kubeconfig(args.get("kubeconfig"), "--kubeconfig")
    serving_checks(args)
    signing_cert, signing_key = args.get("cluster-signing-cert-file"), args.get("cluster-signing-key-file")
    if signing_cert or signing_key:
        required(args, "cluster-signing-cert-file", "cluster-signing-key-file")
        pki.check_pair_files(signing_cert, signing_key, "--cluster-signing-cert-file", "--cluster-signing-key-file")
        pki.check_ca_bundle(pki.read(signing_cert, "--cluster-signing-cert-file"),
                            f"--cluster-signing-cert-file {signing_cert}")
    ca_flag(args, "root-ca-file")
    if args.get("service-account-private-key-file"):
        path = args.get("service-account-private-key-file")
        pki.private_key(pki.read(path, "--service-account-private-key-file"), f"--service-account-private-key-file {path}")
    cidr_flag(args, "cluster-cidr")
    cidr_flag(args, "service-cluster-ip-range")
    if args.flag("allocate-node-cidrs"):
        required(args, "cluster-cidr")
    reach_api_server(kubeconfig, "kube-controller-manager")


def run_scheduler(args: cli.Args, version: str) -> None:
    serving_checks(args)
    if args.get("config"):
        path = args.get("config")
        data = configs.load_yaml(path, "--config")
        where = f"--config {path}"
        configs.expect_kind(data, configs.KUBE_SCHEDULER, where)
        kubeconfig_path = configs.relative_to(configs.field(data, "clientConnection.kubeconfig", where), path)
        configs.field(data, "leaderElection.leaderElect", where, bool, required=False)
        configs.field(data, "profiles", where, list, required=False)
        kubeconfig = configs.load_kubeconfig(kubeconfig_path, f"{where}: clientConnection.kubeconfig")
    else:
        required(args, "kubeconfig")
        kubeconfig = configs.load_kubeconfig(args.get("kubeconfig"), "--kubeconfig")
    reach_api_server(kubeconfig, "kube-scheduler")


def run_proxy(args: cli.Args, version: str) -> None:
    if args.get("config"):
        path = args.get("config")
        data = configs.load_yaml(path, "--config")
        where = f"--config {path}"
        configs.expect_kind(data, configs.KUBE_PROXY, where)
        mode = configs.field(data, "mode", where, required=False) or ""
        if mode not in ("", "iptables", "ipvs", "nftables"):
            raise CheckError(f"{where}: mode {mode!r} is not one of iptables, ipvs, nftables")
        cluster_cidr = configs.field(data, "clusterCIDR", where, required=False)
        if cluster_cidr:
            configs.check_cidrs(cluster_cidr, f"{where}: clusterCIDR")
        kubeconfig_path = configs.relative_to(configs.field(data, "clientConnection.kubeconfig", where), path)
        kubeconfig = configs.load_kubeconfig(kubeconfig_path, f"{where}: clientConnection.kubeconfig")
    else:
        required(args, "kubeconfig")
        cidr_flag(args, "cluster-cidr")
        kubeconfig = configs.load_kubeconfig(args.get("kubeconfig"), "--kubeconfig")
    reach_api_server(kubeconfig, "kube-proxy")


# kubelet ----------------------------------------------------------------------------------------

def run_kubelet(args: cli.Args, version: str) -> None:
    required(args, "kubeconfig")
    kubeconfig = configs.load_kubeconfig(args.get("kubeconfig"), "--kubeconfig")
    config: dict = {}
    where = "kubelet flags"
    config_path = args.get("config")
    if config_path:
        config = configs.load_yaml(config_path, "--config")
        where = f"--config {config_path}"
        configs.expect_kind(config, configs.KUBELET, where)

    def setting(flag: str, dotted: str, kind: type = str):
        if args.get(flag) is not None:
            return args.get(flag), f"--{flag}"
        value = configs.field(config, dotted, where, kind, required=False)
        if isinstance(value, str) and config_path and dotted.endswith(("File", "Conf")):
            value = configs.relative_to(value, config_path)
        return value, f"{where}: {dotted}"

    client_ca, client_ca_where = setting("client-ca-file", "authentication.x509.clientCAFile")
    if not client_ca:
        raise CheckError(f"{client_ca_where} is not set: the kubelet would not authenticate the API server's client "
                         "certificate; set authentication.x509.clientCAFile to the cluster CA")
    pki.check_ca_bundle(pki.read(client_ca, client_ca_where), f"{client_ca_where} {client_ca}")
    cert_path, cert_where = setting("tls-cert-file", "tlsCertFile")
    key_path, key_where = setting("tls-private-key-file", "tlsPrivateKeyFile")
    if not cert_path or not key_path:
        raise CheckError(f"{where}: tlsCertFile and tlsPrivateKeyFile are required (the placeholder does not "
                         "self-sign a serving certificate)")
    cluster_cas = pki.check_ca_bundle(kubeconfig.ca_pem, f"--kubeconfig {kubeconfig.path}: certificate-authority")
    pki.check_pair_files(cert_path, key_path, cert_where, key_where, cluster_cas,
                         f"--kubeconfig {kubeconfig.path} (certificate-authority)")
    anonymous = configs.field(config, "authentication.anonymous.enabled", where, bool, required=False)
    if args.get("anonymous-auth") is not None:
        anonymous = args.flag("anonymous-auth")
    anonymous = True if anonymous is None else anonymous
    authz_mode, authz_where = setting("authorization-mode", "authorization.mode")
    if authz_mode not in (None, "AlwaysAllow", "Webhook"):
        raise CheckError(f"{authz_where}: {authz_mode!r} is not AlwaysAllow or Webhook")
    driver, driver_where = setting("cgroup-driver", "cgroupDriver")
    if driver not in (None, "systemd", "cgroupfs"):
        raise CheckError(f"{driver_where}: {driver!r} is not systemd or cgroupfs")
    for dns in configs.field(config, "clusterDNS", where, list, required=False) or args.all("cluster-dns"):
        configs.check_ip(str(dns), f"{where}: clusterDNS")
    pod_cidr, pod_cidr_where = setting("pod-cidr", "podCIDR")
    if pod_cidr:
        configs.check_cidrs(pod_cidr, pod_cidr_where)
    resolv, resolv_where = setting("resolv-conf", "resolvConf")
    if resolv:
        pki.read(resolv, resolv_where)
    address, address_where = setting("address", "address")
    address = address or "0.0.0.0"
    configs.check_ip(address, address_where)
    port_setting, port_where = setting("port", "port", int)
    port = port_value(port_setting if port_setting is not None else 10250, port_where)
    endpoint, endpoint_where = setting("container-runtime-endpoint", "containerRuntimeEndpoint")
    endpoint = endpoint or "unix:///run/containerd/containerd.sock"
    url = urlsplit(endpoint)
    if url.scheme != "unix":
        raise CheckError(f"{endpoint_where}: {endpoint!r} must be a unix:// socket on Linux")
    net.retry_until(_seconds(WAIT_ENV, 300), lambda: net.grpc_socket_answers(url.path),
                    f"container runtime {endpoint_where}")
    log(f"kubelet: container runtime answers on {endpoint}")

    registry = ClientRegistry()
    server = net.TLSServer((address, port), kubelet_handler(registry, anonymous),
                           net.server_context(cert_path, key_path, client_ca))
    net.serve(server, "kubelet-10250")
    log(f"kubelet: serving HTTPS on {address}:{port} with {cert_path}, client certificates from {client_ca}")
    healthz_port = configs.field(config, "healthzPort", where, int, required=False)
    healthz_port = 10248 if healthz_port is None else healthz_port
    if args.get("healthz-port") is not None:
        healthz_port = int(args.get("healthz-port"))
    if healthz_port:
        healthz_address = args.get("healthz-bind-address") or configs.field(
            config, "healthzBindAddress", where, required=False) or "127.0.0.1"
        net.serve(ThreadingHTTPServer((healthz_address, healthz_port), HealthzHandler), "kubelet-healthz")
    reach_api_server(kubeconfig, "kubelet")


class HealthzHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        net.text_response(self, 200 if self.path == "/healthz" else 404, "ok" if self.path == "/healthz" else "404")

    def log_message(self, *_) -> None:
        pass


def kubelet_handler(registry: "ClientRegistry", anonymous: bool):
    class KubeletHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            identity = net.peer_identity(self)
            path = self.path.split("?", 1)[0]
            if identity is None and not anonymous:
                code = 401
                net.text_response(self, code, "Unauthorized")
            elif path == "/healthz":
                code = 200
                net.text_response(self, code, "ok")
            elif path == "/pods":
                code = 200
                net.json_response(self, code, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
            else:
                code = 404
                net.text_response(self, code, "404 page not found (kubelet placeholder)")
            registry.record(identity)
            who = f"client CN={identity[0]} O={identity[1]}" if identity else "anonymous client"
            log(f"kubelet: {who} from {self.client_address[0]} GET {path} {code}")

        def log_message(self, *_) -> None:
            pass

    return KubeletHandler


# kube-apiserver -----------------------------------------------------------------------------------

class ClientRegistry:
    """Every client identity (CN, O) that reached this server, with first/last seen and a count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], dict] = {}

    def record(self, identity: tuple[str, str] | None) -> None:
        if identity is None:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._lock:
            entry = self._seen.setdefault(identity, {"cn": identity[0], "o": identity[1], "first_seen": now, "count": 0})
            entry["last_seen"] = now
            entry["count"] += 1

    def listing(self) -> list[dict]:
        with self._lock:
            return [dict(entry) for _, entry in sorted(self._seen.items())]


def version_info(version: str) -> dict:
    major, minor, _ = version.split(".", 2)
    return {
        "major": major, "minor": minor, "gitVersion": f"v{version}",
        "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z", "goVersion": "none (python placeholder)", "compiler": "cpython",
        "platform": "linux/amd64",
        "placeholder": "groundup sandbox placeholder kube-apiserver: not Kubernetes; serves health, version "
                       f"and {CLIENTS} only",
    }


def check_apiserver(args: cli.Args) -> dict:
    """Every flag and file the placeholder can check; returns what serving needs."""
    required(args, "etcd-servers", "client-ca-file", "tls-cert-file", "tls-private-key-file",
             "service-account-issuer", "service-account-signing-key-file")
    client_cas = ca_flag(args, "client-ca-file")
    client_ca = f"--client-ca-file {args.get('client-ca-file')}"
    pair_flags(args, "tls-cert-file", "tls-private-key-file", client_cas, client_ca)
    etcd_cas = ca_flag(args, "etcd-cafile")
    pair_flags(args, "etcd-certfile", "etcd-keyfile", etcd_cas, f"--etcd-cafile {args.get('etcd-cafile')}")
    servers = args.all("etcd-servers")
    for server in servers:
        url = urlsplit(server)
        if url.scheme != "https" or not url.hostname or not url.port:
            raise CheckError(f"--etcd-servers: {server!r} must be https://host:port (client TLS)")
    if not (args.get("etcd-cafile") and args.get("etcd-certfile")):
        raise CheckError("--etcd-cafile, --etcd-certfile and --etcd-keyfile are required: etcd requires client certificates")
    kubelet_cas = ca_flag(args, "kubelet-certificate-authority")
    pair_flags(args, "kubelet-client-certificate", "kubelet-client-key", kubelet_cas or client_cas,
               f"--kubelet-certificate-authority {args.get('kubelet-certificate-authority')}" if kubelet_cas else client_ca)
    proxy_cas = ca_flag(args, "requestheader-client-ca-file")
    pair_flags(args, "proxy-client-cert-file", "proxy-client-key-file", proxy_cas,
               f"--requestheader-client-ca-file {args.get('requestheader-client-ca-file')}")
    signing_path = args.get("service-account-signing-key-file")
    signing = pki.private_key(pki.read(signing_path, "--service-account-signing-key-file"),
                              f"--service-account-signing-key-file {signing_path}")
    verify_paths = args.all("service-account-key-file") or [args.get("tls-private-key-file")]
    verifiers = [k for p in verify_paths for k in pki.public_keys(pki.read(p, "--service-account-key-file"),
                                                                  f"--service-account-key-file {p}")]
    if not any(pki.same_key(k, signing) for k in verifiers):
        raise CheckError(f"--service-account-key-file {', '.join(verify_paths)}: none of its keys verifies tokens signed "
                         f"with --service-account-signing-key-file {signing_path}")
    if args.get("encryption-provider-config"):
        configs.check_encryption_config(args.get("encryption-provider-config"), "--encryption-provider-config")
    if args.get("audit-policy-file"):
        configs.check_audit_policy(args.get("audit-policy-file"), "--audit-policy-file")
    modes = args.all("authorization-mode")
    unknown = [m for m in modes if m not in AUTHZ_MODES]
    if unknown:
        raise CheckError(f"--authorization-mode: unknown authorization mode(s) {', '.join(unknown)}; "
                         f"one of {', '.join(sorted(AUTHZ_MODES))}")
    if "ABAC" in modes:
        required(args, "authorization-policy-file")
    if "Webhook" in modes:
        required(args, "authorization-webhook-config-file")
    for name in ("token-auth-file", "authorization-policy-file"):
        if args.get(name):
            pki.read(args.get(name), f"--{name}")
    yaml_flags(args, "authentication-config", "authorization-config", "egress-selector-config-file",
               "admission-control-config-file", "tracing-config-file", "authorization-webhook-config-file")
    cidr_flag(args, "service-cluster-ip-range")
    ip_flag(args, "advertise-address")
    bind = args.get("bind-address") or "0.0.0.0"
    configs.check_ip(bind, "--bind-address")
    port = port_value(args.get("secure-port") or 6443, "--secure-port")
    audit_log = args.get("audit-log-path")
    if audit_log and audit_log != "-":
        try:
            os.makedirs(os.path.dirname(os.path.abspath(audit_log)), exist_ok=True)
            open(audit_log, "a").close()
        except OSError as error:
            raise CheckError(f"--audit-log-path {audit_log}: {error.strerror}") from None
    log(f"kube-apiserver: authorization modes {','.join(modes) or 'AlwaysAllow'} (not enforced by the placeholder)")
    return {"servers": servers, "bind": bind, "port": port, "audit_log": audit_log}


def etcd_attempt(args: cli.Args, servers: list[str]):
    context = net.client_context(pki.read(args.get("etcd-cafile"), "--etcd-cafile"),
                                 pki.read(args.get("etcd-certfile"), "--etcd-certfile"),
                                 pki.read(args.get("etcd-keyfile"), "--etcd-keyfile"))

    def attempt() -> str | None:
        problems = []
        for server in servers:
            url = urlsplit(server)
            try:
                code, body = net.https_get(url.hostname, url.port, "/health", context, timeout=3)
                healthy = code == 200 and json.loads(body).get("health") == "true"
                if not healthy:
                    problems.append(f"{server}: unhealthy ({code} {body[:100]!r})")
            except Exception as error:  # any failure marks this member, the others may still answer
                problems.append(f"{server}: {net.describe(error)}")
        if len(problems) == len(servers):
            return "no etcd server is healthy: " + "; ".join(problems)
        for problem in problems:
            log(f"kube-apiserver: etcd {problem}")
        return None

    return attempt


def run_apiserver(args: cli.Args, version: str) -> None:
    plan = check_apiserver(args)
    attempt = etcd_attempt(args, plan["servers"])
    net.retry_until(_seconds(WAIT_ENV, 300), attempt,
                    f"etcd health over mTLS (--etcd-servers {','.join(plan['servers'])})", every_s=2)
    log(f"kube-apiserver: etcd healthy over mTLS at {','.join(plan['servers'])}")
    registry = ClientRegistry()
    handler = apiserver_handler(registry, version, args.flag("anonymous-auth", default=True), plan["audit_log"])
    context = net.server_context(args.get("tls-cert-file"), args.get("tls-private-key-file"), args.get("client-ca-file"))
    try:
        server = net.TLSServer((plan["bind"], plan["port"]), handler, context)
    except OSError as error:
        raise CheckError(f"--bind-address/--secure-port {plan['bind']}:{plan['port']}: {error.strerror}") from None
    net.serve(server, "kube-apiserver")
    log(f"kube-apiserver: serving HTTPS on {plan['bind']}:{plan['port']} with {args.get('tls-cert-file')}")
    keep_checking(attempt, "kube-apiserver: etcd")


def apiserver_handler(registry: ClientRegistry, version: str, anonymous: bool, audit_log: str | None):
    audit_lock = threading.Lock()

    class APIServerHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            identity = net.peer_identity(self)
            path = self.path.split("?", 1)[0]
            registry.record(identity)
            if path in ("/healthz", "/livez", "/readyz"):
                code = 200
                net.text_response(self, code, "ok")
            elif path == "/version":
                code = 200
                net.json_response(self, code, version_info(version))
            elif identity is None:
                code = 403 if anonymous else 401
                body = (net.status(403, "Forbidden", f'forbidden: User "system:anonymous" cannot get path "{path}"')
                        if anonymous else net.status(401, "Unauthorized", "Unauthorized"))
                net.json_response(self, code, body)
            elif path == WHOAMI:
                code = 200
                net.json_response(self, code, {"cn": identity[0], "o": identity[1]})
            elif path == CLIENTS:
                code = 200
                net.json_response(self, code, {"clients": registry.listing()})
            else:
                code = 404
                net.json_response(self, code, net.status(404, "NotFound", "the server could not find the requested "
                                                                          "resource (placeholder: no Kubernetes API)"))
            if identity is not None:
                log(f"kube-apiserver: client CN={identity[0]} O={identity[1]} from {self.client_address[0]} "
                    f"GET {path} {code}")
            elif path not in PUBLIC_PATHS:
                log(f"kube-apiserver: anonymous client from {self.client_address[0]} GET {path} {code}")
            self.audit(identity, path, code)

        def audit(self, identity, path: str, code: int) -> None:
            if not audit_log:
                return
            event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "verb": "get",
                     "requestURI": path, "user": {"username": identity[0] if identity else "system:anonymous"},
                     "responseStatus": {"code": code},
                     "stageTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            line = json.dumps(event) + "\n"
            with audit_lock:
                if audit_log == "-":
                    sys.stdout.write(line)
                else:
                    with open(audit_log, "a") as handle:
                        handle.write(line)

        def log_message(self, *_) -> None:
            pass

    return APIServerHandler


RUNNERS = {
    "kube-apiserver": run_apiserver,
    "kube-controller-manager": run_controller_manager,
    "kube-scheduler": run_scheduler,
    "kubelet": run_kubelet,
    "kube-proxy": run_proxy,
}
