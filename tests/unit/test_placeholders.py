"""The placeholder zipapps as files and as command lines, run with Debian's /usr/bin/python3 (as on the nodes)."""

from __future__ import annotations

import os
import stat
import subprocess
import zipfile
from pathlib import Path

import pytest

from groundup.kube_flags import COMPONENTS, UnknownKubernetesVersion, known_flags
from sandbox.placeholders import build_placeholder
from sandbox.placeholders.runtime import cli

NODE_PYTHON = "/usr/bin/python3"
VERSION = "1.32.3"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("placeholders")
    return {c: build_placeholder(c, VERSION, folder / c) for c in COMPONENTS}


def run(binary: Path, *args: str, timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
    """Run as systemd would: the file itself, so its shebang picks the node's python3."""
    env = {"PATH": "/usr/bin:/bin", "GROUNDUP_PLACEHOLDER_WAIT_S": "1"}
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


def test_placeholder_is_one_executable_zipapp_with_a_python3_shebang(built):
    binary = built["kubelet"]
    assert binary.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    assert zipfile.is_zipfile(binary)
    assert "__main__.py" in zipfile.ZipFile(binary).namelist()


def test_same_inputs_give_the_same_bytes_and_another_version_differs(built, tmp_path):
    again = build_placeholder("kubelet", VERSION, tmp_path / "kubelet")
    other = build_placeholder("kubelet", "1.32.4", tmp_path / "kubelet-1.32.4")
    assert again.read_bytes() == built["kubelet"].read_bytes()
    assert other.read_bytes() != again.read_bytes()


def test_unknown_component_or_minor_cannot_be_built(tmp_path):
    with pytest.raises(ValueError, match="kube-dns"):
        build_placeholder("kube-dns", VERSION, tmp_path / "x")
    with pytest.raises(UnknownKubernetesVersion):
        build_placeholder("kubelet", "1.20.0", tmp_path / "y")


def test_node_python_is_debians():
    assert os.path.exists(NODE_PYTHON)
    result = subprocess.run([NODE_PYTHON, "-c", "import cryptography, yaml; print(cryptography.__version__)"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("component", COMPONENTS)
def test_version_says_placeholder(built, component):
    result = run(built[component], "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Kubernetes v{VERSION} (placeholder)"


@pytest.mark.parametrize("component", COMPONENTS)
def test_an_unknown_flag_exits_1_as_cobra_does(built, component):
    result = run(built[component], "--version", "--no-such-flag=1")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: unknown flag: --no-such-flag\n")


@pytest.mark.parametrize("component,flag", [("kubelet", "--network-plugin=cni"), ("kube-apiserver", "--insecure-port=0"),
                                            ("kube-scheduler", "--policy-config-file=/x"), ("kubelet", "--container-runtime=remote")])
def test_a_removed_flag_is_unknown(built, component, flag):
    result = run(built[component], flag)
    assert result.returncode == 1 and f"unknown flag: {flag.split('=')[0]}" in result.stderr


def test_a_value_flag_without_its_value_is_an_error(built):
    result = run(built["kubelet"], "--kubeconfig")
    assert result.returncode == 1 and "Error: flag needs an argument: --kubeconfig" in result.stderr


def test_positional_arguments_are_refused(built):
    result = run(built["kube-proxy"], "extra")
    assert result.returncode == 1 and "does not take any arguments" in result.stderr


def test_a_missing_file_is_named_with_its_flag(built, tmp_path):
    missing = tmp_path / "nope.kubeconfig"
    result = run(built["kubelet"], f"--kubeconfig={missing}")
    assert result.returncode == 1
    assert f"--kubeconfig: {missing}: no such file" in result.stderr


@pytest.mark.parametrize("component,config,wanted", [
    ("kube-proxy", "apiVersion: kubeproxy.config.k8s.io/v1beta1\nkind: KubeProxyConfiguration\n",
     "want kubeproxy.config.k8s.io/v1alpha1/KubeProxyConfiguration"),
    ("kube-scheduler", "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfig\n",
     "want kubescheduler.config.k8s.io/v1/KubeSchedulerConfiguration"),
    ("kube-scheduler", "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n",
     "clientConnection.kubeconfig is required"),
    ("kube-proxy", "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: userspace\n",
     "mode 'userspace' is not one of"),
    ("kube-proxy", "apiVersion: [\n", "not valid YAML"),
])
def test_config_files_need_the_right_kind_and_fields(built, tmp_path, component, config, wanted):
    path = tmp_path / "config.yaml"
    path.write_text(config)
    result = run(built[component], "--config", str(path))
    assert result.returncode == 1
    assert f"--config {path}" in result.stderr and wanted in result.stderr


def test_kubelet_config_kind_is_checked(built, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    config = tmp_path / "kubelet-config.yaml"
    config.write_text("apiVersion: kubelet.config.k8s.io/v1\nkind: KubeletConfiguration\n")
    result = run(built["kubelet"], f"--kubeconfig={kubeconfig}", f"--config={config}")
    assert result.returncode == 1
    assert "current-context is not set" in result.stderr


SPEC = {"component": "kubelet", "flags": sorted(known_flags("kubelet", VERSION)),
        "bool_flags": ["fail-swap-on", "help", "register-node"], "shorthands": {"v": "v", "h": "help"},
        "optional_values": {"version": "true"}}


@pytest.mark.parametrize("argv,name,value", [
    (["--kubeconfig=/a"], "kubeconfig", "/a"),
    (["--kubeconfig", "/a"], "kubeconfig", "/a"),
    (["--register-node"], "register-node", "true"),
    (["--register-node=false"], "register-node", "false"),
    (["--v=2"], "v", "2"),
    (["-v", "2"], "v", "2"),
    (["-v=3"], "v", "3"),
    (["-v4"], "v", "4"),
    (["--version"], "version", "true"),
    (["--version=raw"], "version", "raw"),
    (["--cluster_domain=cluster.local"], "cluster-domain", "cluster.local"),
])
def test_flag_syntax_as_pflag_reads_it(argv, name, value):
    assert cli.parse(argv, SPEC).get(name) == value


def test_a_bool_flag_does_not_swallow_the_next_argument():
    with pytest.raises(cli.UsageError, match="does not take any arguments"):
        cli.parse(["--register-node", "false"], SPEC)


def test_comma_lists_and_repeated_flags_collect_every_value():
    args = cli.parse(["--cluster-dns=10.32.0.10,10.32.0.11", "--cluster-dns", "10.32.0.12"], SPEC)
    assert args.all("cluster-dns") == ["10.32.0.10", "10.32.0.11", "10.32.0.12"]
