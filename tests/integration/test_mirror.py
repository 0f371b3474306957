"""The sandbox's release mirror: upstream's layout and checksum files for what the release builder made,
served on loopback; the fetch path against a local server standing in for upstream; the node script
(run by the nodes' /usr/bin/python3) downloads, verifies and installs from it.

The Go builds are stood in for by `FakeBuilder` (scripts that print each binary's upstream version), so
these tests judge the mirror's own work; `test_release_builder.py` builds a real component.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from groundup.releases import node_release_manifest
from groundup.spec import load_spec, parse_spec
from sandbox import recipes
from sandbox.mirror import build_mirror, contents, line_components, make_server

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "groundup" / "node_scripts" / "install_releases.py"
NODE_PYTHON = "/usr/bin/python3"
CNI = ("bridge", "host-local", "loopback", "portmap")

pytestmark = pytest.mark.skipif(not Path(NODE_PYTHON).exists(), reason="needs the nodes' /usr/bin/python3")


class FakeBuilder:
    """Stands in for the Go builds: each binary a script printing the version check its recipe expects."""

    def __init__(self, root: Path, fail: str | None = None) -> None:
        self.root, self.fail, self.calls = root, fail, []

    def build(self, component: str, version: str) -> Path:
        self.calls.append(f"{component} {version}")
        if component == self.fail:
            raise RuntimeError(f"{component} {version}: go build failed (exit 1); last lines: ...")
        recipe = recipes.recipe(component, version)
        out = self.root / component / version
        out.mkdir(parents=True, exist_ok=True)
        names = [t.output for b in recipe.builds for t in b.targets] or list(CNI)
        expect = {c.binary: c.expect for c in recipe.checks}
        for name in names:
            script = out / name
            script.write_text(f"#!/bin/sh\necho '{expect.get(name, version)} ({name}, a stand-in for the Go build)'\n")
            script.chmod(0o755)
        (out / "build.json").write_text(json.dumps({"modules": [f"{b.module}@{b.version}" for b in recipe.builds],
                                                    "go": "1.26.8"}))
        return out


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
    builder = FakeBuilder(tmp_path_factory.mktemp("builds"))
    built = build_mirror(root, log=lambda _: None, builder=builder, source="build")
    served = Served(root)
    yield root, served, built, builder
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


def test_mirror_holds_every_release_the_default_kubernetes_line_downloads(mirror):
    root, _, built, _ = mirror
    index = json.loads((root / "index.json").read_text())["artifacts"]
    spec = load_spec(ROOT / "clusters" / "sandbox.yaml")
    assert index["etcd"] == [spec.etcd_version] and index["containerd"] == [spec.containerd_version]
    assert index["runc"] == [spec.runc_version] and index["cni-plugins"] == [spec.cni_plugins_version]
    assert index["crictl"] == [spec.crictl_version] and index["coredns"] == [spec.coredns_version]
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"):
        assert index[component] == [spec.kubernetes_version]
    assert built["missing"] == [] and contents(root)["artifacts"] == index
    sources = contents(root)["sources"]
    assert sources["etcd 3.7.4"] == ("built from go.etcd.io/etcd/server/v3@v3.7.4, go.etcd.io/etcd/etcdctl/v3@v3.7.4, "
                                     "go.etcd.io/etcd/etcdutl/v3@v3.7.4 with go1.26.8 by groundup's release builder")


def test_refilling_the_mirror_builds_and_changes_nothing(mirror):
    root, _, _, builder = mirror
    calls = len(builder.calls)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}
    again = build_mirror(root, log=lambda _: None, builder=builder, source="build")
    assert again["built"] == [] and len(builder.calls) == calls
    after = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert set(after) == set(before)
    assert all(after[p] == before[p] for p in before if p.name != "index.json")


def test_mirror_files_sit_at_upstreams_paths_with_checksum_files_in_upstreams_format(mirror):
    root, _, _, _ = mirror
    etcd_dir = root / "github.com/etcd-io/etcd/releases/download/v3.7.4"
    digest, name = (etcd_dir / "SHA256SUMS").read_text().split()
    assert name == "etcd-v3.7.4-linux-amd64.tar.gz"
    assert digest == hashlib.sha256((etcd_dir / name).read_bytes()).hexdigest()
    with tarfile.open(etcd_dir / name) as archive:
        assert {"etcd-v3.7.4-linux-amd64/etcd", "etcd-v3.7.4-linux-amd64/etcdctl",
                "etcd-v3.7.4-linux-amd64/etcdutl"} <= set(archive.getnames())
    runc_dir = root / "github.com/opencontainers/runc/releases/download/v1.5.2"
    check = subprocess.run(["sha256sum", "-c", "runc.sha256sum"], cwd=runc_dir, capture_output=True, text=True)
    assert check.returncode == 0 and "runc.amd64: OK" in check.stdout
    apiserver = root / "dl.k8s.io/release/v1.37.2/bin/linux/amd64/kube-apiserver"
    assert (apiserver.parent / "kube-apiserver.sha256").read_text() == hashlib.sha256(apiserver.read_bytes()).hexdigest() + "\n"
    crictl = root / "github.com/kubernetes-sigs/cri-tools/releases/download/v1.37.0/crictl-v1.37.0-linux-amd64.tar.gz"
    with tarfile.open(crictl) as archive:
        assert archive.getnames() == ["crictl"]
    containerd = root / ("github.com/containerd/containerd/releases/download/v2.4.2/containerd-2.4.2-linux-amd64.tar.gz")
    with tarfile.open(containerd) as archive:
        assert sorted(archive.getnames()) == ["bin", "bin/containerd", "bin/containerd-shim-runc-v2",
                                              "bin/containerd-stress", "bin/ctr"]


def test_a_failed_build_names_the_component_and_leaves_nothing_of_it_in_the_mirror(tmp_path):
    builder = FakeBuilder(tmp_path / "builds", fail="containerd")
    with pytest.raises(RuntimeError, match="containerd 2.4.2: go build failed"):
        build_mirror(tmp_path / "mirror", log=lambda _: None, builder=builder, source="build")
    assert not list((tmp_path / "mirror").rglob("containerd-2.4.2*"))
    assert (tmp_path / "mirror/github.com/etcd-io/etcd/releases/download/v3.7.4/SHA256SUMS").is_file()


def test_fetch_takes_upstreams_files_verified_by_the_nodes_code_and_builds_what_fails_its_checksum(mirror, tmp_path):
    """A local server stands in for upstream's hosts: the mirror fetches from it instead of compiling."""
    root, served, _, _ = mirror
    upstream = tmp_path / "upstream"
    shutil.copytree(root, upstream)
    runc = upstream / "github.com/opencontainers/runc/releases/download/v1.5.2/runc.amd64"
    runc.write_bytes(runc.read_bytes() + b"tampered")
    stand_in = Served(upstream)
    logged: list[str] = []
    builder = FakeBuilder(tmp_path / "builds")
    try:
        fetched = build_mirror(tmp_path / "mirror", log=logged.append, builder=builder, source="fetch",
                               upstream=stand_in.url)
    finally:
        stand_in.close()
    assert builder.calls == ["runc 1.5.2"], "only the release whose checksum failed is built"
    assert any("runc 1.5.2" in line and "checksum file says" in line and "building it instead" in line for line in logged)
    assert fetched["sources"]["etcd 3.7.4"].startswith("upstream's release, sha256 verified")
    same = root / "dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubelet"
    assert (tmp_path / "mirror/dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubelet").read_bytes() == same.read_bytes()


def test_an_unsupported_kubernetes_release_is_refused_naming_the_window(tmp_path):
    with pytest.raises(ValueError, match="1.35, 1.36 and 1.37"):
        build_mirror(tmp_path, kubernetes_versions=("1.30.1",), builder=FakeBuilder(tmp_path / "b"))
    assert ("coredns", "1.14.6") in line_components("1.37.2")


def test_mirror_is_read_only_and_serves_only_files(mirror):
    _, served, _, _ = mirror

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
    _, served, _, _ = mirror
    spec = sandbox_spec(served.url)
    tmp = tmp_path_factory.mktemp("nodes")
    runs = {}
    for node in (spec.masters[0], spec.workers[0]):
        root = tmp / node.short_name
        runs[node.short_name] = (root, *install(spec, node, root, tmp))
    return spec, tmp, runs


def test_master_gets_etcd_and_the_control_plane(installed):
    _, _, runs = installed
    root, code, summary, err = runs["master-0"]
    assert code == 0, err
    assert summary["downloaded"] == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    bin_dir = root / "usr/local/bin"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["etcd", "etcdctl", "kube-apiserver",
                                                         "kube-controller-manager", "kube-scheduler"]
    assert all(mode(p) == 0o755 for p in bin_dir.iterdir())
    assert "etcd Version: 3.7.4" in run(bin_dir / "etcd", "--version")
    assert "Kubernetes v1.37.2" in run(bin_dir / "kube-apiserver", "--version")
    state = json.loads((root / "var/lib/groundup/releases.json").read_text())
    assert state["etcd"]["files"]["/usr/local/bin/etcd"]["sha256"] == \
        hashlib.sha256((bin_dir / "etcd").read_bytes()).hexdigest()


def test_worker_gets_containerd_runc_cni_crictl_kubelet_and_kube_proxy(installed):
    _, _, runs = installed
    root, code, summary, err = runs["worker-0"]
    assert code == 0, err
    assert summary["downloaded"] == ["containerd", "runc", "cni-plugins", "crictl", "kubelet", "kube-proxy"]
    bin_dir = root / "usr/local/bin"
    assert sorted(p.name for p in bin_dir.iterdir()) == ["containerd", "containerd-shim-runc-v2", "containerd-stress",
                                                         "crictl", "ctr", "kube-proxy", "kubelet"]
    runc = root / "usr/local/sbin/runc"
    assert mode(runc) == 0o755 and "runc version 1.5.2" in run(runc, "--version")
    assert "v2.4.2" in run(bin_dir / "containerd", "--version")
    cni = root / "opt/cni/bin"
    assert {"bridge", "loopback", "host-local"} <= {p.name for p in cni.iterdir()}
    assert not any(p.name.startswith("README") for p in cni.iterdir())
    assert all(mode(p) == 0o755 for p in [*bin_dir.iterdir(), *cni.iterdir()])
    assert sorted(summary["installed"]) == sorted(
        str(Path("/") / p.relative_to(root)) for p in [*bin_dir.iterdir(), *cni.iterdir(), runc])


def test_a_second_run_downloads_nothing(installed, mirror):
    spec, tmp, runs = installed
    _, served, _, _ = mirror
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
    assert "Kubernetes v1.37.2" in run(kubelet, "--version")


def test_a_tampered_artifact_fails_its_checksum_and_installs_nothing_of_it(mirror, tmp_path):
    root, _, _, _ = mirror
    tampered = tmp_path / "tampered-mirror"
    shutil.copytree(root, tampered, copy_function=os.symlink)
    runc = tampered / "github.com/opencontainers/runc/releases/download/v1.5.2/runc.amd64"
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
    assert f"runc 1.5.2: checksum mismatch for {served.url}/github.com/opencontainers/runc" in err
    assert f"expected sha256 {expected}, got {hashlib.sha256(data).hexdigest()}" in err
    assert not (node_root / "usr/local/sbin").exists()
    assert "containerd" in summary["downloaded"]


def test_a_version_the_mirror_lacks_names_the_artifact_and_the_versions_it_has(mirror, tmp_path):
    _, served, _, _ = mirror
    spec = sandbox_spec(served.url, etcd_version="3.6.17")
    code, summary, err = install(spec, spec.masters[0], tmp_path / "master", tmp_path)
    assert code == 1 and summary["failed"] == ["etcd"]
    assert f"etcd 3.6.17: the release mirror {served.url} has no " in err
    assert "it has etcd 3.7.4" in err and "etcd_version" in err
    assert not (tmp_path / "master/usr/local/bin/etcd").exists()
