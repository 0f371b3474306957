"""Which units a bootstrap run (re)starts: exactly those whose inputs changed or that are not active."""

from __future__ import annotations

from groundup.node_bootstrap import inputs_digest, units_to_start

UNITS = ["containerd", "kubelet", "kube-proxy"]
INPUTS = {
    "containerd": ["/etc/containerd/config.toml", "/usr/local/bin/containerd"],
    "kubelet": ["/var/lib/kubelet/kubelet-config.yaml", "/var/lib/kubelet/kubeconfig", "/var/lib/kubernetes/ca.pem"],
    "kube-proxy": ["/var/lib/kube-proxy/kubeconfig", "/var/lib/kubernetes/ca.pem"],
}
DIGESTS = {p: f"sha-{i}" for i, p in enumerate(sorted({p for ps in INPUTS.values() for p in ps}))}
RECORDED = {u: inputs_digest(INPUTS[u], DIGESTS) for u in UNITS}
ALL_ACTIVE = dict.fromkeys(UNITS, True)


def test_nothing_restarts_when_nothing_changed():
    assert units_to_start(UNITS, INPUTS, DIGESTS, RECORDED, ALL_ACTIVE) == []


def test_a_changed_file_restarts_exactly_its_readers_in_order():
    changed = {**DIGESTS, "/var/lib/kubernetes/ca.pem": "new"}
    assert units_to_start(UNITS, INPUTS, changed, RECORDED, ALL_ACTIVE) == ["kubelet", "kube-proxy"]
    changed = {**DIGESTS, "/etc/containerd/config.toml": "new"}
    assert units_to_start(UNITS, INPUTS, changed, RECORDED, ALL_ACTIVE) == ["containerd"]


def test_an_inactive_unit_or_a_first_run_starts():
    assert units_to_start(UNITS, INPUTS, DIGESTS, RECORDED, {**ALL_ACTIVE, "kube-proxy": False}) == ["kube-proxy"]
    assert units_to_start(UNITS, INPUTS, DIGESTS, {}, ALL_ACTIVE) == UNITS


def test_a_missing_input_is_a_change():
    gone = {k: v for k, v in DIGESTS.items() if k != "/usr/local/bin/containerd"}
    assert units_to_start(UNITS, INPUTS, gone, RECORDED, ALL_ACTIVE) == ["containerd"]
