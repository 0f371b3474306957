"""The whole build on the sandbox through the smoke test, with the real control plane and workers, checked
independently from the host: etcd's members, every unit, the API through the load balancer by the NLB's
name, every worker Ready at the spec's version, a re-run that restarts nothing, and the smoke test naming
a stopped etcd member, a stopped kubelet and an apiserver with a foreign certificate."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from groundup.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO / "clusters" / "sandbox.yaml"
SPEC = load_spec(SPEC_PATH)
MASTER_UNITS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
WORKER_UNITS = ["containerd", "kubelet", "kube-proxy"]


def groundup(sandbox, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "groundup.cli", *args], cwd=REPO, env=sandbox.env,
                          capture_output=True, text=True, timeout=timeout)


def start_times(sandbox) -> dict[str, str]:
    """Per node and unit: when systemd last started it (monotonic), to tell a restart."""
    times = {}
    for node in SPEC.nodes:
        units = MASTER_UNITS if node.role.value == "master" else WORKER_UNITS
        out = sandbox.node_exec(node.short_name, "systemctl", "show", "-p", "Id,ExecMainStartTimestampMonotonic",
                                *[f"{u}.service" for u in units]).stdout
        for block in out.strip().split("\n\n"):
            fields = dict(line.split("=", 1) for line in block.splitlines())
            times[f"{node.short_name}/{fields['Id']}"] = fields["ExecMainStartTimestampMonotonic"]
    return times


@pytest.fixture(scope="module")
def built(sandbox):
    result = groundup(sandbox, "build", str(SPEC_PATH))
    assert result.returncode == 0, result.stdout + result.stderr
    return sandbox


def test_etcd_has_three_healthy_members(built):
    master = SPEC.masters[0]
    out = built.node_exec(master.short_name, "env", "ETCDCTL_API=3", "/usr/local/bin/etcdctl",
                          "--endpoints=" + ",".join(f"https://{m.private_ip}:2379" for m in SPEC.masters),
                          "--cacert=/var/lib/kubernetes/ca.pem", f"--cert=/etc/etcd/etcd-{master.short_name}.pem",
                          f"--key=/etc/etcd/etcd-{master.short_name}-key.pem", "endpoint", "health", "-w", "json")
    health = json.loads(out.stdout)
    assert len(health) == 3 and all(e["health"] for e in health), out.stdout + out.stderr


def test_every_unit_is_active(built):
    for node in SPEC.nodes:
        units = MASTER_UNITS if node.role.value == "master" else WORKER_UNITS
        out = built.node_exec(node.short_name, "systemctl", "is-active", *units)
        assert out.stdout.split() == ["active"] * len(units), f"{node.short_name}: {out.stdout}"


def test_api_through_the_load_balancer_by_name_and_no_cert_refused(built, tmp_path):
    kubeconfig = tmp_path / "admin.kubeconfig"
    result = groundup(built, "kubeconfig", str(SPEC_PATH), "-o", str(kubeconfig), timeout=120)
    assert result.returncode == 0, result.stderr
    kubectl = Path(sys.executable).with_name("kubectl")
    health = subprocess.run([str(kubectl), "--kubeconfig", str(kubeconfig), "get", "--raw", "/healthz"],
                            capture_output=True, text=True, timeout=60)
    assert health.stdout.strip() == "ok", health.stderr
    server = subprocess.run([str(kubectl), "--kubeconfig", str(kubeconfig), "config", "view", "-o",
                             "jsonpath={.clusters[0].cluster.server}"], capture_output=True, text=True).stdout
    assert server.endswith(".elb.amazonaws.com:6443") or ".elb." in server, server
    anonymous = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", "/dev/null",
                                "-k", server + "/api/v1/namespaces"], capture_output=True, text=True, timeout=30)
    assert anonymous.stdout in ("401", "403"), anonymous.stdout


def test_smoke_leaves_no_container_task_or_pod_address_on_workers(built):
    """The smoke test's container and pod are gone once it passed, and the pod's address is free again
    (`ctr run --cni` reserves one that only the smoke test's own clean-up gives back)."""
    for worker in SPEC.workers:
        out = built.node_exec(worker.short_name, "sh", "-c",
                              "ctr -n groundup-smoke containers ls -q; ctr -n groundup-smoke tasks ls -q; "
                              "grep -ls groundup-smoke /var/lib/cni/networks/*/* 2>/dev/null; true")
        assert out.stdout.split() == [], f"{worker.short_name}: {out.stdout}"


def test_a_rerun_restarts_nothing(built):
    before = start_times(built)
    result = groundup(built, "build", str(SPEC_PATH), "--phases", "distribute,bootstrap")
    assert result.returncode == 0, result.stdout + result.stderr
    assert start_times(built) == before


def test_smoke_names_a_stopped_etcd_member_then_passes_again(built):
    built.node_exec("master-1", "systemctl", "stop", "etcd")
    try:
        result = groundup(built, "smoke", str(SPEC_PATH), timeout=600)
        assert result.returncode == 1
        assert "master-1: etcd is inactive/dead" in result.stdout + result.stderr
        assert "master-1 (https://10.240.0.11:2379) is unhealthy" in result.stdout + result.stderr
    finally:
        built.node_exec("master-1", "systemctl", "start", "etcd")
    result = groundup(built, "smoke", str(SPEC_PATH), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_smoke_names_a_missing_pod_route_and_the_bootstrap_puts_it_back(built):
    """The route table loses worker-2's pod route: the sandbox takes it off every node as the VPC would stop
    routing, the smoke test names the paths that broke (a second ping round does not hide a real failure),
    and a bootstrap run creates the route again."""
    import boto3

    env = built.env
    ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=SPEC.region,
                       aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    (table,) = ec2.describe_route_tables(
        Filters=[{"Name": "tag:groundup/cluster", "Values": [SPEC.name]}])["RouteTables"]
    lost = SPEC.workers[2]
    ec2.delete_route(RouteTableId=table["RouteTableId"], DestinationCidrBlock=str(lost.pod_cidr))
    try:
        time.sleep(3)  # the controller follows moto's routes every second
        result = groundup(built, "smoke", str(SPEC_PATH), timeout=600)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "worker-0 cannot reach worker-2 10.200.2." in output, output
    finally:
        fixed = groundup(built, "build", str(SPEC_PATH), "--phases", "bootstrap")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    time.sleep(3)
    result = groundup(built, "smoke", str(SPEC_PATH), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_real_cluster_shows_every_worker_ready_at_the_spec_version_with_its_pod_cidr_and_private_ip(built, tmp_path):
    kubeconfig = tmp_path / "admin.kubeconfig"
    assert groundup(built, "kubeconfig", str(SPEC_PATH), "-o", str(kubeconfig), timeout=120).returncode == 0
    kubectl = [str(Path(sys.executable).with_name("kubectl")), "--kubeconfig", str(kubeconfig)]
    version = json.loads(subprocess.run([*kubectl, "version", "-o", "json"], capture_output=True, text=True,
                                        timeout=60).stdout)
    assert version["serverVersion"]["gitVersion"] == f"v{SPEC.kubernetes_version}"
    nodes = json.loads(subprocess.run([*kubectl, "get", "nodes", "-o", "json"], capture_output=True, text=True,
                                      timeout=60).stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert set(by_name) == {w.hostname for w in SPEC.workers}
    for worker in SPEC.workers:
        node = by_name[worker.hostname]
        assert node["spec"]["podCIDR"] == str(worker.pod_cidr)
        assert {"type": "InternalIP", "address": str(worker.private_ip)} in node["status"]["addresses"]
        assert node["status"]["nodeInfo"]["kubeletVersion"] == f"v{SPEC.kubernetes_version}"
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"] == f"containerd://{SPEC.containerd_version}"
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True", ready


def test_smoke_names_a_stopped_kubelet_and_passes_once_it_registers_again(built):
    built.node_exec("worker-1", "systemctl", "stop", "kubelet")
    try:
        result = groundup(built, "smoke", str(SPEC_PATH), timeout=600)
        assert result.returncode == 1
        assert "worker-1: kubelet is inactive/dead" in result.stdout + result.stderr
    finally:
        built.node_exec("worker-1", "systemctl", "start", "kubelet")
    result = groundup(built, "smoke", str(SPEC_PATH), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_apiserver_cert_from_another_ca_fails_its_unit_and_smoke_says_where(built, tmp_path):
    from cryptography.hazmat.primitives import serialization

    from groundup.pki import certificate_pem, generate_private_key, issue_ca, issue_certificate, ca_request, \
        apiserver_request

    other_key = generate_private_key(SPEC.pki.key_algorithm)
    other_ca = issue_ca(ca_request(SPEC), SPEC.pki, other_key)
    leaf_key = generate_private_key(SPEC.pki.key_algorithm)
    leaf = issue_certificate(apiserver_request(SPEC, "example.invalid"), SPEC.pki, leaf_key, other_ca, other_key)
    root = Path(built.node("master-2")["root"])
    (root / "var/lib/kubernetes/master-kubernetes.pem").write_bytes(certificate_pem(leaf))
    (root / "var/lib/kubernetes/master-kubernetes-key.pem").write_bytes(leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    built.node_exec("master-2", "systemctl", "restart", "kube-apiserver")
    result = groundup(built, "smoke", str(SPEC_PATH), timeout=600)
    assert result.returncode == 1
    text = result.stdout + result.stderr
    assert "master-2" in text and "kube-apiserver" in text, text
    repaired = groundup(built, "build", str(SPEC_PATH), "--phases", "distribute,bootstrap,smoke")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr


def test_a_unit_that_fails_at_its_first_start_is_started_again_and_reported(built):
    drop_in = "/run/systemd/system/groundup-node-prep.service.d/50-fail-once.conf"
    marker = "/run/groundup-test-failed-once"
    fail_once = f"[Service]\nExecStartPre=/bin/sh -c 'test -e {marker} || {{ touch {marker}; exit 1; }}'\n"
    built.node_exec("worker-1", "sh", "-c", f"mkdir -p {Path(drop_in).parent} && printf %s \"$0\" > {drop_in} && "
                    f"rm -f {marker} && systemctl daemon-reload && systemctl stop groundup-node-prep", fail_once)
    try:
        result = groundup(built, "build", str(SPEC_PATH), "--phases", "distribute,bootstrap")
        text = result.stdout + result.stderr
        assert result.returncode == 0, text
        assert ("worker-1: a unit failed at start: groundup-node-prep (Result=exit-code), started again after 1 s"
                in text), text
        state = built.node_exec("worker-1", "systemctl", "is-active", "groundup-node-prep").stdout.strip()
        assert state == "active" and built.node_exec("worker-1", "test", "-e", marker).returncode == 0
    finally:
        built.node_exec("worker-1", "sh", "-c", f"rm -f {drop_in} {marker} && systemctl daemon-reload")
