"""What the bootstrap renders, checked against what each component needs and against real tools:
the real flag sets (groundup/kube_flags), systemd-analyze verify, tomllib, kubectl's decoder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from groundup.bootstrap import node_plan
from groundup.bootstrap.addons import cluster_manifests
from groundup.bootstrap.units import exec_command, unit_flags
from groundup.distribution import node_layout
from groundup.kube_flags import known_flags
from groundup.releases import node_release_manifest
from groundup.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT / "clusters/sandbox.yaml")
SEED = load_spec(ROOT / "clusters/seed.yaml")
LB = "groundup-sandbox-0123456789.elb.us-east-2.amazonaws.com"
MASTER, WORKER = SPEC.masters[0], SPEC.workers[1]
PLANS = {n.short_name: node_plan(SPEC, n, LB) for n in (MASTER, WORKER)}
KUBE_UNITS = {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"}


def unit(node: str, name: str) -> bytes:
    return PLANS[node].file(f"/etc/systemd/system/{name}.service").data


def test_masters_run_etcd_then_the_control_plane_workers_containerd_kubelet_proxy():
    assert PLANS["master-0"].units == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    assert PLANS["worker-1"].units == ["containerd", "kubelet", "kube-proxy"]


@pytest.mark.parametrize("node,name", [("master-0", u) for u in ("kube-apiserver", "kube-controller-manager",
                                                                 "kube-scheduler")]
                         + [("worker-1", u) for u in ("kubelet", "kube-proxy")])
def test_every_flag_is_one_the_real_component_has(node, name):
    flags = set(unit_flags(unit(node, name)))
    unknown = flags - known_flags(name, SPEC.kubernetes_version)
    assert not unknown, f"{name} has no flags {sorted(unknown)} in Kubernetes {SPEC.kubernetes_version}"


def test_etcd_uses_tls_for_clients_and_peers_with_client_cert_auth_and_the_spec_members():
    flags = unit_flags(unit("master-0", "etcd"))
    assert flags["client-cert-auth"] is True and flags["peer-client-cert-auth"] is True
    assert flags["cert-file"] == flags["peer-cert-file"] == "/etc/etcd/etcd-master-0.pem"
    assert flags["trusted-ca-file"] == flags["peer-trusted-ca-file"] == "/var/lib/kubernetes/ca.pem"
    assert flags["initial-cluster"] == ("master-0=https://10.240.0.10:2380,master-1=https://10.240.0.11:2380,"
                                        "master-2=https://10.240.0.12:2380")
    assert flags["listen-client-urls"] == "https://10.240.0.10:2379,https://127.0.0.1:2379"
    assert b"Type=notify" in unit("master-0", "etcd")
    assert [(d.path, d.mode) for d in PLANS["master-0"].dirs] == [("/var/lib/etcd", 0o700)]


def test_apiserver_flags_the_issue_names():
    flags = unit_flags(unit("master-0", "kube-apiserver"))
    assert flags["etcd-servers"] == "https://10.240.0.10:2379,https://10.240.0.11:2379,https://10.240.0.12:2379"
    assert flags["etcd-certfile"] == flags["kubelet-client-certificate"] == "/var/lib/kubernetes/master-kubernetes.pem"
    assert flags["encryption-provider-config"] == "/var/lib/kubernetes/encryption-config.yaml"
    assert flags["service-cluster-ip-range"] == "10.32.0.0/24"
    assert flags["service-account-issuer"] == f"https://{LB}:6443"
    assert flags["authorization-mode"] == "Node,RBAC"
    assert flags["audit-policy-file"] == "/var/lib/kubernetes/audit-policy.yaml" and flags["audit-log-path"]
    assert flags["advertise-address"] == "10.240.0.10"
    policy = yaml.safe_load(PLANS["master-0"].file("/var/lib/kubernetes/audit-policy.yaml").data)
    assert (policy["apiVersion"], policy["kind"]) == ("audit.k8s.io/v1", "Policy") and policy["rules"]


def test_controller_manager_and_scheduler():
    flags = unit_flags(unit("master-0", "kube-controller-manager"))
    assert flags["cluster-cidr"] == "10.200.0.0/16" and flags["service-cluster-ip-range"] == "10.32.0.0/24"
    assert flags["cluster-signing-key-file"] == "/var/lib/kubernetes/ca-key.pem"
    assert flags["leader-elect"] == "true"
    config = yaml.safe_load(PLANS["master-0"].file("/etc/kubernetes/config/kube-scheduler.yaml").data)
    assert (config["apiVersion"], config["kind"]) == ("kubescheduler.config.k8s.io/v1", "KubeSchedulerConfiguration")
    assert config["leaderElection"]["leaderElect"] is True
    assert config["clientConnection"]["kubeconfig"] == "/var/lib/kubernetes/kube-scheduler.kubeconfig"


def test_worker_configs():
    plan = PLANS["worker-1"]
    kubelet = yaml.safe_load(plan.file("/var/lib/kubelet/kubelet-config.yaml").data)
    assert (kubelet["apiVersion"], kubelet["kind"]) == ("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration")
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["authentication"]["webhook"]["enabled"] is True and kubelet["authorization"]["mode"] == "Webhook"
    assert kubelet["clusterDNS"] == ["10.32.0.10"] and kubelet["podCIDR"] == "10.200.1.0/24"
    assert kubelet["tlsCertFile"] == f"/var/lib/kubelet/{WORKER.name}.pem"
    assert kubelet["cgroupDriver"] == "systemd"
    proxy = yaml.safe_load(plan.file("/var/lib/kube-proxy/kube-proxy-config.yaml").data)
    assert (proxy["kind"], proxy["clusterCIDR"]) == ("KubeProxyConfiguration", "10.200.0.0/16")
    bridge = json.loads(plan.file("/etc/cni/net.d/10-bridge.conf").data)
    assert bridge["type"] == "bridge" and bridge["ipam"]["ranges"] == [[{"subnet": "10.200.1.0/24"}]]
    assert json.loads(plan.file("/etc/cni/net.d/99-loopback.conf").data)["type"] == "loopback"
    containerd = tomllib.loads(plan.file("/etc/containerd/config.toml").data.decode())
    cri = containerd["plugins"]["io.containerd.grpc.v1.cri"]
    assert containerd["version"] == 2
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert cri["cni"] == {"bin_dir": "/opt/cni/bin", "conf_dir": "/etc/cni/net.d"}
    assert b"net.ipv4.ip_forward = 1" in plan.file("/etc/sysctl.d/90-groundup.conf").data


@pytest.mark.parametrize("node", ["master-0", "worker-1"])
def test_every_path_a_unit_reads_is_rendered_distributed_or_installed(node):
    target = MASTER if node == "master-0" else WORKER
    plan = PLANS[node]
    rendered = {f.path for f in plan.files}
    distributed = {remote for remote, _ in node_layout(target).values()}
    installs = [i for a in node_release_manifest(SPEC, target)["artifacts"] for i in a["install"]]
    files = {i["path"] for i in installs if not i["member"].endswith("/")}
    dirs = tuple(i["path"].rstrip("/") + "/" for i in installs if i["member"].endswith("/"))
    for unit_name, inputs in plan.unit_inputs.items():
        missing = {p for p in inputs if p not in rendered | distributed | files and not p.startswith(dirs)}
        assert not missing, f"{unit_name} reads {sorted(missing)}, which nothing places on {node}"
        binary = exec_command(plan.file(f"/etc/systemd/system/{unit_name}.service").data)[0]
        assert binary in inputs


def test_same_spec_same_bytes():
    again = node_plan(SPEC, WORKER, LB)
    assert [(f.path, f.data, f.mode) for f in again.files] == [(f.path, f.data, f.mode) for f in PLANS["worker-1"].files]
    assert cluster_manifests(SPEC) == cluster_manifests(SPEC)


def test_seed_topology_renders_for_every_node():
    for node in SEED.nodes:
        plan = node_plan(SEED, node, LB)
        assert plan.units and all(f.data for f in plan.files)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze (Debian package systemd)")
def test_units_pass_systemd_analyze_verify(tmp_path: Path):
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    units = []
    for plan in PLANS.values():
        for f in plan.files:
            if f.path.endswith(".service"):
                target = root / f.path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(f.data)
                binary = root / exec_command(f.data)[0].lstrip("/")
                binary.parent.mkdir(parents=True, exist_ok=True)
                binary.write_text("#!/bin/sh\n")
                binary.chmod(0o755)
                units.append(str(target))
    result = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units], capture_output=True, text=True,
                            env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_manifests_decode_with_real_kubectl(tmp_path: Path):
    kubectl = Path(sys.executable).with_name("kubectl")
    names = []
    for title, manifest in cluster_manifests(SPEC):
        path = tmp_path / f"{title.replace(' ', '-')}.yaml"
        path.write_bytes(manifest)
        result = subprocess.run([str(kubectl), "label", "--local", "-f", str(path), "groundup/checked=yes", "-o", "name"],
                                capture_output=True, text=True, env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]})
        assert result.returncode == 0, result.stderr
        names += result.stdout.split()
    assert names == [
        "clusterrole.rbac.authorization.k8s.io/system:kube-apiserver-to-kubelet",
        "clusterrolebinding.rbac.authorization.k8s.io/system:kube-apiserver",
        "serviceaccount/coredns", "clusterrole.rbac.authorization.k8s.io/system:coredns",
        "clusterrolebinding.rbac.authorization.k8s.io/system:coredns", "configmap/coredns",
        "deployment.apps/coredns", "service/kube-dns",
    ]
    service = list(yaml.safe_load_all(cluster_manifests(SPEC)[1][1]))[-1]
    assert service["spec"]["clusterIP"] == "10.32.0.10"
