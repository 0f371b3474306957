"""The flag sets read from the real binaries' --help, kept as data, and their loader."""

from __future__ import annotations

import subprocess
import sys

import pytest

from groundup.kube_flags import (
    COMPONENTS,
    UnknownKubernetesVersion,
    available_minors,
    flags_in_help,
    known_flags,
    kubernetes_minor,
    source,
)
from groundup.versions import LINES

# What kubernetes-the-hard-way's units pass, per component: every one must be a real v1.37 flag.
GUIDE_FLAGS = {
    "kube-apiserver": ["advertise-address", "allow-privileged", "audit-log-path", "audit-policy-file",
                       "authorization-mode", "bind-address", "client-ca-file", "enable-admission-plugins",
                       "encryption-provider-config", "etcd-cafile", "etcd-certfile", "etcd-keyfile", "etcd-servers",
                       "event-ttl", "kubelet-certificate-authority", "kubelet-client-certificate", "kubelet-client-key",
                       "runtime-config", "secure-port", "service-account-issuer", "service-account-key-file",
                       "service-account-signing-key-file", "service-cluster-ip-range", "service-node-port-range",
                       "tls-cert-file", "tls-private-key-file", "v"],
    "kube-controller-manager": ["bind-address", "cluster-cidr", "cluster-name", "cluster-signing-cert-file",
                                "cluster-signing-key-file", "kubeconfig", "leader-elect", "root-ca-file",
                                "service-account-private-key-file", "service-cluster-ip-range",
                                "use-service-account-credentials", "allocate-node-cidrs", "v"],
    "kube-scheduler": ["config", "v", "leader-elect"],
    "kubelet": ["config", "kubeconfig", "register-node", "v", "container-runtime-endpoint", "hostname-override"],
    "kube-proxy": ["config", "v", "hostname-override"],
}
# Flags earlier releases had and v1.37 rejects.
REMOVED = {
    "kube-apiserver": ["insecure-port", "kubelet-https", "apiserver-count-legacy", "cloud-provider"],
    "kube-controller-manager": ["port", "address", "horizontal-pod-autoscaler-use-rest-clients"],
    "kube-scheduler": ["port", "address", "policy-config-file", "algorithm-provider"],
    "kubelet": ["network-plugin", "container-runtime", "cni-bin-dir", "dynamic-config-dir", "keep-terminated-pod-volumes"],
    "kube-proxy": ["resource-container", "proxy-port-range", "udp-timeout"],
}


@pytest.mark.parametrize("component", COMPONENTS)
def test_the_guides_flags_are_real_137_flags(component):
    missing = set(GUIDE_FLAGS[component]) - known_flags(component, "1.37.2")
    assert not missing


@pytest.mark.parametrize("component", COMPONENTS)
def test_flags_removed_before_137_are_unknown(component):
    assert not set(REMOVED[component]) & known_flags(component, "v1.37.0")


@pytest.mark.parametrize("component", COMPONENTS)
def test_each_set_says_it_came_from_the_real_binary(component):
    assert source(component, "1.37.2") == f"{component} v1.37.2 --help, built from k8s.io/kubernetes@v1.37.2"
    assert {"help", "version", "v"} <= known_flags(component, "1.37.2")


def test_flags_are_read_from_help_output_as_cobra_prints_it():
    text = ("Usage:\n  kubelet [flags]\n\nFlags:\n      --config string   The kubelet config\n"
            "  -v, --v Level   number for the log level\n      --log_dir string   dir\n  not a flag --x\n")
    assert flags_in_help(text) == ["config", "log-dir", "v"]


def test_data_is_there_for_the_newest_supported_minor():
    newest = max(LINES, key=lambda m: tuple(map(int, m.split("."))))
    assert newest in available_minors()


def test_underscored_klog_flags_are_normalised_to_dashes():
    proxy = known_flags("kube-proxy", "1.37.2")
    assert {"log-flush-frequency", "hostname-override"} <= proxy
    assert not any("_" in flag for component in COMPONENTS for flag in known_flags(component, "1.37.2"))


def test_component_config_flags_differ_between_components():
    assert "etcd-servers" in known_flags("kube-apiserver", "1.37.2")
    assert "etcd-servers" not in known_flags("kubelet", "1.37.2")
    assert "cluster-signing-cert-file" not in known_flags("kube-scheduler", "1.37.2")


@pytest.mark.parametrize("version,minor", [("1.37.2", "1.37"), ("v1.37.0", "1.37"), ("1.37", "1.37"),
                                           ("1.37.3-rc.1", "1.37")])
def test_versions_resolve_to_their_minor(version, minor):
    assert kubernetes_minor(version) == minor


def test_a_minor_without_data_names_the_ones_there_are():
    with pytest.raises(UnknownKubernetesVersion) as raised:
        known_flags("kubelet", "1.29.0")
    message = str(raised.value)
    assert "1.29" in message and all(m in message for m in available_minors())


@pytest.mark.parametrize("bad", ["", "latest", "1", "one.two.three"])
def test_a_malformed_version_is_refused(bad):
    with pytest.raises(UnknownKubernetesVersion):
        known_flags("kubelet", bad)


def test_an_unknown_component_is_refused():
    with pytest.raises(ValueError, match="kube-proxy"):
        known_flags("kube-dns", "1.37.2")


def test_loader_imports_without_prefect():
    code = ("import sys; sys.modules['prefect'] = None; import groundup.kube_flags as k; "
            "print(len(k.known_flags('kubelet', '1.37.2')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(known_flags("kubelet", "1.37.2"))
