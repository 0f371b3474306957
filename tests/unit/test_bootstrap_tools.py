"""What the bootstrap renders, checked by the real tools that read it: systemd-analyze, and the spec's
own releases of containerd, etcd and the CNI plugins (from the release builder's cache) and kubectl
(offline)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from groundup.bootstrap import node_plan
from groundup.bootstrap.addons import cluster_manifests
from groundup.cluster_api import kubectl_path
from groundup.spec import ClusterSpec

API = "k8s-tools-0123456789.elb.us-east-2.amazonaws.com"
SPEC = ClusterSpec(name="tools-test", master_count=3, worker_count=2)
NODES = [SPEC.masters[0], SPEC.workers[1]]
SYSTEM_UNITS = Path("/usr/lib/systemd/system")


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not path:
        pytest.skip(f"{name} is not installed (Debian 12 package: see `make deps`)")
    return path


def release(component: str, version: str, binary: str) -> str:
    """A binary of the spec's own upstream release, as the release builder made it (`sandbox up` builds it)."""
    from sandbox.release_builder import cached_build

    built = cached_build(component, version)
    if built is None:
        pytest.skip(f"{component} {version} is not built yet: python -m sandbox.release_builder build "
                    f"{component} {version}")
    return str(built / binary)


def unit_files(node) -> dict[str, bytes]:
    return {f.path: f.data for f in node_plan(SPEC, node, API).files if f.path.endswith(".service")}


def executables(unit_text: str) -> set[str]:
    """The program of every Exec* line (without systemd's `-`/`@`/`+`/`!` prefixes)."""
    found = set()
    for line in unit_text.replace("\\\n", " ").splitlines():
        key, _, value = line.partition("=")
        if key.startswith("Exec"):
            found.add(shlex.split(value)[0].lstrip("-@+!:"))
    return found


@pytest.fixture(scope="module")
def fakeroot(tmp_path_factory) -> Path:
    """A root with the host's system units, every rendered unit, and an executable at each Exec path."""
    tool("systemd-analyze")
    root = tmp_path_factory.mktemp("fakeroot")
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    for node in NODES:
        for path, data in unit_files(node).items():
            (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / path.lstrip("/")).write_bytes(data)
            for exe in executables(data.decode()):
                target = root / exe.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("#!/bin/sh\n")
                target.chmod(0o755)
    return root


@pytest.mark.parametrize("node", NODES, ids=lambda n: n.role.value)
def test_every_unit_passes_systemd_analyze_verify(fakeroot, node):
    for path in unit_files(node):
        run = subprocess.run(["systemd-analyze", "verify", f"--root={fakeroot}", path],
                             capture_output=True, text=True, timeout=60)
        assert (run.returncode, run.stderr) == (0, ""), f"{path}:\n{run.stderr}"


def test_systemd_analyze_reports_a_unit_whose_binary_is_missing(fakeroot):
    path = "/etc/systemd/system/etcd.service"
    binary = fakeroot / "usr/local/bin/etcd"
    binary.rename(binary.with_suffix(".away"))
    try:
        run = subprocess.run(["systemd-analyze", "verify", f"--root={fakeroot}", path],
                             capture_output=True, text=True, timeout=60)
    finally:
        binary.with_suffix(".away").rename(binary)
    assert "etcd" in run.stderr


def test_containerd_reads_the_config_with_systemd_cgroups_and_the_cni_dirs(tmp_path):
    containerd = release("containerd", SPEC.containerd_version, "containerd")
    config = tmp_path / "config.toml"
    config.write_bytes(node_plan(SPEC, SPEC.workers[0], API).file("/etc/containerd/config.toml").data)
    run = subprocess.run([containerd, "--config", str(config), "config", "dump"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    merged = tomllib.loads(run.stdout)
    runtime = merged["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["BinaryName"] == "/usr/local/sbin/runc"
    assert (runtime["cni"]["bin_dirs"], runtime["cni"]["conf_dir"]) == (["/opt/cni/bin"], "/etc/cni/net.d")
    images = merged["plugins"]["io.containerd.cri.v1.images"]
    assert images["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10.2"
    assert merged["version"] == 4 and "level=warning" not in run.stderr, run.stderr


def test_every_etcd_flag_is_one_real_etcd_accepts():
    etcd = release("etcd", SPEC.etcd_version, "etcd")
    shown = subprocess.run([etcd, "--help"], capture_output=True, text=True, timeout=30)
    accepted = set(re.findall(r"^\s+--([a-z0-9-]+)", shown.stdout + shown.stderr, re.MULTILINE))
    text = node_plan(SPEC, SPEC.masters[0], API).unit_file("etcd").data.decode().replace("\\\n", " ")
    used = {a[2:].split("=", 1)[0] for a in shlex.split(text.split("ExecStart=", 1)[1].splitlines()[0])[1:]}
    assert accepted and used <= accepted, f"etcd does not know {sorted(used - accepted)}"


@pytest.mark.parametrize("plugin", ["bridge", "loopback"])
def test_cni_version_is_one_the_spec_plugins_support(plugin):
    binary = release("cni-plugins", SPEC.cni_plugins_version, plugin)
    run = subprocess.run([binary], env={"CNI_COMMAND": "VERSION"}, input="{}", capture_output=True, text=True,
                         timeout=30)
    supported = json.loads(run.stdout)["supportedVersions"]
    conf = "10-bridge.conf" if plugin == "bridge" else "99-loopback.conf"
    rendered = json.loads(node_plan(SPEC, SPEC.workers[0], API).file(f"/etc/cni/net.d/{conf}").data)
    assert rendered["cniVersion"] in supported


def kubectl_local(*args: str, stdin: bytes) -> subprocess.CompletedProcess:
    """kubectl without any server: `--local` decodes every object into its Go type, offline."""
    env = {**os.environ, "KUBECONFIG": os.devnull}
    return subprocess.run([kubectl_path(), *args, "--local", "-f", "-", "-o", "json"], input=stdin, env=env,
                          capture_output=True, timeout=60)


def leaves(value, prefix=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, (*prefix, i))
    else:
        yield prefix, value


def typed_round_trip_keeps(original: dict, typed: dict) -> list[tuple]:
    """Fields of `original` that kubectl's typed decoding dropped (unknown fields) or changed."""
    kept = dict(leaves(typed))
    return [(path, value) for path, value in leaves(original) if kept.get(path, object()) != value]


@pytest.mark.parametrize(("name", "stream"), cluster_manifests(SPEC), ids=[n for n, _ in cluster_manifests(SPEC)])
def test_kubectl_decodes_every_manifest_object_into_its_type(name, stream):
    run = kubectl_local("set", "env", "GROUNDUP_CHECK=1", stdin=stream)
    errors = run.stderr.decode()
    assert "unable to decode" not in errors and "no kind" not in errors, errors
    assert "no objects passed" not in errors, errors


def typed(kind: str, args: list[str], obj: dict) -> dict:
    run = kubectl_local(*args, stdin=json.dumps(obj).encode())
    assert run.returncode == 0, run.stderr.decode()
    return json.loads(run.stdout)


def test_kubectl_keeps_every_field_of_the_typed_objects_it_can_round_trip():
    import yaml

    objects = [o for _, stream in cluster_manifests(SPEC) for o in yaml.safe_load_all(stream)]
    checked = 0
    for obj in objects:
        kind = obj["kind"]
        if kind == "Deployment":
            out = typed(kind, ["set", "env", "GROUNDUP_CHECK=1"], obj)
        elif kind == "Service":
            selector = ",".join(f"{k}={v}" for k, v in obj["spec"]["selector"].items())
            out = typed(kind, ["set", "selector", selector], obj)
        elif kind == "ClusterRoleBinding":
            out = typed(kind, ["set", "subject", "--user=groundup-check"], obj)
        else:
            continue
        assert not typed_round_trip_keeps(obj, out), f"{kind} {obj['metadata']['name']}: kubectl dropped or changed " \
                                                      f"{typed_round_trip_keeps(obj, out)}"
        checked += 1
    assert checked == 4


def test_kubectl_typed_decoding_rejects_a_wrong_field_type():
    import yaml

    broken = yaml.safe_dump({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns"},
                             "spec": {"ports": [{"port": "fifty-three"}]}}).encode()
    assert "unable to decode" in kubectl_local("set", "env", "A=1", stdin=broken).stderr.decode()


def test_kubectl_round_trip_shows_an_unknown_field():
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns"},
           "spec": {"selector": {"k8s-app": "kube-dns"}, "clusterIp": "10.32.0.10", "ports": [{"port": 53}]}}
    out = typed("Service", ["set", "selector", "k8s-app=kube-dns"], obj)
    assert typed_round_trip_keeps(obj, out) == [(("spec", "clusterIp"), "10.32.0.10")]
