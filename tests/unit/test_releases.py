"""Release URLs, checksum formats and install targets per role; the node script's checksum parsing and messages."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from groundup.node_scripts import script_bytes
from groundup.releases import node_release_manifest, release_url, role_releases
from groundup.spec import ClusterSpec, Role, load_spec

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "groundup" / "node_scripts" / "install_releases.py"
MIRROR = "http://10.240.0.1:8080"


@pytest.fixture(scope="module")
def node_script():
    spec = importlib.util.spec_from_file_location("install_releases", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def by_artifact(manifest: dict) -> dict[str, dict]:
    return {a["artifact"]: a for a in manifest["artifacts"]}


# Upstream's published addresses for the default spec's versions (the contract in docs/node-layout.md).
UPSTREAM_MASTER = {
    "etcd": ("https://github.com/etcd-io/etcd/releases/download/v3.7.4/etcd-v3.7.4-linux-amd64.tar.gz",
             "https://github.com/etcd-io/etcd/releases/download/v3.7.4/SHA256SUMS", "sha256sum"),
    "kube-apiserver": ("https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kube-apiserver",
                       "https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kube-apiserver.sha256", "hex"),
    "kube-controller-manager": ("https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kube-controller-manager",
                                "https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kube-controller-manager.sha256",
                                "hex"),
    "kube-scheduler": ("https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kube-scheduler",
                       "https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kube-scheduler.sha256", "hex"),
}
UPSTREAM_WORKER = {
    "containerd": ("https://github.com/containerd/containerd/releases/download/v2.4.2/containerd-2.4.2-linux-amd64.tar.gz",
                   "https://github.com/containerd/containerd/releases/download/v2.4.2/"
                   "containerd-2.4.2-linux-amd64.tar.gz.sha256sum", "sha256sum"),
    "runc": ("https://github.com/opencontainers/runc/releases/download/v1.5.2/runc.amd64",
             "https://github.com/opencontainers/runc/releases/download/v1.5.2/runc.sha256sum", "sha256sum"),
    "cni-plugins": ("https://github.com/containernetworking/plugins/releases/download/v1.9.1/"
                    "cni-plugins-linux-amd64-v1.9.1.tgz",
                    "https://github.com/containernetworking/plugins/releases/download/v1.9.1/"
                    "cni-plugins-linux-amd64-v1.9.1.tgz.sha256", "sha256sum"),
    "crictl": ("https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.37.0/crictl-v1.37.0-linux-amd64.tar.gz",
               "https://github.com/kubernetes-sigs/cri-tools/releases/download/v1.37.0/"
               "crictl-v1.37.0-linux-amd64.tar.gz.sha256", "hex"),
    "kubelet": ("https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubelet",
                "https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kubelet.sha256", "hex"),
    "kube-proxy": ("https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kube-proxy",
                   "https://dl.k8s.io/release/v1.37.2/bin/linux/amd64/kube-proxy.sha256", "hex"),
}


@pytest.mark.parametrize("role, expected", [(Role.master, UPSTREAM_MASTER), (Role.worker, UPSTREAM_WORKER)])
def test_default_spec_downloads_each_roles_releases_from_upstream(role, expected):
    spec = ClusterSpec()
    node = spec.masters[0] if role is Role.master else spec.workers[0]
    manifest = node_release_manifest(spec, node)
    got = {name: (a["url"], a["checksum_url"], a["checksum_format"]) for name, a in by_artifact(manifest).items()}
    assert got == expected
    assert manifest["mirror"] is None and manifest["mirror_index"] is None


def test_mirror_serves_every_file_under_upstream_host_and_path():
    upstream, mirrored = ClusterSpec(), ClusterSpec(release_mirror=MIRROR + "/")
    for node in upstream.nodes[:1] + upstream.workers[:1]:
        plain = by_artifact(node_release_manifest(upstream, node))
        via_mirror = node_release_manifest(mirrored, node)
        assert via_mirror["mirror"] == MIRROR
        assert via_mirror["mirror_index"] == f"{MIRROR}/index.json"
        for name, entry in by_artifact(via_mirror).items():
            for key in ("url", "checksum_url"):
                assert entry[key] == plain[name][key].replace("https://", f"{MIRROR}/", 1)


def test_release_url_keeps_a_mirror_base_path():
    assert release_url("dl.k8s.io", "release/v1/x", "http://m:81/base") == "http://m:81/base/dl.k8s.io/release/v1/x"
    assert release_url("dl.k8s.io", "release/v1/x", None) == "https://dl.k8s.io/release/v1/x"


def test_versions_follow_the_spec():
    spec = ClusterSpec(kubernetes_version="1.36.1", etcd_version="3.6.16", containerd_version="2.3.5",
                       runc_version="1.4.4", cni_plugins_version="1.8.0", crictl_version="1.36.0")
    versions = {r.artifact: r.version for role in Role for r in role_releases(spec, role)}
    assert versions == {"etcd": "3.6.16", "kube-apiserver": "1.36.1", "kube-controller-manager": "1.36.1",
                        "kube-scheduler": "1.36.1", "kubelet": "1.36.1", "kube-proxy": "1.36.1",
                        "containerd": "2.3.5", "runc": "1.4.4", "cni-plugins": "1.8.0", "crictl": "1.36.0"}
    for role in Role:
        for release in role_releases(spec, role):
            assert f"v{release.version}" in release.path


def test_installs_land_where_the_node_layout_says():
    spec = ClusterSpec()
    master = by_artifact(node_release_manifest(spec, spec.masters[0]))
    worker = by_artifact(node_release_manifest(spec, spec.workers[0]))
    assert master["etcd"]["install"] == [
        {"member": "etcd-v3.7.4-linux-amd64/etcd", "path": "/usr/local/bin/etcd", "mode": 0o755},
        {"member": "etcd-v3.7.4-linux-amd64/etcdctl", "path": "/usr/local/bin/etcdctl", "mode": 0o755}]
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert master[component]["install"] == [{"member": "", "path": f"/usr/local/bin/{component}", "mode": 0o755}]
        assert master[component]["packing"] == "file"
    assert worker["containerd"]["install"] == [{"member": "bin/", "path": "/usr/local/bin", "mode": 0o755}]
    assert worker["runc"]["install"] == [{"member": "", "path": "/usr/local/sbin/runc", "mode": 0o755}]
    assert worker["cni-plugins"]["install"] == [{"member": "./", "path": "/opt/cni/bin", "mode": 0o755}]
    assert set(master).isdisjoint(worker)


def test_manifest_is_plain_json_naming_the_spec_field_of_each_version():
    spec = load_spec(ROOT / "clusters" / "sandbox.yaml")
    for node in spec.nodes:
        manifest = node_release_manifest(spec, node)
        assert json.loads(json.dumps(manifest)) == manifest
        for entry in manifest["artifacts"]:
            assert getattr(spec, entry["spec_field"]) == entry["version"]


def test_node_script_is_shipped_and_parses_as_python_3_8():
    data = script_bytes("install_releases.py")
    assert data == SCRIPT.read_bytes()
    assert data.startswith(b"#!/usr/bin/env python3\n")
    tree = ast.parse(data, feature_version=(3, 8))
    imported = {n.names[0].name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "argparse", "hashlib", "json", "os", "re", "socket", "sys", "tarfile",
                        "tempfile", "time", "urllib"}


def test_unknown_node_script_is_reported():
    with pytest.raises(FileNotFoundError, match="no node script"):
        script_bytes("nope.py")


def _entry(release_manifest: dict, artifact: str) -> dict:
    return by_artifact(release_manifest)[artifact]


def test_checksum_files_are_read_in_each_upstream_format(node_script):
    spec = ClusterSpec()
    master = node_release_manifest(spec, spec.masters[0])
    worker = node_release_manifest(spec, spec.workers[0])
    digest = hashlib.sha256(b"artifact").hexdigest()
    other = hashlib.sha256(b"other").hexdigest()
    entries = {**by_artifact(master), **by_artifact(worker)}
    cases = {
        "kube-apiserver": digest + "\n",
        "etcd": f"{other}  etcd-v3.7.4-darwin-amd64.zip\n{digest}  etcd-v3.7.4-linux-amd64.tar.gz\n",
        "runc": f"{other}  runc.arm64\n{digest} *runc.amd64\n{other}  runc.tar.xz\n",
        "containerd": f"{digest}  containerd-2.4.2-linux-amd64.tar.gz\n",
        "cni-plugins": f"{digest.upper()}  ./cni-plugins-linux-amd64-v1.9.1.tgz\n",
    }
    for artifact, text in cases.items():
        assert node_script.expected_digest(text, entries[artifact]) == digest, artifact


def test_a_checksum_file_without_the_artifact_names_both(node_script):
    spec = ClusterSpec()
    entry = _entry(node_release_manifest(spec, spec.workers[0]), "runc")
    text = f"{hashlib.sha256(b'x').hexdigest()}  runc.arm64\n"
    with pytest.raises(node_script.Failure, match=r"runc 1\.5\.2: .*runc\.sha256sum lists no checksum for runc\.amd64"):
        node_script.expected_digest(text, entry)
    with pytest.raises(node_script.Failure, match="holds no sha256 digest"):
        node_script.expected_digest("<html>not found</html>", _entry(node_release_manifest(spec, spec.masters[0]),
                                                                      "kube-apiserver"))


def test_a_missing_upstream_release_names_its_url_and_spec_field(node_script):
    spec = ClusterSpec(etcd_version="3.6.99")
    manifest = node_release_manifest(spec, spec.masters[0])
    entry = _entry(manifest, "etcd")
    message = str(node_script.not_found(manifest, entry, entry["url"]))
    assert entry["url"] in message and "etcd 3.6.99" in message and "etcd_version" in message
