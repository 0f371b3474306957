"""The sandbox's release mirror, built from this machine's Debian packages and wheel, served on loopback;
the node script (run by the nodes' /usr/bin/python3) downloads, verifies and installs from it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from groundup.releases import node_release_manifest
from groundup.spec import load_spec, parse_spec
from sandbox.mirror import build_mirror, contents, make_server

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "groundup" / "node_scripts" / "install_releases.py"
NODE_PYTHON = "/usr/bin/python3"

pytestmark = pytest.mark.skipif(
    shutil.which("dpkg-query") is None or not Path(NODE_PYTHON).exists()
    or subprocess.run(["dpkg-query", "-W", "etcd-server"], capture_output=True).returncode != 0,
    reason="needs Debian with the sandbox's packages (scripts/install-sandbox-deps.sh)",
)


def fake_placeholder_for_tests(component: str, version: str, dest: Path) -> Path:
    """Stands in for sandbox.placeholders until that module exists: a script that only reports its version."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(f"#!/bin/sh\necho 'Kubernetes v{version} (fake placeholder for tests: {component})'\n")
    dest.chmod(0o755)
    return dest


def placeholder_builder():
    try:
        from sandbox.placeholders import build_placeholder
    except ImportError:
        return fake_placeholder_for_tests
    return build_placeholder


class Served:
    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        self.server = make_server(root, "127.0.0.1", 0, log=self.requests.append)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("mirror")
    built = build_mirror(root, log=lambda _: None, placeholder_builder=placeholder_builder())
    served = Served(root)
    yield root, served, built
    served.close()


def sandbox_spec(mirror_url: str, **changes):
    data = load_spec(ROOT / "clusters" / "sandbox.yaml").model_dump(mode="json")
    return parse_spec({**data, "release_mirror": mirror_url, **changes})


def install(spec, node, root: Path, tmp: Path) -> tuple[int, dict, str]:
    manifest = tmp / f"{node.short_name}.manifest.json"
    manifest.write_text(json.dumps(node_release_manifest(spec, node)))
    done = subprocess.run([NODE_PYTHON, str(SCRIPT), str(manifest), "--root", str(root)],
                          capture_output=True, text=True, timeout=120)
    summary = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    return done.returncode, summary, done.stderr


def run(binary: Path, *args: str) -> str:
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_mirror_holds_what_the_sandbox_spec_asks_for_at_the_installed_packages_versions(mirror):
    root, _, built = mirror
    index = json.loads((root / "index.json").read_text())["artifacts"]
    spec = load_spec(ROOT / "clusters" / "sandbox.yaml")
    debian = {}
    for artifact, package in [("etcd", "etcd-server"), ("containerd", "containerd"), ("runc", "runc"),
                              ("cni-plugins", "containernetworking-plugins")]:
        full = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True).stdout
        debian[artifact] = full
        assert len(index[artifact]) == 1 and full.startswith(index[artifact][0]), (artifact, full)
    assert index["etcd"] == [spec.etcd_version] and index["containerd"] == [spec.containerd_version]
    assert index["runc"] == [spec.runc_version] and index["cni-plugins"] == [spec.cni_plugins_version]
    kubectl = json.loads(run(Path(sys.executable).parent / "kubectl", "version", "--client", "-o", "json"))
    assert index["kubectl"] == [kubectl["clientVersion"]["gitVersion"].lstrip("v")]
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"):
        assert index[component] == [spec.kubernetes_version]
    assert built["missing"] == [] and contents(root)["artifacts"] == index


def test_rebuilding_the_mirror_changes_nothing(mirror):
    root, _, _ = mirror
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}
    again = build_mirror(root, log=lambda _: None, placeholder_builder=placeholder_builder())
    assert again["built"] == []
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert set(after) == set(before)
    assert all(after[p] == before[p] for p in before if p.name != "index.json")


def test_mirror_checksum_files_match_their_artifacts_in_upstream_format(mirror):
    root, _, _ = mirror
    etcd_dir = root / "github.com/etcd-io/etcd/releases/download/v3.4.23"
    digest, name = (etcd_dir / "SHA256SUMS").read_text().split()
    assert name == "etcd-v3.4.23-linux-amd64.tar.gz"
    assert digest == hashlib.sha256((etcd_dir / name).read_bytes()).hexdigest()
    runc_dir = root / "github.com/opencontainers/runc/releases/download/v1.1.5"
    check = subprocess.run(["sha256sum", "-c", "runc.sha256sum"], cwd=runc_dir, capture_output=True, text=True)
    assert check.returncode == 0 and "runc.amd64: OK" in check.stdout


def test_mirror_is_read_only_and_serves_only_files(mirror):
    _, served, _ = mirror

    def status(path: str, method: str = "GET") -> int:
        try:
            with urllib.request.urlopen(urllib.request.Request(served.url + path, method=method, data=b"" if
                                                               method == "POST" else None), timeout=5) as reply:
                return reply.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status("/index.json") == 200
    assert status("/dl.k8s.io/") == 404
    assert status("/dl.k8s.io") == 404
    assert status("/.groundup-mirror.json") == 404
    assert status("/../../etc/passwd") == 404
    assert status("/index.json", "POST") == 405
    assert any("GET /index.json" in line and "200" in line for line in served.requests)


@pytest.fixture(scope="module")
def installed(mirror, tmp_path_factory):
    _, served, _ = mirror
    spec = sandbox_spec(served.url)
    tmp = tmp_path_factory.mktemp("nodes")
    runs = {}
    for node in (spec.masters[0], spec.workers[0]):
        root = tmp / node.short_name
        runs[node.short_name] = (root, *install(spec, node, root, tmp))
    return spec, tmp, runs


def test_master_gets_etcd_and_the_control_plane_that_really_run(installed):
    _, _, runs = installed
    root, code, summary, err = runs["master-0"]
    assert code == 0, err
    assert summary["downloaded"] == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    bin_dir = root / "usr/local/bin"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["etcd", "etcdctl", "kube-apiserver",
                                                         "kube-controller-manager", "kube-scheduler"]
    assert all(mode(p) == 0o755 for p in bin_dir.iterdir())
    assert "etcd Version: 3.4.23" in run(bin_dir / "etcd", "--version")
    assert "3.4.23" in run(bin_dir / "etcdctl", "version")
    assert "Kubernetes v1.32.3" in run(bin_dir / "kube-apiserver", "--version")
    state = json.loads((root / "var/lib/groundup/releases.json").read_text())
    assert state["etcd"]["files"]["/usr/local/bin/etcd"]["sha256"] == \
        hashlib.sha256((bin_dir / "etcd").read_bytes()).hexdigest()


def test_worker_gets_containerd_runc_cni_kubelet_and_kube_proxy(installed):
    _, _, runs = installed
    root, code, summary, err = runs["worker-0"]
    assert code == 0, err
    assert summary["downloaded"] == ["containerd", "runc", "cni-plugins", "kubelet", "kube-proxy"]
    bin_dir = root / "usr/local/bin"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["containerd", "containerd-shim", "containerd-shim-runc-v1",
                                                         "containerd-shim-runc-v2", "ctr", "kube-proxy", "kubelet"]
    runc = root / "usr/local/sbin/runc"
    assert mode(runc) == 0o755 and "runc version 1.1.5" in run(runc, "--version")
    assert "1.6.20" in run(bin_dir / "containerd", "--version")
    cni = root / "opt/cni/bin"
    assert {"bridge", "loopback", "host-local"} <= {p.name for p in cni.iterdir()}
    assert not any(p.name.startswith("README") for p in cni.iterdir())
    assert all(mode(p) == 0o755 for p in [*bin_dir.iterdir(), *cni.iterdir()])
    assert sorted(summary["installed"]) == sorted(
        str(Path("/") / p.relative_to(root)) for p in [*bin_dir.iterdir(), *cni.iterdir(), runc])


def test_a_second_run_downloads_nothing(installed, mirror):
    spec, tmp, runs = installed
    _, served, _ = mirror
    for node in (spec.masters[0], spec.workers[0]):
        root = runs[node.short_name][0]
        before = len(served.requests)
        code, summary, err = install(spec, node, root, tmp)
        assert code == 0, err
        assert summary["downloaded"] == [] and summary["installed"] == []
        assert summary["unchanged"] == [a["artifact"] for a in node_release_manifest(spec, node)["artifacts"]]
        assert served.requests[before:] == []


def test_a_changed_installed_file_is_downloaded_again(installed):
    spec, tmp, runs = installed
    root = runs["worker-0"][0]
    kubelet = root / "usr/local/bin/kubelet"
    kubelet.write_bytes(b"#!/bin/sh\nexit 0\n")
    code, summary, err = install(spec, spec.workers[0], root, tmp)
    assert code == 0, err
    assert summary["downloaded"] == ["kubelet"] and summary["installed"] == ["/usr/local/bin/kubelet"]
    assert "Kubernetes v1.32.3" in run(kubelet, "--version")


def test_a_tampered_artifact_fails_its_checksum_and_installs_nothing_of_it(mirror, tmp_path):
    root, _, _ = mirror
    tampered = tmp_path / "tampered-mirror"
    shutil.copytree(root, tampered, copy_function=os.symlink)
    runc = tampered / "github.com/opencontainers/runc/releases/download/v1.1.5/runc.amd64"
    data = Path(os.readlink(runc)).read_bytes() + b"tampered"
    runc.unlink()
    runc.write_bytes(data)
    expected = (runc.parent / "runc.sha256sum").read_text().split()[0]
    served = Served(tampered)
    try:
        spec = sandbox_spec(served.url)
        node_root = tmp_path / "worker"
        code, summary, err = install(spec, spec.workers[0], node_root, tmp_path)
    finally:
        served.close()
    assert code == 1
    assert summary["failed"] == ["runc"]
    assert f"runc 1.1.5: checksum mismatch for {served.url}/github.com/opencontainers/runc" in err
    assert f"expected sha256 {expected}, got {hashlib.sha256(data).hexdigest()}" in err
    assert not (node_root / "usr/local/sbin").exists()
    assert "containerd" in summary["downloaded"]


def test_a_version_the_mirror_lacks_names_the_artifact_and_the_versions_it_has(mirror, tmp_path):
    _, served, _ = mirror
    spec = sandbox_spec(served.url, etcd_version="3.5.17")
    code, summary, err = install(spec, spec.masters[0], tmp_path / "master", tmp_path)
    assert code == 1 and summary["failed"] == ["etcd"]
    assert f"etcd 3.5.17: the release mirror {served.url} has no " in err
    assert "it has etcd 3.4.23" in err and "etcd_version" in err
    assert not (tmp_path / "master/usr/local/bin/etcd").exists()
