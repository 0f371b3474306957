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


def _counting_tools(tmp_path, states: str):
    """A PATH with a fake `systemctl` and a `sha256sum` that logs each invocation's arguments (one line per
    invocation) before running the real one."""
    import shutil

    real = shutil.which("sha256sum")
    bin_dir = tmp_path / "bin" if (tmp_path / "bin").is_dir() else _fake_systemctl(tmp_path, states)
    log = tmp_path / "sha256sum.log"
    wrapper = bin_dir / "sha256sum"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    return bin_dir, log


class _LocalSession:
    """Runs a node's commands in a local shell (no SSH and no node here); the installer's run answers with
    the summary given."""

    sudo = ""

    def __init__(self, installer_summary: dict, env: dict) -> None:
        self.installer_summary = installer_summary
        self.env = env
        self.commands: list[str] = []

    def run(self, command: str, timeout: float = 60.0, check: bool = True):
        import subprocess

        self.commands.append(command)
        if "install_releases.py" in command:
            return 0, "install_releases: downloading ...\n" + json.dumps(self.installer_summary) + "\n", ""
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=self.env, timeout=timeout)
        return done.returncode, done.stdout, done.stderr


def _probe_on(tmp_path, monkeypatch, installer_digests: dict, inputs: dict):
    """(digests, record, active, sha256sum invocations) of a bootstrapper's probe after an install run
    whose summary vouched for `installer_digests`."""
    import os
    from types import SimpleNamespace

    import groundup.node_bootstrap as node_bootstrap
    from groundup.node_bootstrap import NodeBootstrapper

    monkeypatch.setattr(node_bootstrap, "UNIT_RECORD", str(tmp_path / "units.json"))
    bin_dir, log = _counting_tools(tmp_path, "active\\nactive\\n")
    if log.exists():
        log.unlink()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    session = _LocalSession({"downloaded": [], "digests": installer_digests}, env)
    plan = SimpleNamespace(files=[], dirs=(), units=tuple(inputs), unit_inputs=inputs)
    worker = NodeBootstrapper(None, SimpleNamespace(short_name="worker-0"), session, plan, {"artifacts": []}, b"#")
    assert worker.install_binaries() == []
    digests, record, active = worker.probe(list(inputs), {p for ps in inputs.values() for p in ps})
    calls = log.read_text().splitlines() if log.exists() else []
    return digests, record, active, calls


def _node_files(tmp_path):
    """Two installed binaries, two other inputs (one named with a space) and one missing input."""
    import hashlib

    files = {}
    for name, data in [("usr/local/bin/kubelet", b"kubelet"), ("usr/local/bin/kube-proxy", b"kube-proxy"),
                       ("var/lib/kubelet/kubelet config.yaml", b"config"), ("var/lib/kubernetes/ca.pem", b"ca")]:
        path = tmp_path / "node" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[str(path)] = hashlib.sha256(data).hexdigest()
    kubelet, proxy, config, ca = files
    missing = str(tmp_path / "node/var/lib/kube-proxy/kubeconfig")
    inputs = {"kubelet": [kubelet, config, ca], "kube-proxy": [proxy, ca, missing]}
    return files, inputs, (kubelet, proxy, config, ca, missing)


def test_the_probe_hashes_only_inputs_the_installer_did_not_vouch_for_with_one_sha256sum(tmp_path, monkeypatch):
    files, inputs, (kubelet, proxy, config, ca, missing) = _node_files(tmp_path)
    vouched = {kubelet: files[kubelet], proxy: files[proxy], "/usr/local/bin/ctr": "0" * 64}
    digests, record, active, calls = _probe_on(tmp_path, monkeypatch, vouched, inputs)
    assert calls == [f"{config} {ca}"]
    assert digests == files
    assert record == {} and active == {"kubelet": True, "kube-proxy": True}


def test_installer_digests_leave_every_units_input_digest_as_hashing_all_inputs_gives(tmp_path, monkeypatch):
    files, inputs, (kubelet, proxy, config, ca, missing) = _node_files(tmp_path)
    hashed_all, _, _, calls_all = _probe_on(tmp_path, monkeypatch, {}, inputs)
    assert calls_all == [" ".join(sorted(files))]
    vouched, _, _, calls = _probe_on(tmp_path, monkeypatch, {kubelet: files[kubelet], proxy: files[proxy]}, inputs)
    assert len(calls) == 1 and kubelet not in calls[0] and proxy not in calls[0]
    recorded = {u: inputs_digest(inputs[u], hashed_all) for u in inputs}
    assert {u: inputs_digest(inputs[u], vouched) for u in inputs} == recorded
    assert units_to_start(list(inputs), inputs, vouched, recorded, {"kubelet": True, "kube-proxy": True}) == []


def test_a_probe_with_every_input_vouched_for_or_missing_runs_no_sha256sum(tmp_path, monkeypatch):
    files, inputs, (kubelet, proxy, config, ca, missing) = _node_files(tmp_path)
    inputs = {"kubelet": [kubelet], "kube-proxy": [proxy, missing]}
    digests, _, _, calls = _probe_on(tmp_path, monkeypatch, {kubelet: files[kubelet]}, inputs)
    assert calls == [f"{proxy}"]
    digests, _, _, calls = _probe_on(tmp_path, monkeypatch, {kubelet: files[kubelet], proxy: files[proxy]}, inputs)
    assert calls == [] and digests == {kubelet: files[kubelet], proxy: files[proxy]}
    inputs = {"kubelet": [missing], "kube-proxy": [missing]}
    digests, _, _, calls = _probe_on(tmp_path, monkeypatch, {}, inputs)
    assert calls == [] and digests == {}


def test_a_malformed_installer_digest_is_not_trusted(tmp_path, monkeypatch):
    files, inputs, (kubelet, proxy, config, ca, missing) = _node_files(tmp_path)
    digests, _, _, calls = _probe_on(tmp_path, monkeypatch, {kubelet: "not-a-digest", proxy: files[proxy]}, inputs)
    assert len(calls) == 1 and kubelet in calls[0] and proxy not in calls[0]
    assert digests == files


class _UnitSession:
    """Answers `systemctl show` of one unit from a list of ActiveState values (the last one repeats) and
    records every command; the journal answers with one line."""

    sudo = ""

    def __init__(self, states: list[str]) -> None:
        self.states = states
        self.commands: list[str] = []

    def run(self, command: str, timeout: float = 60.0, check: bool = True):
        self.commands.append(command)
        if "systemctl show" in command:
            state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            result = "exit-code" if state == "failed" else "success"
            return 0, f"ActiveState={state}\nSubState={state}\nNRestarts=0\nResult={result}\n", ""
        if "journalctl" in command:
            return 0, "groundup-node-prep.service: Failed at step CGROUP spawning /bin/sh\n", ""
        return 0, "", ""


def _unit_waiter(states: list[str]):
    from types import SimpleNamespace

    from groundup.node_bootstrap import NodeBootstrapper

    session = _UnitSession(states)
    sleeps: list[float] = []
    plan = SimpleNamespace(files=[], dirs=(), units=("groundup-node-prep",), unit_inputs={})
    worker = NodeBootstrapper(None, SimpleNamespace(short_name="worker-11"), session, plan, {"artifacts": []},
                              b"#", sleep=sleeps.append)
    return worker, session, sleeps


def test_a_unit_that_fails_at_start_twice_is_started_again_after_1_then_2_seconds():
    worker, session, sleeps = _unit_waiter(["failed", "failed", "active"])
    worker.wait_unit("groundup-node-prep")
    retries = [c for c in session.commands if "reset-failed" in c]
    assert len(retries) == 2 and sleeps == [1.0, 2.0], (session.commands, sleeps)
    assert worker.start_retries == ["groundup-node-prep (Result=exit-code), started again after 1 s",
                                    "groundup-node-prep (Result=exit-code), started again after 2 s"]


def test_a_unit_that_keeps_failing_is_named_with_its_state_and_journal():
    import pytest

    from groundup.node_bootstrap import START_RETRIES, BootstrapFailed

    worker, session, sleeps = _unit_waiter(["failed"])
    with pytest.raises(BootstrapFailed) as failure:
        worker.wait_unit("groundup-node-prep")
    message = str(failure.value)
    assert message.startswith("worker-11: groundup-node-prep failed to start (ActiveState=failed")
    assert "Failed at step CGROUP" in message
    assert len([c for c in session.commands if "reset-failed" in c]) == START_RETRIES == 2
