"""Fault injection on the sandbox: one build of clusters/sandbox.yaml with ONE fault, how it ended,
what it cost, and what its teardown left (must be nothing).

Each case returns a `Result`; `run_case` wraps it with the teardown and the leak check
(`sandbox.leaks`), so every case ends with the sandbox empty. The faults reach the product only from
outside: AWS errors through `sandbox.faultproxy` (the build's `AWS_ENDPOINT_URL`), everything else on
the nodes (sshd, etcd, kube-apiserver, a reboot) or on the processes (SIGKILL). `scripts/chaos.py`
runs them all and prints the table; `tests/e2e/test_chaos.py` runs the short ones.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from groundup.spec import ClusterSpec, load_spec
from sandbox import leaks
from sandbox.faultproxy import Fault, FaultProxy, new_instances_not_found, throttle
from sandbox.lifecycle import read_env_file
from sandbox.state import read_record, state_dir

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "clusters" / "sandbox.yaml"
ALL_PHASES = "network,compute,pki,distribute,bootstrap,smoke"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Result:
    """How one fault ended."""

    case: str
    fault: str
    ending: str = "?"                      # recovered | failed | ...
    message: str = ""
    seconds: float = 0.0
    leaked: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)   # where the ending is not what the product owes
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.leaked

    def as_dict(self) -> dict:
        return {"case": self.case, "fault": self.fault, "ending": self.ending, "message": self.message,
                "seconds": round(self.seconds, 1), "leaked": self.leaked, "problems": self.problems,
                "notes": self.notes, "ok": self.ok}


def failure_message(stderr: str) -> str:
    """The CLI's failure paragraph (`groundup: build-cluster ... ended Failed:` and its lines)."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"groundup( \w+)?: (build|teardown|smoke)", line) and ("ended" in line or ":" in line[9:]):
            block = [line]
            for follow in lines[i + 1:]:
                if not follow.startswith("  "):
                    break
                block.append(follow)
            return "\n".join(block)
    tail = [line for line in lines if line.strip()]
    return "\n".join(tail[-3:])


def first_line_naming(message: str, *words: str) -> str:
    """The first line of `message` that holds every word (for the table), else its first line."""
    for line in message.splitlines():
        if all(w in line for w in words):
            return line.strip()
    return message.strip().splitlines()[0] if message.strip() else ""


class Bench:
    """One case's workbench: the sandbox's environment, a spec copy, the CLI, the nodes."""

    def __init__(self, workdir: Path, state: Path | None = None) -> None:
        self.state = state or state_dir()
        self.workdir = workdir
        self.spec: ClusterSpec = load_spec(SPEC)
        self.spec_path = SPEC
        self.moto = read_record(self.state)["moto"]["endpoint"]
        self.proxy: FaultProxy | None = None
        self.timeline: list[tuple[float, str]] = []
        self.started = time.monotonic()
        self.done = threading.Event()   # set when the case returns: its watchers stop

    @property
    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "GROUNDUP_"))}
        return {**keep, **read_env_file(self.state)}

    def note(self, what: str) -> None:
        self.timeline.append((round(time.monotonic() - self.started, 1), what))

    def spec_copy(self, **changes) -> Path:
        """A copy of the sandbox spec (same cluster name) with top-level or `ssh` changes."""
        data = yaml.safe_load(SPEC.read_text())
        for key, value in changes.items():
            if key == "ssh":
                data["ssh"] = {**data.get("ssh", {}), **value}
            else:
                data[key] = value
        path = self.workdir / "spec.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        self.spec_path = path
        self.spec = load_spec(path)
        return path

    def start_proxy(self) -> FaultProxy:
        self.proxy = FaultProxy(self.moto).start()
        return self.proxy

    def _argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "groundup.cli", *args]

    def _env(self, through_proxy: bool) -> dict[str, str]:
        env = self.env
        if through_proxy and self.proxy is not None:
            env["AWS_ENDPOINT_URL"] = self.proxy.endpoint
        return env

    def groundup(self, *args: str, through_proxy: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        """`groundup ARGS` with the sandbox's environment (AWS through the fault proxy when one runs)."""
        self.note("groundup " + " ".join(args[:1]))
        done = subprocess.run(self._argv(*args), cwd=REPO, env=self._env(through_proxy), capture_output=True,
                              text=True, timeout=timeout)
        self.note(f"groundup {args[0]} exit {done.returncode}")
        return done

    def start_groundup(self, *args: str, through_proxy: bool = True) -> subprocess.Popen:
        self.note("groundup " + " ".join(args[:1]) + " (background)")
        return subprocess.Popen(self._argv(*args), cwd=REPO, env=self._env(through_proxy), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def build(self, phases: str = ALL_PHASES, through_proxy: bool = True) -> subprocess.CompletedProcess:
        return self.groundup("build", str(self.spec_path), "--phases", phases, through_proxy=through_proxy)

    def teardown(self, through_proxy: bool = False) -> subprocess.CompletedProcess:
        return self.groundup("teardown", str(self.spec_path), through_proxy=through_proxy, timeout=600)

    # nodes -------------------------------------------------------------------------------------

    def ip(self, short_name: str) -> str:
        return next(str(n.private_ip) for n in self.spec.nodes if n.short_name == short_name)

    def node_record(self, short_name: str) -> dict | None:
        from sandbox.controller import read_nodes

        node = read_nodes(self.state).get(self.ip(short_name))
        return node.to_dict() if node is not None else None

    def node_root(self, short_name: str) -> Path:
        from sandbox.nodes import node_dir, node_name

        return node_dir(self.state, node_name(self.ip(short_name))) / "merged"

    def wait_node_running(self, short_name: str, timeout: float = 120) -> dict:
        """The node once the controller saw its sshd answer (its host keys are in the console output)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            node = self.node_record(short_name)
            if node and node.get("state") == "running" and node.get("pid"):
                return node
            time.sleep(0.1)
        raise TimeoutError(f"{short_name}: no running node within {timeout:.0f} s")

    def node_exec(self, short_name: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        from sandbox.nodes import node_exec

        node = self.node_record(short_name)
        if not node or not node.get("pid"):
            raise RuntimeError(f"{short_name}: no node runs")
        return node_exec(node["pid"], list(argv), timeout=timeout)

    def ssh_established(self, short_name: str) -> bool:
        """Whether this machine holds an established SSH connection to the node."""
        out = subprocess.run(["ss", "-Htn", "state", "established", "dst", self.ip(short_name)],
                             capture_output=True, text=True).stdout
        return any(line.split()[-1].endswith(":22") for line in out.splitlines() if line.split())

    # AWS, read straight from moto ---------------------------------------------------------------

    def resource_counts(self) -> dict[str, int]:
        """Live resources of the cluster by kind, straight from moto (duplicates show as counts > 1)."""
        return {kind: len(items) for kind, items in leaks.aws_leftovers(self.spec, self.moto).items()}


def watch(until: Callable[[], bool], then: Callable[[], None], timeout: float, poll: float = 0.1,
          stop: threading.Event | None = None) -> threading.Thread:
    """In the background: once `until()` holds (within `timeout`), call `then()`."""

    def run() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            try:
                if until():
                    then()
                    return
            except Exception:  # a node that is not there yet
                pass
            time.sleep(poll)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def build_and_judge(bench: Bench, result: Result, phases: str = ALL_PHASES) -> subprocess.CompletedProcess:
    """Run the case's build; record how it ended, keep its failure, and flag a traceback."""
    done = bench.build(phases)
    result.ending, result.message = ended(done)
    keep_failure(result, result.message)
    check_no_traceback(result, done.stderr)
    return done


def launch_first(bench: Bench, result: Result, node: str, phases: str) -> str | None:
    """Launch the instances (network, compute) and wait for `node` to run, so a node fault is in place
    before any phase reaches the nodes; returns the phases still to build, None when launching failed."""
    launched = bench.build("network,compute")
    if launched.returncode != 0:
        result.problems.append("launching failed: " + first_line_naming(failure_message(launched.stderr)))
        return None
    bench.wait_node_running(node)
    return ",".join(p for p in phases.split(",") if p not in ("network", "compute"))


def ended(done: subprocess.CompletedProcess) -> tuple[str, str]:
    """(recovered|failed, message) of a CLI run."""
    if done.returncode == 0:
        return "recovered", done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    return "failed", failure_message(done.stderr)


def keep_failure(result: Result, message: str) -> None:
    """The whole failure paragraph in the notes (the table shows the line that names the cause)."""
    if message and result.ending.startswith("failed"):
        result.notes.append("failure: " + " / ".join(line.strip() for line in message.splitlines())[:700])


def check_no_traceback(result: Result, *outputs: str) -> None:
    for text in outputs:
        if "Traceback (most recent call last)" in text:
            result.problems.append("a Python traceback reached the user")
            return


# the cases ---------------------------------------------------------------------------------------

def case_throttling(bench: Bench, times: int = 5, phases: str = ALL_PHASES) -> Result:
    """Every AWS service throttles its first `times` calls, in the build and again in the teardown."""
    result = Result("throttling", f"first {times} calls of EC2, ELBv2 and STS answer RequestLimitExceeded (503) / "
                                  "Throttling (400), build and teardown")
    proxy = bench.start_proxy()
    for service in ("ec2", "elbv2", "sts"):
        proxy.inject(throttle(service, times))
    done = build_and_judge(bench, result, phases)
    hits = proxy.injected()
    result.notes.append(f"{hits} calls throttled in the build")
    if hits < 3 * times:
        result.problems.append(f"only {hits} calls reached the faults")
    if result.ending != "recovered":
        result.problems.append("throttling is transient: the build must ride it out")
    proxy.clear()
    for service in ("ec2", "elbv2", "sts"):
        proxy.inject(throttle(service, times))
    down = bench.teardown(through_proxy=True)
    result.notes.append(f"teardown through throttling: exit {down.returncode}, {proxy.injected()} calls throttled")
    if down.returncode != 0:
        result.problems.append("teardown under throttling failed: " + first_line_naming(failure_message(down.stderr)))
    return result


def case_eventual_consistency(bench: Bench, times: int = 2, phases: str = ALL_PHASES) -> Result:
    """Right after RunInstances, the next calls naming the new instance answer InvalidInstanceID.NotFound."""
    result = Result("eventual-consistency", f"the first {times} calls naming each new instance after RunInstances "
                                            "answer InvalidInstanceID.NotFound")
    proxy = bench.start_proxy()
    proxy.observe(new_instances_not_found(times))
    done = build_and_judge(bench, result, phases)
    result.notes.append(f"{len(proxy.noticed)} new instances, {proxy.injected()} calls answered NotFound")
    if len(proxy.noticed) != len(bench.spec.nodes) or proxy.injected() < len(bench.spec.nodes):
        result.problems.append("the fault did not reach every new instance")
    if result.ending != "recovered":
        result.problems.append("eventual consistency heals: the build must ride it out")
    return result


def case_unreachable_node(bench: Bench, node: str = "worker-2", boot_timeout_s: int = 10,
                          phases: str = ALL_PHASES) -> Result:
    """sshd off on one node for every phase that reaches the nodes: the instances are launched
    (network, compute), sshd is stopped on the node once it first answered (its host keys are in the
    console output), then the rest of the build runs."""
    result = Result("unreachable-node", f"sshd stopped on {node} once it booted, before any phase reaches "
                                        f"the nodes; ssh.boot_timeout_s {boot_timeout_s}")
    bench.spec_copy(ssh={"boot_timeout_s": boot_timeout_s})
    stopped = threading.Event()
    phases = launch_first(bench, result, node, phases)
    if phases is None:
        return result
    if bench.node_exec(node, "systemctl", "stop", "ssh.socket", "ssh.service").returncode == 0:
        stopped.set()
        bench.note(f"sshd stopped on {node}")
    done = build_and_judge(bench, result, phases)
    if not stopped.is_set():
        result.problems.append("the fault was not injected")
    if result.ending != "failed" or node not in result.message:
        result.problems.append(f"the build must fail naming {node}")
    others = [n.short_name for n in bench.spec.nodes if n.short_name != node]
    missing = [n for n in others if bench.node_exec(n, "test", "-s", "/var/lib/kubernetes/ca.pem").returncode != 0]
    result.notes.append(f"the other {len(others)} nodes got their files" if not missing
                        else f"no files on {', '.join(missing)}")
    if missing:
        result.problems.append(f"the other nodes must complete their steps; not done on {', '.join(missing)}")
    result.message = first_line_naming(result.message, node)
    return result


SFTP_SERVER = "/usr/lib/openssh/sftp-server"
# The node's first SFTP session holds for a moment before the real server takes over, so the fault
# always finds a session to cut (the uploads themselves last milliseconds here).
SFTP_HOLD = """#!/bin/sh
if mkdir /tmp/groundup-chaos-sftp-held 2>/dev/null; then sleep {hold}; fi
exec {server}.real "$@"
"""


def case_sshd_killed_mid_upload(bench: Bench, node: str = "worker-0", hold_s: float = 2.0,
                                phases: str = ALL_PHASES) -> Result:
    """Every sshd process on one node SIGKILLed while the distribute phase holds an SFTP session to it."""
    result = Result("sshd-killed-mid-upload", f"every sshd process on {node} SIGKILLed during its first SFTP "
                                              "session (distribute); systemd restarts sshd")
    killed = threading.Event()
    phases = launch_first(bench, result, node, phases)
    if phases is None:
        return result
    wrapper = SFTP_HOLD.format(hold=hold_s, server=SFTP_SERVER)
    held = bench.node_exec(node, "sh", "-c", f"mv {SFTP_SERVER} {SFTP_SERVER}.real && cat > {SFTP_SERVER} "
                           f"<<'EOF'\n{wrapper}EOF\nchmod 755 {SFTP_SERVER}")
    if held.returncode != 0:
        result.problems.append(f"could not hold the SFTP server on {node}: {held.stderr.strip()}")
        return result

    def uploading() -> bool:
        return bench.ssh_established(node) and bench.node_exec(node, "pgrep", "-f", "sftp-server").returncode == 0

    def kill_sshd() -> None:
        bench.node_exec(node, "pkill", "-KILL", "sshd")
        bench.node_exec(node, "pkill", "-KILL", "-f", "sftp-server")
        killed.set()
        bench.note(f"sshd killed on {node} during an SFTP session")

    watch(uploading, kill_sshd, timeout=300, poll=0.02, stop=bench.done)
    done = build_and_judge(bench, result, phases)
    if not killed.is_set():
        result.problems.append("the fault was not injected")
    if result.ending == "recovered":
        told = "connected again" in done.stderr + done.stdout
        result.notes.append("the run log says the upload connected again" if told
                            else "the run log does not say the upload's connection dropped")
        if not told:
            result.problems.append("a dropped upload connection must be logged")
    if result.ending == "failed":
        result.message = first_line_naming(result.message, node)
        if node not in result.message:
            result.problems.append(f"the failure must name {node}")
        again = bench.build(phases)
        result.notes.append(f"re-run: exit {again.returncode}")
        result.ending = "failed, re-run completed" if again.returncode == 0 else "failed, re-run failed"
        if again.returncode != 0:
            result.problems.append("a re-run must complete: " + first_line_naming(failure_message(again.stderr)))
    return result


def case_reboot_mid_bootstrap(bench: Bench, node: str = "master-1") -> Result:
    """`systemctl reboot` on a master once the bootstrap has put its etcd unit in place."""
    result = Result("reboot-mid-bootstrap", f"`systemctl reboot` on {node} once the bootstrap wrote its etcd unit")
    rebooted = threading.Event()
    unit = bench.node_root(node) / "etc/systemd/system/etcd.service"

    def reboot() -> None:
        bench.node_exec(node, "systemctl", "reboot")
        rebooted.set()
        bench.note(f"{node} reboots")

    watch(unit.exists, reboot, timeout=300, poll=0.1, stop=bench.done)
    done = build_and_judge(bench, result)
    if not rebooted.is_set():
        result.problems.append("the fault was not injected")
    instance = bench.node_record(node)
    result.notes.append(f"after the build {node}'s node is {instance['state'] if instance else 'gone'}")
    if result.ending == "failed":
        result.message = first_line_naming(result.message, node)
        if node not in result.message:
            result.problems.append(f"the failure must name {node}")
        again = bench.build()
        result.notes.append(f"re-run: exit {again.returncode}")
        result.ending = "failed, re-run completed" if again.returncode == 0 else "failed, re-run failed"
        if again.returncode != 0:
            result.problems.append("a re-run must complete: " + first_line_naming(failure_message(again.stderr)))
    return result


def case_slow_etcd(bench: Bench, hold_s: int = 30, node: str = "master-2") -> Result:
    """etcd on one master starts `hold_s` late (a drop-in's ExecStartPre sleep, start timeout off)."""
    from groundup.node_bootstrap import ETCD_QUORUM_TIMEOUT

    within = hold_s < ETCD_QUORUM_TIMEOUT
    result = Result("slow-etcd" if within else "etcd-never-joins",
                    f"etcd on {node} held back {hold_s} s (quorum wait {ETCD_QUORUM_TIMEOUT:.0f} s)")
    dropin = bench.node_root(node) / "etc/systemd/system/etcd.service.d/90-held-back.conf"
    placed = threading.Event()

    def hold() -> None:
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(f"[Service]\nTimeoutStartSec=infinity\nExecStartPre=/bin/sleep {hold_s}\n")
        placed.set()
        bench.note(f"etcd held back on {node}")

    watch(lambda: (bench.node_root(node) / "etc/systemd/system").is_dir(), hold, timeout=300, stop=bench.done)
    done = build_and_judge(bench, result)
    if not placed.is_set():
        result.problems.append("the fault was not injected")
    try:
        shown = bench.node_exec(node, "systemctl", "show", "-p", "DropInPaths", "-p", "ActiveEnterTimestamp",
                                "-p", "InactiveExitTimestamp", "etcd").stdout
        result.notes.append(f"{node} etcd: " + " ".join(shown.split()))
        if dropin.name not in shown:
            result.problems.append(f"systemd on {node} did not read the hold-back drop-in")
    except RuntimeError as exc:
        result.notes.append(str(exc))
    if within and result.ending != "recovered":
        result.problems.append("a member within the quorum wait must not fail the build")
    if not within:
        result.message = first_line_naming(result.message, node, "etcd")
        if result.ending != "failed" or node not in result.message or "etcd" not in result.message:
            result.problems.append(f"the build must fail naming {node}'s etcd")
        if "no quorum" in result.message:
            result.problems.append("the message blames the quorum; the member's etcd never started")
    return result


def case_etcd_never_joins(bench: Bench) -> Result:
    """etcd on one master held back past the quorum wait (600 s): the build fails naming the member."""
    return case_slow_etcd(bench, hold_s=600)


def _api(bench: Bench):
    import httpx

    return httpx.Client(base_url=bench.env["PREFECT_API_URL"], timeout=30)


def _wait_run(api, run_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = api.get(f"/flow_runs/{run_id}").raise_for_status().json()
        if run["state_type"] in TERMINAL or time.monotonic() > deadline:
            return run
        time.sleep(1)


def flow_run_pids(run_id: str) -> list[int]:
    """Processes running the flow run (the process worker passes its id in the environment)."""
    marker = f"PREFECT__FLOW_RUN_ID={run_id}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if marker in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def case_flow_run_killed(bench: Bench, phase: str = "bootstrap-") -> Result:
    """The deployment's flow-run process SIGKILLed mid-phase on the sandbox's worker, then Retry."""
    result = Result("flow-run-killed", f"the build-cluster run's process SIGKILLed once a {phase.rstrip('-')} "
                                       "task runs, then Retry (AwaitingRetry)")
    deployed = bench.groundup("deploy", str(SPEC), through_proxy=False, timeout=300)
    if deployed.returncode != 0:
        result.problems.append("deploy failed: " + failure_message(deployed.stderr))
        return result
    api = _api(bench)
    deployment = api.get(f"/deployments/name/build-cluster/{bench.spec.name}").raise_for_status().json()
    spec = yaml.safe_load(SPEC.read_text())
    run = api.post(f"/deployments/{deployment['id']}/create_flow_run",
                   json={"parameters": {"spec": spec, "phases": ALL_PHASES.split(",")}}).raise_for_status().json()
    bench.note(f"flow run {run['id']} created")
    body = {"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200}
    deadline = time.monotonic() + 300
    killed: list[int] = []
    while time.monotonic() < deadline and not killed:
        tasks = api.post("/task_runs/filter", json=body).raise_for_status().json()
        if any(t["name"].startswith(phase) and t["state_type"] == "RUNNING" for t in tasks):
            for pid in flow_run_pids(run["id"]):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            bench.note(f"flow-run processes {killed} killed")
        state = api.get(f"/flow_runs/{run['id']}").raise_for_status().json()["state_type"]
        if state in TERMINAL:
            break
        time.sleep(0.3)
    if not killed:
        result.problems.append("the fault was not injected (no flow-run process found mid-phase)")
        return result
    first = _wait_run(api, run["id"], 120)
    result.notes.append(f"after the kill the run is {first['state_name']}: {(first['state'] or {}).get('message', '')[:120]}")
    time.sleep(3)  # the runner and then the worker report the crash; Retry after both, as a user would
    retry = {"state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry (chaos)"}, "force": True}
    for _ in range(3):
        api.post(f"/flow_runs/{run['id']}/set_state", json=retry).raise_for_status()
        bench.note("AwaitingRetry set")
        time.sleep(5)
        now = api.get(f"/flow_runs/{run['id']}").raise_for_status().json()
        if now["run_count"] > first["run_count"] or now["state_type"] not in TERMINAL:
            break
    second = _wait_run(api, run["id"], 900)
    bench.note(f"retried run {second['state_name']}")
    result.ending = "crashed, retry completed" if second["state_type"] == "COMPLETED" else \
        f"crashed, retry {second['state_name']}"
    result.message = (second["state"] or {}).get("message") or ""
    if second["state_type"] != "COMPLETED":
        result.problems.append("the retried run must complete")
    counts = bench.resource_counts()
    expected = {"instances": len(bench.spec.nodes), "load_balancers": 1, "target_groups": 1}
    duplicates = {k: v for k, v in counts.items() if v > expected.get(k, 1)}
    result.notes.append(f"resources after the retry: {counts}")
    if duplicates:
        result.problems.append(f"duplicate resources: {duplicates}")
    return result


def case_teardown_killed(bench: Bench) -> Result:
    """`groundup teardown` SIGKILLed mid-way (once it deletes the load balancer), then run again."""
    result = Result("teardown-killed", "the teardown process SIGKILLed when it reaches DeleteLoadBalancer "
                                       "(instances already terminating), then run again")
    built = bench.build("network,compute", through_proxy=False)
    if built.returncode != 0:
        result.problems.append("build failed: " + failure_message(built.stderr))
        return result
    proxy = bench.start_proxy()
    hold = threading.Event()
    fault = proxy.inject(Fault(match=("Action=DeleteLoadBalancer",), hold=hold))
    process = bench.start_groundup("teardown", str(bench.spec_path))
    try:
        if not fault.reached.wait(300):
            result.problems.append("the teardown never reached DeleteLoadBalancer")
        os.killpg(process.pid, signal.SIGKILL)
        bench.note("teardown killed")
    finally:
        hold.set()
        process.wait(30)
    counts = bench.resource_counts()
    result.notes.append(f"left after the kill: {counts}")
    again = bench.teardown()
    result.ending, result.message = ended(again)
    result.ending = "killed, re-run completed" if again.returncode == 0 else "killed, re-run failed"
    check_no_traceback(result, again.stderr)
    if again.returncode != 0:
        result.problems.append("the second teardown must complete")
    return result


def case_unhealthy_target(bench: Bench, node: str = "master-1") -> Result:
    """kube-apiserver stopped on one master behind the NLB after the bootstrap; smoke test, then a re-run."""
    result = Result("unhealthy-target", f"kube-apiserver stopped on {node} (its NLB target unhealthy) before the smoke test")
    built = bench.build("network,compute,pki,distribute,bootstrap", through_proxy=False)
    if built.returncode != 0:
        result.problems.append("build failed: " + first_line_naming(failure_message(built.stderr)))
        return result
    stopped = bench.node_exec(node, "systemctl", "stop", "kube-apiserver")
    bench.note(f"kube-apiserver stopped on {node} (exit {stopped.returncode})")
    smoke = bench.groundup("smoke", str(bench.spec_path), through_proxy=False)
    check_no_traceback(result, smoke.stderr)
    report = smoke.stdout + smoke.stderr
    through_nlb = [line.strip() for line in report.splitlines() if "livez" in line.lower()]
    result.notes.append("API through the NLB: " + (through_nlb[0][:150] if through_nlb else "no row"))
    named = [line.strip() for line in report.splitlines() if node in line and "kube-apiserver" in line]
    result.message = named[0][:200] if named else first_line_naming(failure_message(smoke.stderr))
    if smoke.returncode == 0 or not named:
        result.problems.append(f"the smoke test must fail naming {node}'s kube-apiserver")
    again = bench.build(through_proxy=False)
    result.ending = ("smoke failed, re-run completed" if again.returncode == 0 else "smoke failed, re-run failed") \
        if smoke.returncode else "smoke passed"
    if again.returncode != 0:
        result.problems.append("a re-run must restart the apiserver and pass: "
                               + first_line_naming(failure_message(again.stderr)))
    return result


class ApiProbe:
    """kubectl through the NLB (admin kubeconfig) every `every` seconds in the background: each request's
    time and whether it answered, so an outage's failed requests can be counted."""

    def __init__(self, bench: Bench, args: tuple[str, ...] = ("get", "--raw", "/readyz"), every: float = 0.2) -> None:
        from groundup.cluster_api import kubectl_path

        self.kubeconfig = bench.workdir / "admin.kubeconfig"
        made = bench.groundup("kubeconfig", str(bench.spec_path), "-o", str(self.kubeconfig), through_proxy=False)
        if made.returncode != 0:
            raise RuntimeError("groundup kubeconfig failed: " + made.stderr.strip()[-300:])
        self.kubectl = [str(kubectl_path()), "--kubeconfig", str(self.kubeconfig), "--request-timeout=5s"]
        self.argv = [*self.kubectl, *args]
        self.every, self.started = every, time.monotonic()
        self.results: list[tuple[float, bool, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="api-probe", daemon=True)

    def __enter__(self) -> ApiProbe:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        while not self.stop.is_set():
            at = time.monotonic() - self.started
            done = subprocess.run(self.argv, capture_output=True, text=True, timeout=30)
            self.results.append((at, done.returncode == 0, (done.stderr or done.stdout).strip()[-160:]))
            self.stop.wait(self.every)

    def failed_between(self, start: float, end: float) -> list[tuple[float, bool, str]]:
        return [r for r in self.results if start <= r[0] < end and not r[1]]

    def since(self, start: float) -> list[tuple[float, bool, str]]:
        return [r for r in self.results if r[0] >= start]


OUTAGE_S = 20.0
"""How long a control-plane fault lasts while the API is probed through the NLB."""
SETTLE_S = 8.0
"""After this long into an outage, HAProxy's checks (1 s apart) have taken a dead API server out."""


def case_apiserver_down(bench: Bench, node: str = "master-1") -> Result:
    """kube-apiserver stopped on one master for OUTAGE_S while kubectl asks through the NLB every 0.2 s;
    then started again and the smoke test run."""
    result = Result("apiserver-down", f"kube-apiserver stopped on {node} for {OUTAGE_S:.0f} s, kubectl through the NLB")
    built = bench.build(through_proxy=False)
    if built.returncode != 0:
        result.problems.append("build failed: " + first_line_naming(failure_message(built.stderr)))
        return result
    with ApiProbe(bench) as probe:
        time.sleep(2.0)
        stopped_at = time.monotonic() - probe.started
        bench.node_exec(node, "systemctl", "stop", "kube-apiserver")
        bench.note(f"kube-apiserver stopped on {node}")
        time.sleep(OUTAGE_S)
        started_at = time.monotonic() - probe.started
        bench.node_exec(node, "systemctl", "start", "kube-apiserver")
        bench.note(f"kube-apiserver started on {node}")
        time.sleep(2.0)
    during = [r for r in probe.results if stopped_at <= r[0] < started_at]
    failed = probe.failed_between(stopped_at, started_at)
    late = probe.failed_between(stopped_at + SETTLE_S, started_at)
    result.notes.append(f"{len(failed)} of {len(during)} requests failed during the {OUTAGE_S:.0f} s outage"
                        + (f" (first at +{failed[0][0] - stopped_at:.1f} s: {failed[0][2]})" if failed else ""))
    result.message = f"{len(failed)} of {len(during)} requests through the NLB failed while {node}'s API server was down"
    if len(during) < 10:
        result.problems.append(f"only {len(during)} requests were made during the outage")
    if late:
        result.problems.append(f"{len(late)} requests failed more than {SETTLE_S:.0f} s into the outage: "
                               "HAProxy's checks must have taken the dead API server out by then")
    smoke = bench.groundup("smoke", str(bench.spec_path), through_proxy=False)
    result.ending = "served throughout, smoke passed" if smoke.returncode == 0 and not late else "not served"
    if smoke.returncode != 0:
        result.problems.append("smoke must pass once the API server runs again: "
                               + first_line_naming(failure_message(smoke.stderr)))
    return result


def case_etcd_member_down(bench: Bench, node: str = "master-2") -> Result:
    """etcd stopped on one master: the API keeps serving reads and writes through the NLB (two of three
    members are a quorum); started again, the smoke test passes."""
    result = Result("etcd-member-down", f"etcd stopped on {node}; reads and writes through the NLB")
    built = bench.build(through_proxy=False)
    if built.returncode != 0:
        result.problems.append("build failed: " + first_line_naming(failure_message(built.stderr)))
        return result
    kubectl = ApiProbe(bench).kubectl
    bench.node_exec(node, "systemctl", "stop", "etcd")
    bench.note(f"etcd stopped on {node}")
    ok, failures = 0, []
    for i in range(10):
        write = subprocess.run([*kubectl, "create", "configmap", f"groundup-chaos-{i}", f"--from-literal=i={i}"],
                               capture_output=True, text=True, timeout=30)
        read = subprocess.run([*kubectl, "get", "configmap", f"groundup-chaos-{i}", "-o", "jsonpath={.data.i}"],
                              capture_output=True, text=True, timeout=30)
        if write.returncode == 0 and read.returncode == 0 and read.stdout.strip() == str(i):
            ok += 1
        else:
            failures.append((write.stderr + read.stderr).strip()[-160:])
    subprocess.run([*kubectl, "delete", "configmap", *(f"groundup-chaos-{i}" for i in range(10)),
                    "--ignore-not-found"], capture_output=True, timeout=60)
    bench.node_exec(node, "systemctl", "start", "etcd")
    bench.note(f"etcd started on {node}")
    result.message = f"{ok} of 10 writes read back with {node}'s etcd member down"
    if failures:
        result.problems.append(f"{len(failures)} writes or reads failed: {failures[0]}")
    smoke = bench.groundup("smoke", str(bench.spec_path), through_proxy=False)
    result.ending = "served, smoke passed" if smoke.returncode == 0 and not failures else "not served"
    if smoke.returncode != 0:
        result.problems.append("smoke must pass once etcd runs again: " + first_line_naming(failure_message(smoke.stderr)))
    return result


CASES: dict[str, Callable[[Bench], Result]] = {
    "throttling": case_throttling,
    "eventual-consistency": case_eventual_consistency,
    "unreachable-node": case_unreachable_node,
    "sshd-killed-mid-upload": case_sshd_killed_mid_upload,
    "reboot-mid-bootstrap": case_reboot_mid_bootstrap,
    "slow-etcd": case_slow_etcd,
    "etcd-never-joins": case_etcd_never_joins,
    "flow-run-killed": case_flow_run_killed,
    "teardown-killed": case_teardown_killed,
    "unhealthy-target": case_unhealthy_target,
    "apiserver-down": case_apiserver_down,
    "etcd-member-down": case_etcd_member_down,
}


def run_case(name: str, case: Callable[[Bench], Result] | None = None, state: Path | None = None) -> Result:
    """One case from an empty sandbox to an empty sandbox: the fault, the ending, teardown, leak check."""
    case = case or CASES[name]
    with tempfile.TemporaryDirectory(prefix=f"chaos-{name}-") as tmp:
        bench = Bench(Path(tmp), state)
        before = leaks.wait_clean(bench.spec, bench.state, timeout_s=10)
        if before:
            bench.teardown()
        started = time.monotonic()
        try:
            result = case(bench)
        except Exception as exc:  # the harness reports, then still cleans up
            result = Result(name, "?", ending="harness error", message=f"{type(exc).__name__}: {exc}",
                            problems=[f"harness error: {type(exc).__name__}: {exc}"])
        finally:
            bench.done.set()
        if before:
            result.notes.append(f"found before the case (torn down first): {before}")
        result.seconds = time.monotonic() - started
        if bench.proxy is not None:
            bench.proxy.clear()
        down = bench.teardown(through_proxy=False)
        if down.returncode != 0:
            result.problems.append("final teardown failed: " + first_line_naming(failure_message(down.stderr)))
            bench.teardown(through_proxy=False)
        if bench.proxy is not None:
            bench.proxy.stop()
        result.leaked = leaks.wait_clean(bench.spec, bench.state, timeout_s=30,
                                         markers=(str(bench.spec_path),) if bench.spec_path != SPEC else ())
        result.notes.append("timeline: " + "; ".join(f"{t} s {w}" for t, w in bench.timeline))
    return result


def table(results: list[Result]) -> str:
    """The markdown table: fault, how it ended, time, leaked resources."""
    rows = ["| case | fault | how it ended | message | time | leaked |", "|---|---|---|---|---|---|"]
    for r in results:
        message = " ".join(r.message.split())[:220].replace("|", "\\|")
        verdict = "" if r.ok else " **(not as owed: " + "; ".join(r.problems).replace("|", "\\|")[:200] + ")**"
        rows.append(f"| {r.case} | {r.fault} | {r.ending}{verdict} | {message} | {r.seconds:.0f} s | "
                    f"{leaks.count(r.leaked)} |")
    return "\n".join(rows)


def dump(results: list[Result], path: Path) -> None:
    path.write_text(json.dumps([r.as_dict() for r in results], indent=1))
