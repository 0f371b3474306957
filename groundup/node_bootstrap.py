"""Bootstrapping a node: binaries, rendered configs, units, over one SSH session (kubernetes-the-hard-way
07-09: etcd, control plane, workers). Nothing here imports Prefect.

A unit is (re)started when the digest of everything it reads (binaries, distributed certificates and
kubeconfigs, rendered files) differs from the digest recorded on the node when it last started, or
when it is not active. The binaries' digests come from the installer's summary (it has just verified or
written them); the probe hashes only the other inputs, with one `sha256sum`. So a re-run on a built
cluster restarts nothing, and a changed file restarts exactly the units that read it. The record lives
on the node (`/var/lib/groundup/units.json`), so a retry or a run from another machine decides the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from groundup.hostkeys import resolve_host_keys
from groundup.spec import ClusterSpec, Node
from groundup.ssh import NodeSession, RemoteFile, Target, connect

STATE_DIR = "/var/lib/groundup"
UNIT_RECORD = f"{STATE_DIR}/units.json"
INSTALLER = f"{STATE_DIR}/install_releases.py"
RELEASE_MANIFEST = f"{STATE_DIR}/releases.manifest.json"
ETCD_QUORUM_TIMEOUT = 120.0
UNIT_TIMEOUT = 90.0
POLL_FIRST_S = 0.2
POLL_MAX_S = 1.0
"""A starting unit is looked at after 0.2 s, then at doubling intervals up to 1 s."""
START_RETRIES = 2
"""A unit that fails at start is reset and started again this many times, 1 s then 2 s later: a slow or
racing start can heal (systemd once failed to set up a unit's cgroup twice in a row, 219/CGROUP, on a
machine at load 35)."""


class BootstrapFailed(RuntimeError):
    """A node could not be bootstrapped; the message says which step and why."""


@dataclass
class NodeBootstrap:
    """What the bootstrap did on one node: plain facts, safe to persist and show."""

    node: str
    address: str
    downloaded: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    start_retries: list[str] = field(default_factory=list)
    """Each start of a unit that had failed at start, with how it had ended."""
    seconds: float = 0.0

    def as_result(self) -> dict:
        return {"node": self.node, "address": self.address, "downloaded": self.downloaded,
                "files_changed": self.files_changed, "restarted": self.restarted, "unchanged": self.unchanged,
                "start_retries": self.start_retries, "seconds": round(self.seconds, 3)}


def inputs_digest(paths: list[str], digests: dict[str, str]) -> str:
    """One digest over a unit's inputs: each path with its sha256, `missing` when absent."""
    text = "\n".join(f"{p} {digests.get(p, 'missing')}" for p in sorted(paths))
    return hashlib.sha256(text.encode()).hexdigest()


def units_to_start(units: list[str], inputs: dict[str, list[str]], digests: dict[str, str],
                   recorded: dict[str, str], active: dict[str, bool]) -> list[str]:
    """Units, in start order, whose inputs changed since they last started or that are not active."""
    return [u for u in units
            if recorded.get(u) != inputs_digest(inputs.get(u, []), digests) or not active.get(u, False)]


PROBE_MARK = "--- groundup-probe "
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def probe_command(dirs, units: list[str], paths: list[str]) -> str:
    """Make the plan's directories, then print the sha256 of each path that exists (one `sha256sum` over
    them all), the unit record and `systemctl is-active` of every unit, in sections headed by PROBE_MARK."""
    made = " && ".join(f"mkdir -p {shlex.quote(d.path)} && chmod {d.mode:o} {shlex.quote(d.path)}" for d in dirs)
    quoted = " ".join(shlex.quote(p) for p in paths)
    hashing = (f'{{ set --; for f in {quoted}; do [ -f "$f" ] && set -- "$@" "$f"; done; '
               '[ $# -eq 0 ] || sha256sum "$@"; }' if paths else "true")
    return ((f"{made} && " if made else "")
            + f"{hashing}; "
            + f"echo '{PROBE_MARK}record'; cat {UNIT_RECORD} 2>/dev/null || echo '{{}}'; echo; "
            + f"echo '{PROBE_MARK}active'; systemctl is-active {' '.join(units)}; true")


def parse_probe(output: str, units: list[str]) -> tuple[dict[str, str], dict[str, str], dict[str, bool]]:
    """`probe_command` output -> ({path: sha256}, unit record, {unit: active})."""
    sections = {"digests": [], "record": [], "active": []}
    current = "digests"
    for line in output.splitlines():
        if line.startswith(PROBE_MARK):
            current = line[len(PROBE_MARK):].strip()
            continue
        sections.setdefault(current, []).append(line)
    digests = {}
    for line in sections["digests"]:
        parts = line.split(None, 1)
        if len(parts) == 2:
            digests[parts[1].strip()] = parts[0]
    try:
        record = json.loads("\n".join(sections["record"]).strip() or "{}")
    except ValueError:
        record = {}
    states = " ".join(sections["active"]).split()
    active = {u: (states[i] == "active" if i < len(states) else False) for i, u in enumerate(units)}
    return digests, record if isinstance(record, dict) else {}, active


def installer_digests(summary: dict) -> dict[str, str]:
    """{path: sha256} the installer's summary vouches for (well-formed entries only)."""
    digests = summary.get("digests")
    if not isinstance(digests, dict):
        return {}
    return {p: d for p, d in digests.items() if isinstance(p, str) and isinstance(d, str) and _SHA256.match(d)}


def etcd_health_command(master: Node) -> str:
    """etcdctl against the local member over mTLS with the master's own etcd certificate."""
    return ("ETCDCTL_API=3 /usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 "
            "--cacert=/var/lib/kubernetes/ca.pem "
            f"--cert=/etc/etcd/etcd-{master.short_name}.pem --key=/etc/etcd/etcd-{master.short_name}-key.pem "
            "--command-timeout=3s endpoint health")


PEER_PROBE = """
import json, socket, sys
peers = json.loads(sys.argv[1])
down = []
for name, ip in peers:
    try:
        socket.create_connection((ip, 2380), timeout=2).close()
    except OSError:
        down.append(f"{name} ({ip})")
print(", ".join(down))
"""

HTTPS_PROBE = """
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
try:
    with urllib.request.urlopen(sys.argv[1], context=ctx, timeout=3) as reply:
        print(reply.status, reply.read(200).decode(errors="replace"))
except Exception as exc:
    print("error", exc)
    sys.exit(1)
"""


class NodeBootstrapper:
    """Apply one node's plan through an open session."""

    def __init__(self, spec: ClusterSpec, node: Node, session: NodeSession, plan, release_manifest: dict,
                 installer: bytes, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec = spec
        self.node = node
        self.session = session
        self.plan = plan
        self.release_manifest = release_manifest
        self.installer = installer
        self.clock = clock
        self.sleep = sleep
        self.sudo = session.sudo
        self.installed_digests: dict[str, str] = {}
        """{path: sha256} of the release files the installer verified or wrote in this run."""
        self.start_retries: list[str] = []

    def run(self, command: str, timeout: float = 120.0, check: bool = True) -> tuple[int, str, str]:
        return self.session.run(f"{self.sudo}sh -c {shlex.quote(command)}", timeout=timeout, check=check)

    def place_files(self) -> list[str]:
        """The installer, its manifest and the plan's files in one sync (one checksum pass); returns the
        plan's files that were uploaded or fixed."""
        manifest = json.dumps(self.release_manifest, indent=1, sort_keys=True).encode()
        tools = [RemoteFile(INSTALLER, self.installer, 0o700), RemoteFile(RELEASE_MANIFEST, manifest, 0o600)]
        report = self.session.sync(tools + [RemoteFile(f.path, f.data, f.mode) for f in self.plan.files])
        ours = {f.path for f in tools}
        return [p for p in report.uploaded + report.fixed if p not in ours]

    def install_binaries(self) -> list[str]:
        """Download, verify and install the role's release files on the node; returns what was downloaded
        and keeps the digests of the files the installer vouches for (`installed_digests`)."""
        code, out, err = self.run(f"python3 {INSTALLER} {RELEASE_MANIFEST}", timeout=900, check=False)
        if code != 0:
            raise BootstrapFailed(f"{self.node.short_name}: installing release binaries failed: "
                                  f"{(err.strip() or out.strip())[-800:]}")
        try:
            summary = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return []
        if not isinstance(summary, dict):
            return []
        self.installed_digests = installer_digests(summary)
        return list(summary.get("downloaded", []))

    def probe(self, units: list[str], paths: set[str]) -> tuple[dict[str, str], dict[str, str], dict[str, bool]]:
        """The plan's directories made, then in the same round trip: the sha256 of every input path that
        exists (those the installer just vouched for are taken from it, not hashed again), the unit record
        and which units are active. Returns (digests, record, active)."""
        known = {p: self.installed_digests[p] for p in paths if p in self.installed_digests}
        _, out, _ = self.run(probe_command(self.plan.dirs, units, sorted(set(paths) - known.keys())))
        digests, record, active = parse_probe(out, units)
        return {**digests, **known}, record, active

    def save_record(self, record: dict[str, str]) -> None:
        blob = shlex.quote(json.dumps(record, sort_keys=True))
        self.run(f"mkdir -p {STATE_DIR} && printf %s {blob} > {UNIT_RECORD}.tmp && mv {UNIT_RECORD}.tmp {UNIT_RECORD}")

    def journal(self, unit: str, lines: int = 15) -> str:
        _, out, _ = self.run(f"journalctl -u {unit} -n {lines} --no-pager -o cat 2>/dev/null; true")
        return out.strip()[-1500:]

    def apply_units(self, changed_files: list[str]) -> tuple[list[str], list[str]]:
        """(Re)start the units whose inputs changed or that are not active; returns (restarted, unchanged)."""
        units = list(self.plan.units)
        inputs = {u: sorted(self.plan.unit_inputs[u]) for u in units}
        if any(p.endswith((".service", ".conf")) and p.startswith(("/etc/systemd/", "/lib/systemd/"))
               for p in changed_files):
            self.run("systemctl daemon-reload")
        digests, record, active = self.probe(units, {p for paths in inputs.values() for p in paths})
        start = units_to_start(units, inputs, digests, record, active)
        for unit in units:
            if unit not in start:
                continue
            self.run(f"systemctl enable {unit} >/dev/null 2>&1; systemctl restart --no-block {unit}")
            self.wait_unit(unit)
            record[unit] = inputs_digest(inputs[unit], digests)
            self.save_record(record)
        return start, [u for u in units if u not in start]

    def wait_unit(self, unit: str, restarts: int = START_RETRIES) -> None:
        """Wait until the unit is active (etcd: healthy, apiserver: answering); a unit that fails at
        start is reset and started again `restarts` times, waiting 1 s, then 2 s, ... before each."""
        timeout = ETCD_QUORUM_TIMEOUT if unit == "etcd" else UNIT_TIMEOUT
        backoff = 1.0
        deadline = self.clock() + timeout
        delay = POLL_FIRST_S
        while True:
            _, out, _ = self.run(f"systemctl show -p ActiveState,SubState,NRestarts,Result {unit}")
            if "ActiveState=active" in out.split() and (
                    unit != "etcd" or self.run(etcd_health_command(self.node), check=False)[0] == 0):
                if unit == "kube-apiserver":
                    self.wait_api_local(deadline)
                return
            failed = "ActiveState=failed" in out
            if failed and restarts > 0:
                restarts -= 1
                fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
                self.start_retries.append(f"{unit} (Result={fields.get('Result', '?')}), started again "
                                          f"after {backoff:.0f} s")
                self.sleep(backoff)
                backoff *= 2
                self.run(f"systemctl reset-failed {unit}; systemctl restart --no-block {unit}")
                continue
            if failed or self.clock() > deadline:
                raise BootstrapFailed(self.unit_failure(unit, timeout, out, failed))
            self.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)

    def wait_api_local(self, deadline: float) -> None:
        url = "https://127.0.0.1:6443/healthz"
        delay = POLL_FIRST_S
        while True:
            code, out, _ = self.run(f"python3 -c {shlex.quote(HTTPS_PROBE)} {url} /var/lib/kubernetes/ca.pem",
                                    check=False)
            if code == 0:
                return
            if self.clock() > deadline:
                raise BootstrapFailed(f"{self.node.short_name}: kube-apiserver is active but {url} does not answer: "
                                      f"{out.strip()}\n{self.journal('kube-apiserver')}")
            self.sleep(delay)
            delay = min(delay * 2, POLL_MAX_S)

    def unit_failure(self, unit: str, timeout: float, show: str, failed: bool) -> str:
        detail = " ".join(show.split())
        how = "failed to start" if failed else f"did not become active within {timeout:.0f} s"
        message = f"{self.node.short_name}: {unit} {how} ({detail})"
        if unit == "etcd" and ("SubState=start-pre" in detail or "ActiveState=inactive" in detail):
            message += "; etcd itself never started on this member, so it never tried to join"
        elif unit == "etcd":
            peers = [[m.short_name, str(m.private_ip)] for m in self.spec.masters if m != self.node]
            _, down, _ = self.run(f"python3 -c {shlex.quote(PEER_PROBE)} {shlex.quote(json.dumps(peers))}",
                                  check=False)
            if down.strip():
                message += f"; etcd members that never joined (no answer on 2380): {down.strip()}"
            else:
                message += "; every peer answers on 2380 but the cluster has no quorum"
        return message + "\n" + self.journal(unit)


def open_session(spec: ClusterSpec, node: Node, address: str, instance_id: str | None, store, pkey,
                 console_output: Callable[[str], str] | None = None, *, boot_timeout: float = 120.0) -> NodeSession:
    """One SSH session to the node with its pinned host key (read from the console output when new)."""
    pin = resolve_host_keys(store, node.short_name, address, instance_id, console_output, timeout=boot_timeout)
    target = Target(name=node.short_name, address=address, user=spec.ssh.user, port=spec.ssh.port,
                    host_keys=pin.keys)
    return NodeSession(connect(target, pkey, boot_timeout=boot_timeout), target)


def bootstrap_node(spec: ClusterSpec, node: Node, address: str, instance_id: str | None, store, pkey, plan,
                   release_manifest: dict, installer: bytes,
                   console_output: Callable[[str], str] | None = None, *,
                   boot_timeout: float = 120.0) -> NodeBootstrap:
    """Binaries, files and units on one node over one SSH connection with its pinned host key."""
    started = time.monotonic()
    session = open_session(spec, node, address, instance_id, store, pkey, console_output, boot_timeout=boot_timeout)
    try:
        worker = NodeBootstrapper(spec, node, session, plan, release_manifest, installer)
        changed = worker.place_files()
        downloaded = worker.install_binaries()
        restarted, unchanged = worker.apply_units(changed)
    finally:
        session.close()
    return NodeBootstrap(node=node.short_name, address=address, downloaded=downloaded, files_changed=changed,
                         restarted=restarted, unchanged=unchanged, start_retries=worker.start_retries,
                         seconds=time.monotonic() - started)
