"""The placeholders against real things on loopback: etcd with client mTLS, containerd's socket, openssl and curl.

Certificates and kubeconfigs come from the project's own PKI code; the placeholders run with Debian's
/usr/bin/python3 as on the nodes. Everything binds to 127.0.0.0/8.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from groundup import pki, smoke
from groundup.encryption import generate_encryption_key, render_encryption_config
from groundup.kubeconfig import render_kubeconfig
from groundup.kube_flags import COMPONENTS
from groundup.spec import PKISettings
from sandbox.placeholders import build_placeholder

VERSION = "1.32.3"
API_IP, KUBELET_IP, ETCD_IP = "127.0.0.2", "127.0.0.3", "127.0.0.4"
ETCD = "/usr/bin/etcd"
CONTAINERD = "/usr/bin/containerd"
pytestmark = pytest.mark.skipif(not (Path(ETCD).exists() and shutil.which("openssl") and shutil.which("curl")),
                                reason="needs Debian's etcd, openssl and curl")


def free_port(ip: str) -> int:
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return sock.getsockname()[1]


@dataclass
class Pki:
    """A CA and leaf certificates written as PEM files, issued by groundup.pki."""

    folder: Path
    settings: PKISettings
    ca_cert: object = None
    ca_key: object = None

    @classmethod
    def create(cls, folder: Path, name: str = "ca") -> "Pki":
        folder.mkdir(parents=True, exist_ok=True)
        made = cls(folder, PKISettings())
        made.ca_key = pki.generate_private_key(made.settings.key_algorithm)
        made.ca_cert = pki.issue_ca(pki.CertRequest(name, f"{name} CA", "groundup"), made.settings, made.ca_key)
        (folder / "ca.pem").write_bytes(pki.certificate_pem(made.ca_cert))
        (folder / "ca-key.pem").write_bytes(pki.private_key_pem(made.ca_key))
        return made

    def issue(self, name: str, cn: str, org: str, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> tuple[Path, Path]:
        key = pki.generate_private_key(self.settings.key_algorithm)
        cert = pki.issue_certificate(pki.CertRequest(name, cn, org, dns, ips), self.settings, key, self.ca_cert, self.ca_key)
        (self.folder / f"{name}.pem").write_bytes(pki.certificate_pem(cert))
        (self.folder / f"{name}-key.pem").write_bytes(pki.private_key_pem(key))
        return self.folder / f"{name}.pem", self.folder / f"{name}-key.pem"

    def kubeconfig(self, name: str, server: str, user: str) -> Path:
        path = self.folder / f"{name}.kubeconfig"
        path.write_text(render_kubeconfig("sandbox", server, (self.folder / "ca.pem").read_bytes(), user,
                                          (self.folder / f"{name}.pem").read_bytes(),
                                          (self.folder / f"{name}-key.pem").read_bytes()))
        return path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"


class Process:
    """A background process with its output in a file; stopped by its own pid."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.log = log
        self.handle = open(log, "wb")
        self.popen = subprocess.Popen(args, stdout=self.handle, stderr=subprocess.STDOUT,
                                      env=env or {"PATH": "/usr/bin:/bin"})

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.handle.close()


def wait_for(check, what: str, timeout: float = 20, process: Process | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        result = check()
        if result:
            return result
        if process is not None and process.popen.poll() is not None:
            pytest.fail(f"{what}: process exited {process.popen.returncode}:\n{process.output()}")
        time.sleep(0.2)
    pytest.fail(f"{what}: not within {timeout}s" + (f"\n{process.output()}" if process else ""))


def placeholder_env(wait_s: float = 20) -> dict:
    return {"PATH": "/usr/bin:/bin", "GROUNDUP_PLACEHOLDER_WAIT_S": str(wait_s), "GROUNDUP_PLACEHOLDER_RECHECK_S": "2"}


def curl(url: str, ca: Path, cert: Path | None = None, key: Path | None = None) -> tuple[int, str]:
    args = ["curl", "-sS", "--max-time", "5", "--cacert", str(ca), "-w", "\n%{http_code}", url]
    if cert:
        args += ["--cert", str(cert), "--key", str(key)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=15)
    body, _, code = result.stdout.rpartition("\n")
    return int(code or 0), body


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("placeholders")


@pytest.fixture(scope="module")
def binaries(work) -> dict[str, Path]:
    return {c: build_placeholder(c, VERSION, work / "bin" / c) for c in COMPONENTS}


@pytest.fixture(scope="module")
def cluster_pki(work) -> Pki:
    made = Pki.create(work / "pki")
    made.issue("kubernetes", "kubernetes", "groundup", ("kubernetes", "localhost"), (API_IP, "127.0.0.1"))
    made.issue("etcd", "etcd-0", "groundup", ("localhost",), (ETCD_IP,))
    made.issue("admin", "admin", "system:masters")
    made.issue("service-account", "service-accounts", "groundup")
    made.issue("worker-0", "system:node:worker-0", "system:nodes", ("worker-0",), (KUBELET_IP,))
    made.issue("kube-proxy", "system:kube-proxy", "system:node-proxier")
    return made


@pytest.fixture(scope="module")
def etcd(work, cluster_pki) -> str:
    client, peer = free_port(ETCD_IP), free_port(ETCD_IP)
    url = f"https://{ETCD_IP}:{client}"
    peer_url = f"http://{ETCD_IP}:{peer}"
    process = Process([ETCD, "--name", "etcd-0", "--data-dir", str(work / "etcd-data"),
                       "--listen-client-urls", url, "--advertise-client-urls", url,
                       "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
                       "--initial-cluster", f"etcd-0={peer_url}", "--initial-cluster-state", "new",
                       "--cert-file", str(cluster_pki.folder / "etcd.pem"),
                       "--key-file", str(cluster_pki.folder / "etcd-key.pem"),
                       "--client-cert-auth", "--trusted-ca-file", str(cluster_pki.ca)], work / "etcd.log")
    cert, key = cluster_pki.folder / "kubernetes.pem", cluster_pki.folder / "kubernetes-key.pem"
    wait_for(lambda: curl(f"{url}/health", cluster_pki.ca, cert, key)[0] == 200, "etcd healthy", process=process)
    yield url
    process.stop()


def apiserver_args(pki_: Pki, etcd_url: str, port: int, work: Path) -> list[str]:
    d = pki_.folder
    encryption = work / "encryption-config.yaml"
    encryption.write_text(render_encryption_config(generate_encryption_key()))
    audit_policy = work / "audit-policy.yaml"
    audit_policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n")
    return [
        f"--advertise-address={API_IP}", "--allow-privileged=true", f"--audit-log-path={work / 'audit.log'}",
        f"--audit-policy-file={audit_policy}", "--authorization-mode=Node,RBAC", f"--bind-address={API_IP}",
        f"--client-ca-file={d / 'ca.pem'}", "--enable-admission-plugins=NamespaceLifecycle,NodeRestriction",
        f"--encryption-provider-config={encryption}", f"--etcd-cafile={d / 'ca.pem'}",
        f"--etcd-certfile={d / 'kubernetes.pem'}", f"--etcd-keyfile={d / 'kubernetes-key.pem'}",
        f"--etcd-servers={etcd_url}", "--event-ttl=1h", f"--kubelet-certificate-authority={d / 'ca.pem'}",
        f"--kubelet-client-certificate={d / 'kubernetes.pem'}", f"--kubelet-client-key={d / 'kubernetes-key.pem'}",
        "--runtime-config=api/all=true", f"--secure-port={port}",
        f"--service-account-key-file={d / 'service-account.pem'}",
        f"--service-account-signing-key-file={d / 'service-account-key.pem'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        "--service-cluster-ip-range=10.32.0.0/24", "--service-node-port-range=30000-32767",
        f"--tls-cert-file={d / 'kubernetes.pem'}", f"--tls-private-key-file={d / 'kubernetes-key.pem'}", "--v=2",
    ]


@pytest.fixture(scope="module")
def apiserver(work, binaries, cluster_pki, etcd):
    port = free_port(API_IP)
    process = Process([str(binaries["kube-apiserver"]), *apiserver_args(cluster_pki, etcd, port, work)],
                      work / "apiserver.log", placeholder_env())
    url = f"https://{API_IP}:{port}"
    wait_for(lambda: curl(f"{url}/healthz", cluster_pki.ca)[0] == 200, "apiserver /healthz", process=process)
    yield url, process
    process.stop()


@pytest.fixture(scope="module")
def containerd(work) -> str:
    if not Path(CONTAINERD).exists():
        pytest.skip("needs Debian's containerd")
    root = work / "containerd"
    root.mkdir()
    sock = root / "containerd.sock"
    config = root / "config.toml"
    config.write_text(f'version = 2\nroot = "{root}/root"\nstate = "{root}/state"\n'
                      'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
                      f'[grpc]\n  address = "{sock}"\n[ttrpc]\n  address = "{sock}.ttrpc"\n')
    process = Process([CONTAINERD, "--config", str(config)], work / "containerd.log")
    wait_for(sock.exists, "containerd socket", process=process)
    yield f"unix://{sock}"
    process.stop()


def kubelet_files(work: Path, pki_: Pki, server: str, runtime: str, port: int) -> tuple[Path, Path]:
    kubeconfig = pki_.kubeconfig("worker-0", server, "system:node:worker-0")
    config = work / "kubelet-config.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": KUBELET_IP, "port": port, "healthzPort": 0,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki_.ca)}},
        "authorization": {"mode": "Webhook"}, "cgroupDriver": "systemd", "clusterDomain": "cluster.local",
        "clusterDNS": ["10.32.0.10"], "containerRuntimeEndpoint": runtime, "podCIDR": "172.20.0.0/24",
        "tlsCertFile": str(pki_.folder / "worker-0.pem"), "tlsPrivateKeyFile": str(pki_.folder / "worker-0-key.pem"),
    }))
    return kubeconfig, config


# The API server ---------------------------------------------------------------------------------------

def test_health_and_version_are_open_to_a_client_without_a_cert(apiserver, cluster_pki):
    url, _ = apiserver
    assert curl(f"{url}/healthz", cluster_pki.ca) == (200, "ok")
    code, body = curl(f"{url}/version", cluster_pki.ca)
    version = json.loads(body)
    assert code == 200 and version["gitVersion"] == f"v{VERSION}" and version["minor"] == "32"
    assert smoke.is_placeholder_version(version)


def test_other_paths_refuse_a_client_without_a_cert(apiserver, cluster_pki):
    url, _ = apiserver
    code, body = curl(f"{url}/placeholder/v1/clients", cluster_pki.ca)
    assert code == 403
    assert json.loads(body)["kind"] == "Status" and "system:anonymous" in json.loads(body)["message"]


def test_admin_cert_is_accepted_and_logged_with_cn_and_o(apiserver, cluster_pki):
    url, process = apiserver
    d = cluster_pki.folder
    code, body = curl(f"{url}/placeholder/v1/clients", cluster_pki.ca, d / "admin.pem", d / "admin-key.pem")
    assert code == 200
    assert {"cn": "admin", "o": "system:masters"}.items() <= json.loads(body)["clients"][0].items()
    assert "client CN=admin O=system:masters" in process.output()


def test_openssl_verifies_the_serving_cert_and_its_ip(apiserver, cluster_pki):
    url, _ = apiserver
    host_port = url.removeprefix("https://")
    result = subprocess.run(["openssl", "s_client", "-connect", host_port, "-CAfile", str(cluster_pki.ca),
                             "-verify_return_error", "-verify_ip", API_IP, "-brief"],
                            input="", capture_output=True, text=True, timeout=15)
    assert result.returncode == 0, result.stderr
    assert "Verification: OK" in result.stderr


def test_a_client_cert_from_another_ca_fails_the_handshake(apiserver, work):
    url, _ = apiserver
    other = Pki.create(work / "other-client", "other")
    cert, key = other.issue("admin", "admin", "system:masters")
    code, _ = curl(f"{url}/placeholder/v1/clients", work / "pki" / "ca.pem", cert, key)
    assert code == 0


def test_a_serving_cert_from_another_ca_stops_the_apiserver_naming_the_file(work, binaries, cluster_pki, etcd):
    other = Pki.create(work / "other-serving", "other")
    cert, key = other.issue("kubernetes", "kubernetes", "groundup", ("kubernetes",), (API_IP,))
    args = apiserver_args(cluster_pki, etcd, free_port(API_IP), work)
    args = [a for a in args if not a.startswith(("--tls-cert-file", "--tls-private-key-file"))]
    result = subprocess.run([str(binaries["kube-apiserver"]), *args, f"--tls-cert-file={cert}",
                             f"--tls-private-key-file={key}"], capture_output=True, text=True, timeout=30,
                            env=placeholder_env(2))
    assert result.returncode == 1
    assert f"--tls-cert-file {cert}" in result.stderr and "is not signed by the CA in --client-ca-file" in result.stderr


def test_etcd_that_never_answers_stops_the_apiserver_in_bounded_time(work, binaries, cluster_pki):
    dead = f"https://{ETCD_IP}:{free_port(ETCD_IP)}"
    started = time.monotonic()
    result = subprocess.run([str(binaries["kube-apiserver"]),
                             *apiserver_args(cluster_pki, dead, free_port(API_IP), work)],
                            capture_output=True, text=True, timeout=30, env=placeholder_env(2))
    assert result.returncode == 1 and time.monotonic() - started < 15
    assert "no etcd server is healthy" in result.stderr and dead in result.stderr


# The kubelet and the other clients ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def kubelet(work, binaries, cluster_pki, apiserver, containerd):
    url, _ = apiserver
    port = free_port(KUBELET_IP)
    kubeconfig, config = kubelet_files(work, cluster_pki, url, containerd, port)
    process = Process([str(binaries["kubelet"]), f"--config={config}", f"--kubeconfig={kubeconfig}",
                       "--register-node=true", "--v=2"], work / "kubelet.log", placeholder_env())
    wait_for(lambda: "reached the API server" in process.output(), "kubelet reaches the API server", process=process)
    yield f"https://{KUBELET_IP}:{port}", process
    process.stop()


def test_kubelet_reaches_the_apiserver_with_its_own_cert(kubelet, apiserver, cluster_pki):
    url, api = apiserver
    d = cluster_pki.folder
    code, body = curl(f"{url}/placeholder/v1/clients", cluster_pki.ca, d / "admin.pem", d / "admin-key.pem")
    seen = {(c["cn"], c["o"]) for c in json.loads(body)["clients"]}
    assert ("system:node:worker-0", "system:nodes") in seen
    assert "system:node:worker-0" in smoke.parse_client_identities(api.output())


def test_kubelet_serves_10250_only_to_clients_with_a_cert(kubelet, cluster_pki):
    url, process = kubelet
    d = cluster_pki.folder
    assert curl(f"{url}/healthz", cluster_pki.ca)[0] == 401
    assert curl(f"{url}/healthz", cluster_pki.ca, d / "kubernetes.pem", d / "kubernetes-key.pem") == (200, "ok")
    assert "client CN=kubernetes" in process.output()


def test_kube_proxy_with_its_config_reaches_the_apiserver(work, binaries, cluster_pki, apiserver):
    url, api = apiserver
    kubeconfig = cluster_pki.kubeconfig("kube-proxy", url, "system:kube-proxy")
    config = work / "kube-proxy-config.yaml"
    config.write_text("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                      f"clientConnection:\n  kubeconfig: {kubeconfig}\nmode: iptables\nclusterCIDR: 172.20.0.0/16\n")
    process = Process([str(binaries["kube-proxy"]), f"--config={config}"], work / "kube-proxy.log", placeholder_env())
    try:
        wait_for(lambda: "reached the API server" in process.output(), "kube-proxy reaches the API", process=process)
        assert "system:kube-proxy" in smoke.parse_client_identities(api.output())
    finally:
        process.stop()


def test_kubelet_without_a_container_runtime_names_the_socket(work, binaries, cluster_pki, apiserver):
    url, _ = apiserver
    missing = f"unix://{work}/no-containerd.sock"
    kubeconfig, config = kubelet_files(work, cluster_pki, url, missing, free_port(KUBELET_IP))
    result = subprocess.run([str(binaries["kubelet"]), f"--config={config}", f"--kubeconfig={kubeconfig}"],
                            capture_output=True, text=True, timeout=30, env=placeholder_env(1))
    assert result.returncode == 1
    assert "containerRuntimeEndpoint" in result.stderr and "no-containerd.sock: no such socket" in result.stderr


def test_a_client_gives_up_on_a_server_that_never_answers(work, binaries, cluster_pki):
    server = f"https://{API_IP}:{free_port(API_IP)}"
    kubeconfig = cluster_pki.kubeconfig("kube-proxy", server, "system:kube-proxy")
    result = subprocess.run([str(binaries["kube-proxy"]), f"--kubeconfig={kubeconfig}"],
                            capture_output=True, text=True, timeout=30, env=placeholder_env(2))
    assert result.returncode == 1
    assert f"reaching the API server {server}" in result.stderr and "gave up" in result.stderr


def relay(listen_ip: str, target: tuple[str, int]) -> tuple[socket.socket, int]:
    """A TCP relay (what the NLB does) on another loopback address, whose IP the serving cert does not name."""
    listener = socket.create_server((listen_ip, 0))

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        with src, dst:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass

    def accept() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(target)
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, listener.getsockname()[1]


def test_a_server_address_the_cert_does_not_name_fails_host_verification(work, binaries, cluster_pki, apiserver):
    url, _ = apiserver
    listener, port = relay("127.0.0.6", (API_IP, int(url.rsplit(":", 1)[1])))
    try:
        kubeconfig = cluster_pki.kubeconfig("kube-proxy", f"https://127.0.0.6:{port}", "system:kube-proxy")
        result = subprocess.run([str(binaries["kube-proxy"]), f"--kubeconfig={kubeconfig}"],
                                capture_output=True, text=True, timeout=30, env=placeholder_env(2))
    finally:
        listener.close()
    assert result.returncode == 1
    assert "TLS verification failed" in result.stderr and "127.0.0.6" in result.stderr


def test_a_kubeconfig_whose_client_cert_is_from_another_ca_is_refused(work, binaries, cluster_pki, apiserver):
    url, _ = apiserver
    other = Pki.create(work / "other-kubeconfig", "other")
    other.issue("kube-proxy", "system:kube-proxy", "system:node-proxier")
    kubeconfig = work / "mixed.kubeconfig"
    kubeconfig.write_text(render_kubeconfig("sandbox", url, cluster_pki.ca.read_bytes(), "system:kube-proxy",
                                            (other.folder / "kube-proxy.pem").read_bytes(),
                                            (other.folder / "kube-proxy-key.pem").read_bytes()))
    result = subprocess.run([str(binaries["kube-proxy"]), f"--kubeconfig={kubeconfig}"],
                            capture_output=True, text=True, timeout=30, env=placeholder_env(2))
    assert result.returncode == 1
    assert f"--kubeconfig {kubeconfig}: client-certificate" in result.stderr and "not signed by the CA" in result.stderr


def test_a_key_that_is_not_the_certs_is_refused(work, binaries, cluster_pki, apiserver):
    url, _ = apiserver
    d = cluster_pki.folder
    kubeconfig = work / "wrong-key.kubeconfig"
    kubeconfig.write_text(render_kubeconfig("sandbox", url, cluster_pki.ca.read_bytes(), "system:kube-proxy",
                                            (d / "kube-proxy.pem").read_bytes(), (d / "admin-key.pem").read_bytes()))
    result = subprocess.run([str(binaries["kube-proxy"]), f"--kubeconfig={kubeconfig}"],
                            capture_output=True, text=True, timeout=30, env=placeholder_env(2))
    assert result.returncode == 1 and "does not belong to the certificate" in result.stderr
