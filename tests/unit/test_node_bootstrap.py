"""Which units a bootstrap run (re)starts: exactly those whose inputs changed or that are not active."""

from __future__ import annotations

import json

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


def _fake_systemctl(tmp_path, states: str):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(f"#!/bin/sh\nprintf '{states}'\n")
    fake.chmod(0o755)
    return bin_dir


def test_the_probe_reads_digests_record_and_unit_states_in_one_shell_command(tmp_path, monkeypatch):
    import hashlib
    import os
    import subprocess

    import groundup.node_bootstrap as node_bootstrap
    from groundup.bootstrap import NodeDir
    from groundup.node_bootstrap import parse_probe, probe_command

    record_file = tmp_path / "units.json"
    record_file.write_text(json.dumps(RECORDED))  # as save_record writes it: no newline at the end
    monkeypatch.setattr(node_bootstrap, "UNIT_RECORD", str(record_file))
    present = tmp_path / "ca.pem"
    present.write_bytes(b"ca")
    made = tmp_path / "data"
    command = probe_command([NodeDir(str(made), 0o700)], UNITS, [str(present), str(tmp_path / "missing.pem")])
    fake = _fake_systemctl(tmp_path, "active\\ninactive\\n")
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env, check=True).stdout
    digests, record, active = parse_probe(out, UNITS)
    assert digests == {str(present): hashlib.sha256(b"ca").hexdigest()}
    assert record == RECORDED
    assert active == {"containerd": True, "kubelet": False, "kube-proxy": False}
    assert made.is_dir() and made.stat().st_mode & 0o777 == 0o700


class _NoChangeSession:
    """Stands in for an SSH session to a node where everything is in place (no SSH here)."""

    sudo = ""

    def __init__(self, probe_output: str) -> None:
        self.probe_output = probe_output
        self.commands: list[str] = []
        self.syncs = 0

    def sync(self, files):
        from groundup.ssh import SyncReport

        self.syncs += 1
        return SyncReport(skipped=[f.path for f in files])

    def run(self, command: str, timeout: float = 60.0, check: bool = True):
        self.commands.append(command)
        if "install_releases.py" in command:
            return 0, '{"downloaded": [], "unchanged": ["containerd"]}\n', ""
        return 0, self.probe_output, ""


def test_a_bootstrap_with_nothing_to_change_takes_one_sync_and_two_commands():
    from types import SimpleNamespace

    from groundup.node_bootstrap import PROBE_MARK, NodeBootstrapper

    plan = SimpleNamespace(files=[], dirs=(), units=tuple(UNITS), unit_inputs=INPUTS)
    shas = "".join(f"{DIGESTS[p]}  {p}\n" for p in sorted(DIGESTS))
    probe = f"{shas}{PROBE_MARK}record\n{json.dumps(RECORDED)}\n{PROBE_MARK}active\nactive\nactive\nactive\n"
    session = _NoChangeSession(probe)
    worker = NodeBootstrapper(None, SimpleNamespace(short_name="worker-0"), session, plan, {"artifacts": []}, b"#")
    changed = worker.place_files()
    assert worker.install_binaries() == []
    assert worker.apply_units(changed) == ([], UNITS)
    assert session.syncs == 1 and len(session.commands) == 2, session.commands
