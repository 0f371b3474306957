"""The whole build on the running sandbox: per-phase times, a no-op re-run, a retry, scaling.

    flock /tmp/groundup-sandbox.lock .venv/bin/python scripts/bench_build.py [--workers 3,9,21] [--runs 3]
    flock /tmp/groundup-sandbox.lock .venv/bin/python scripts/bench_build.py --quick

What it does, in order (every build starts from nothing: the cluster torn down, its artifact store
emptied, so the nodes are new containers that download their binaries and the PKI is new):
1. for each worker count N (3 masters + N workers, a copy of clusters/sandbox.yaml): `--runs` full
   builds of every phase, each after a timed teardown; medians per phase;
2. on the 3+3 cluster (the first N): `--runs` no-op re-runs, with every AWS call counted by a
   counting proxy on 127.0.0.1 in front of moto (AWS_ENDPOINT_URL of the build), and the uploads,
   downloads and unit restarts the phases report: all must be 0;
3. a retry after a late failure: the build as a deployment run on the sandbox's worker with sshd
   stopped on the last worker and `ssh.boot_timeout_s` 5, then the same flow run set to
   AwaitingRetry (what Retry in the UI sends) with sshd running again; the retry is timed;
4. where the time goes: per phase, the wall time against the longest task and the sum of the
   tasks' own times (Prefect's orchestration is the gap), SSH connections and commands per node,
   key generation, binary installs, and the machine's CPU seconds by kind of process.
Prints markdown tables for docs/benchmarks.md. Leaves the sandbox empty (the cluster torn down).
Builds run in a child process of this script (`_child`), as a deployment run would, with the
measuring wrappers installed only there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import http.server
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import parse_qs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PHASES = ["network", "compute", "pki", "distribute", "bootstrap", "smoke"]
MUTATING = ("Create", "Run", "Authorize", "Register", "Import", "Allocate", "Associate", "Attach", "Add", "Put",
            "Modify", "Replace", "Set", "Delete", "Terminate", "Revoke", "Deregister", "Detach", "Disassociate",
            "Release", "Reboot", "Start", "Stop")
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


# the child: one build-cluster run in this process, measured -------------------------------------

def child(spec_path: str, phases: str, out_path: str) -> int:
    """Run build-cluster in process with counting wrappers; write one JSON document to `out_path`."""
    import groundup.node_bootstrap as nb
    import groundup.pki as pki
    import groundup.report as report
    import groundup.ssh as ssh
    from contextlib import contextmanager

    lock = threading.Lock()
    current = {"phase": "-"}
    windows: dict[str, list[float]] = {}
    stats: dict[str, Counter] = {"connects": Counter(), "commands": Counter(), "puts": Counter(),
                                 "seconds": Counter()}
    per_node: dict[str, Counter] = {}

    def add(kind: str, node: str, seconds: float = 0.0) -> None:
        with lock:
            stats[kind][current["phase"]] += 1
            stats["seconds"][f"{kind} {current['phase']}"] += seconds
            per_node.setdefault(current["phase"], Counter())[f"{kind} {node}"] += 1

    original_phase = report.PhaseTimes.phase

    @contextmanager
    def phase(self, name):
        current["phase"] = name
        started = time.time()
        try:
            with original_phase(self, name):
                yield
        finally:
            windows[name] = [started, time.time()]
            current["phase"] = "-"

    report.PhaseTimes.phase = phase

    def wrap(owner, attr, kind, node_of):
        original = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            started = time.monotonic()
            try:
                return original(*args, **kwargs)
            finally:
                add(kind, node_of(args), time.monotonic() - started)

        setattr(owner, attr, wrapper)

    wrap(ssh, "connect", "connects", lambda a: a[0].name)
    nb.connect = ssh.connect  # node_bootstrap imported the name
    wrap(ssh.NodeSession, "run", "commands", lambda a: a[0].target.name)
    wrap(ssh.NodeSession, "put", "puts", lambda a: a[0].target.name)
    wrap(pki, "generate_private_key", "keys", lambda a: "-")
    wrap(nb.NodeBootstrapper, "install_binaries", "installs", lambda a: a[0].node.short_name)
    for kind in ("keys", "installs"):
        stats[kind] = Counter()

    from flows.build_cluster import build_cluster
    from groundup.spec import load_spec

    spec = load_spec(spec_path)
    wanted = phases.split(",")
    started = time.time()
    state = build_cluster(spec=spec, phases=wanted, return_state=True)
    wall = time.time() - started
    result: dict = {"state": state.type.value, "message": (state.message or "")[:2000], "wall": wall,
                    "flow_run_id": str(state.state_details.flow_run_id), "windows": windows,
                    "stats": {k: dict(v) for k, v in stats.items()},
                    "per_node": {k: dict(v) for k, v in per_node.items()}}
    if state.is_completed():
        summary = state.result()
        result["seconds"] = summary.get("seconds", {})
        result["changes"] = summary.get("changes", {})
    Path(out_path).write_text(json.dumps(result, default=str))
    return 0


# a counting proxy in front of moto -----------------------------------------------------------

class CountingProxy:
    """HTTP on 127.0.0.1: forwards every request to moto and counts the AWS actions by name."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.split("//", 1)[1].rstrip("/").split(":")
        self.actions: Counter = Counter()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: without it, ~50 ms a call

            def log_message(self, *args) -> None:
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                action = (parse_qs(body.decode(errors="replace")).get("Action") or
                          parse_qs(self.path.partition("?")[2]).get("Action") or [f"{self.command} {self.path}"])[0]
                proxy.actions[action] += 1
                conn = http.client.HTTPConnection(host, int(port), timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status, reply.reason)
                for key, value in reply.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = forward

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self) -> Counter:
        taken, self.actions = self.actions, Counter()
        return taken

    def close(self) -> None:
        self.server.shutdown()


def mutating(actions: Counter) -> dict[str, int]:
    return {a: n for a, n in actions.items() if a.startswith(MUTATING)}


# the parent ----------------------------------------------------------------------------------

class Bench:
    def __init__(self, env: dict[str, str], workdir: Path, proxy: CountingProxy, log) -> None:
        self.env = env
        self.workdir = workdir
        self.proxy = proxy
        self.log = log
        self.artifacts = Path(env["GROUNDUP_ARTIFACTS"])

    def spec(self, workers: int, boot_timeout: float | None = None) -> Path:
        text = (REPO / "clusters" / "sandbox.yaml").read_text()
        text = re.sub(r"^worker_count: \d+$", f"worker_count: {workers}", text, flags=re.M)
        name = f"sandbox-{workers}"
        if boot_timeout is not None:
            text = re.sub(r"^ssh:\n", f"ssh:\n  boot_timeout_s: {boot_timeout:g}\n", text, flags=re.M)
            name += "-short-boot"
        path = self.workdir / f"{name}.yaml"
        path.write_text(text)
        return path

    def build(self, spec: Path, phases: list[str] = PHASES, counted: bool = True) -> dict:
        out = self.workdir / f"child-{time.monotonic_ns()}.json"
        env = {**self.env, "AWS_ENDPOINT_URL": self.proxy.url} if counted else self.env
        self.proxy.take()
        busy_before = cpu_busy_seconds()
        started = time.monotonic()
        logfile = out.with_suffix(".log")
        with logfile.open("w") as output, CpuByProcess() as cpu:
            done = subprocess.run([sys.executable, __file__, "_child", str(spec), ",".join(phases), str(out)],
                                  cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT, text=True,
                                  timeout=1800)
        elapsed = time.monotonic() - started
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(f"build child failed ({done.returncode}), log {logfile}:\n"
                               f"{logfile.read_text()[-4000:]}")
        result = json.loads(out.read_text())
        result["process"] = elapsed
        result["cpu_busy"] = cpu_busy_seconds() - busy_before
        result["cpu_by"] = cpu.by_kind()
        result["log"] = str(logfile)
        result["actions"] = dict(self.proxy.take()) if counted else {}
        if "seconds" not in result:
            result["seconds"] = {name: end - start for name, (start, end) in result["windows"].items()}
        result["tasks"] = self.task_runs(result["flow_run_id"])
        if result["state"] != "COMPLETED":
            self.log(f"build {result['state']} (log {logfile}): {result['message'][:1500]}")
        return result

    def teardown(self, spec: Path) -> float:
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "groundup.cli", "teardown", str(spec)], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"teardown failed:\n{(done.stdout + done.stderr)[-3000:]}")
        took = time.monotonic() - started
        self.wait_nodes_gone()
        return took

    def wait_nodes_gone(self, timeout: float = 120.0) -> None:
        """Until the sandbox has discarded the torn-down nodes' disks and networks: EC2 does that on its own
        machines, the sandbox on the ones the next build measures (untimed)."""
        from sandbox.controller import read_nodes
        from sandbox.state import state_dir

        deadline = time.monotonic() + timeout
        while read_nodes(state_dir()) and time.monotonic() < deadline:
            time.sleep(0.5)

    def empty_store(self, cluster: str) -> None:
        """A build from nothing: no PKI, no SSH key, no host-key pins left from an earlier cluster."""
        shutil.rmtree(self.artifacts / cluster, ignore_errors=True)

    def api(self):
        import httpx

        return httpx.Client(base_url=self.env["PREFECT_API_URL"], timeout=30)

    def task_runs(self, flow_run_id: str) -> list[dict]:
        runs: list[dict] = []
        with self.api() as api:
            deadline = time.monotonic() + 30
            while True:
                runs, offset = [], 0
                while True:
                    page = api.post("/task_runs/filter", json={
                        "flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200, "offset": offset,
                    }).raise_for_status().json()
                    runs += page
                    offset += len(page)
                    if len(page) < 200:
                        break
                if all(t["state_type"] in TERMINAL for t in runs) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        return [{"name": t["name"], "state": t["state_name"], "start": t["start_time"], "end": t["end_time"],
                 "run": t["total_run_time"]} for t in runs]


CPU_KINDS = (
    ("node installs", ("install_releases.py",)),
    ("build (flow process)", ("bench_build.py _child",)),
    ("Prefect server", ("prefect server start",)),
    ("moto", ("sandbox.moto_console",)),
    ("sandbox controller", ("sandbox.controller", "systemd-nspawn", "haproxy")),
    ("etcd, control plane", ("/etcd ", "kube-apiserver", "kube-controller-manager", "kube-scheduler")),
    ("containerd, kubelet, kube-proxy", ("containerd", "kubelet", "kube-proxy", "runc", "ctr ")),
    ("sshd", ("sshd",)),
    ("nodes' systemd", ("systemd", "dbus-daemon", "(sd-")),
)


class CpuByProcess:
    """CPU seconds by kind of process while a build runs, from /proc sampled every 0.2 s. A process that
    lives shorter than a sample is missed, and a sampled one loses its last fraction: both, with the
    kernel's own work, are the rest of the machine's busy time."""

    def __init__(self) -> None:
        self.hz = os.sysconf("SC_CLK_TCK")
        self.seen: dict[tuple[int, str], list] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> "CpuByProcess":
        self.sample(first=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.sample()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.sample()

    def sample(self, first: bool = False) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                used, started = (int(fields[11]) + int(fields[12])) / self.hz, fields[19]
                key = (int(entry.name), started)
                if key not in self.seen:
                    argv = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    self.seen[key] = [argv or stat[stat.index("(") + 1:stat.rindex(")")], used if first else 0.0, used]
                self.seen[key][2] = used
            except (OSError, ValueError, IndexError):
                continue

    def by_kind(self) -> dict[str, float]:
        totals = Counter()
        for argv, before, last in self.seen.values():
            kind = next((k for k, marks in CPU_KINDS if any(m in argv for m in marks)), "other")
            totals[kind] += max(0.0, last - before)
        return dict(totals)


def cpu_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot (every process: flows, nodes, moto, Prefect)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def moto_instances(env: dict[str, str]) -> int:
    """Instances moto holds (terminated ones too: every DescribeInstances filters through all of them)."""
    import boto3

    ec2 = boto3.client("ec2", region_name=env.get("AWS_DEFAULT_REGION", "us-east-2"),
                       endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env.get("AWS_ACCESS_KEY_ID"),
                       aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY"))
    return sum(len(r["Instances"]) for page in ec2.get_paginator("describe_instances").paginate()
               for r in page["Reservations"])


def stamp(value: str | None) -> float | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def phase_breakdown(result: dict) -> dict[str, dict]:
    """Per phase: wall, task runs started in it, the longest task and the sum of the tasks' own times."""
    out = {}
    for name, (start, end) in result["windows"].items():
        own = []
        for task in result["tasks"]:
            begun, ended = stamp(task["start"]), stamp(task["end"])
            if begun is not None and ended is not None and start - 0.05 <= begun <= end:
                own.append(ended - begun)
        out[name] = {"wall": end - start, "tasks": len(own), "longest": max(own, default=0.0),
                     "sum": sum(own)}
    return out


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None or seconds != seconds else f"{seconds:.1f} s"


def wait_for_node(state: Path, ip: str, timeout: float = 90) -> int:
    from sandbox.controller import read_nodes
    from sandbox.nodes import node_exec

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node = read_nodes(state).get(ip)
        if node is not None:
            ready = node_exec(node.pid, ["systemctl", "is-system-running", "--wait"], timeout=60)
            if ready.returncode in (0, 1):
                return node.pid
        time.sleep(0.5)
    raise RuntimeError(f"no sandbox node answered at {ip} within {timeout:.0f} s")


def retry_after_late_failure(bench: Bench, state: Path, log) -> dict:
    """Deployment run with sshd stopped on the last worker (fails in distribute), then Retry of that run."""
    from groundup.spec import load_spec
    from sandbox.nodes import node_exec

    spec_path = bench.spec(3)
    deployed = subprocess.run([sys.executable, "-m", "groundup.cli", "deploy", str(REPO / "clusters" / "sandbox.yaml")],
                              cwd=REPO, env=bench.env, capture_output=True, text=True, timeout=300)
    if deployed.returncode != 0:
        raise RuntimeError(f"deploy failed: {deployed.stderr[-2000:]}")
    bench.build(spec_path, ["network", "compute"], counted=False)
    spec = load_spec(spec_path)
    last = spec.workers[-1]
    pid = wait_for_node(state, str(last.private_ip))
    import yaml

    body = yaml.safe_load(spec_path.read_text())
    body["ssh"] = {**body.get("ssh", {}), "boot_timeout_s": 5}
    with bench.api() as api:
        deployment = api.get(f"/deployments/name/build-cluster/{spec.name}").raise_for_status().json()
        deadline = time.monotonic() + 60
        while True:  # a node just booted may not have its system bus yet
            stopped = node_exec(pid, ["systemctl", "stop", "ssh.service", "ssh.socket"])
            if stopped.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if stopped.returncode != 0:
            raise RuntimeError(f"could not stop sshd on {last.short_name}: {stopped.stderr}")
        try:
            started = time.monotonic()
            run = api.post(f"/deployments/{deployment['id']}/create_flow_run",
                           json={"parameters": {"spec": body, "phases": PHASES}}).raise_for_status().json()
            first = wait_terminal(api, run["id"])
            first_wall = time.monotonic() - started
        finally:
            node_exec(pid, ["systemctl", "start", "ssh.service"])
        if first["state_type"] != "FAILED":
            raise RuntimeError(f"the run with sshd stopped on {last.short_name} ended {first['state_type']}")
        log(f"  first run failed as intended in {first_wall:.1f} s: {first['state']['message'][:160]}")
        before = {t["name"] for t in bench.task_runs(run["id"])}
        started, retried_at = time.monotonic(), time.time()
        api.post(f"/flow_runs/{run['id']}/set_state", json={
            "state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the UI"}, "force": True,
        }).raise_for_status()
        second = wait_terminal(api, run["id"])
        retry_wall = time.monotonic() - started
        if second["state_type"] != "COMPLETED":
            raise RuntimeError(f"the retry ended {second['state_type']}: {second['state']['message'][:500]}")
        tasks = bench.task_runs(run["id"])
        retried = [t for t in tasks if t["state"] != "Cached" and (stamp(t["start"]) or 0) >= retried_at]
        cached = [t for t in tasks if t["state"] == "Cached"]
        return {"first_wall": first_wall, "first_run_time": first["total_run_time"], "retry_wall": retry_wall,
                "executed": len(retried), "cached": len(cached), "seen_before": len(before),
                "failed_node": last.short_name}


def wait_terminal(api, run_id: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/flow_runs/{run_id}").raise_for_status().json()
        if run["state_type"] in TERMINAL:
            return run
        time.sleep(0.25)
    raise RuntimeError(f"flow run {run_id} not finished in {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="3,9,21", help="worker counts, comma-separated; the first is the "
                        "no-op and retry case (default 3,9,21)")
    parser.add_argument("--runs", type=int, default=3, help="full builds per worker count (default 3)")
    parser.add_argument("--noop-runs", type=int, default=None, help="no-op re-runs (default: --runs)")
    parser.add_argument("--quick", action="store_true", help="one run each, workers 3 and 21")
    parser.add_argument("--no-retry", action="store_true", help="skip the retry after a late failure")
    parser.add_argument("--json", help="also write every raw measurement to this file")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.runs = "3,21", 1
    workers = [int(w) for w in args.workers.split(",")]
    noop_runs = args.noop_runs if args.noop_runs is not None else args.runs
    command = "flock /tmp/groundup-sandbox.lock .venv/bin/python scripts/bench_build.py " + " ".join(sys.argv[1:])

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    from sandbox import lifecycle
    from sandbox.lock import sandbox_lock
    from sandbox.state import state_dir

    state = state_dir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "GROUNDUP_"))}
    env.update(lifecycle.read_env_file(state))
    if not env.get("AWS_ENDPOINT_URL"):
        log("the sandbox is not up (no AWS_ENDPOINT_URL in its env file): `groundup sandbox up` first")
        return 2
    held = ExitStack()
    held.enter_context(sandbox_lock(say=log))
    load_start = os.getloadavg()
    moto_before = moto_instances(env)
    workdir = Path(tempfile.mkdtemp(prefix="groundup-bench-"))
    proxy = CountingProxy(env["AWS_ENDPOINT_URL"])
    bench = Bench(env, workdir, proxy, log)
    raw: dict = {"full": {}, "teardown": {}, "noop": [], "retry": None}
    cluster = "groundup-sandbox"
    began = time.monotonic()
    try:
        bench.teardown(bench.spec(max(workers)))
        for n in workers:
            spec = bench.spec(n)
            for i in range(args.runs):
                raw["teardown"].setdefault(n, []).append(bench.teardown(spec))
                bench.empty_store(cluster)
                result = bench.build(spec)
                raw["full"].setdefault(n, []).append(result)
                log(f"3+{n} build {i + 1}/{args.runs}: {result['wall']:.1f} s "
                    + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()))
            if n == workers[0]:
                for i in range(noop_runs):
                    result = bench.build(spec)
                    raw["noop"].append(result)
                    log(f"3+{n} no-op re-run {i + 1}/{noop_runs}: {result['wall']:.1f} s, "
                        f"mutating AWS calls {sum(mutating(Counter(result['actions'])).values())}, "
                        f"changes {result.get('changes')}")
                if not args.no_retry:
                    bench.teardown(spec)
                    bench.empty_store(cluster)
                    raw["retry"] = retry_after_late_failure(bench, state, log)
                    log(f"retry: {raw['retry']}")
        raw["teardown"].setdefault(workers[-1], []).append(bench.teardown(bench.spec(workers[-1])))
    finally:
        try:
            bench.teardown(bench.spec(max(workers)))
        except Exception as exc:  # noqa: BLE001 - report, the lock is released below either way
            log(f"final teardown failed: {exc}")
        proxy.close()
        held.close()
    raw["load"] = {"start": load_start, "end": os.getloadavg()}
    raw["moto_instances"] = moto_before
    raw["minutes"] = (time.monotonic() - began) / 60
    if args.json:
        Path(args.json).write_text(json.dumps(raw, default=str, indent=1))
    print(render(raw, workers, args.runs, command))
    return 0


def cpu_cell(results: list[dict]) -> str:
    busy = median([r.get("cpu_busy", float("nan")) for r in results])
    cpus = os.cpu_count() or 1
    return f"{busy:.0f} s ({busy / cpus:.1f} s)" if busy == busy else "-"


def render(raw: dict, workers: list[int], runs: int, command: str) -> str:
    base = workers[0]
    cpus = os.cpu_count()
    lines = [f"## The whole build on the sandbox ({dt.date.today().isoformat()})", "",
             "    " + command, "",
             f"Machine: {cpus} CPUs, {platform.python_implementation()} {platform.python_version()}, "
             f"load average {raw['load']['start'][0]:.2f} at the start, {raw['load']['end'][0]:.2f} at the end; "
             f"{raw['minutes']:.1f} min in all; moto held {raw.get('moto_instances', '?')} instances (mostly "
             f"terminated) at the start. Medians of {runs} run(s); every full build from nothing "
             "(cluster torn down, artifact store emptied, new node containers).", ""]
    head = "| nodes | " + " | ".join(PHASES) + " | whole flow | teardown | machine CPU busy (2 CPUs: floor) |"
    lines += [head, "|---" * (len(PHASES) + 4) + "|"]
    totals = {}
    for n in workers:
        results = raw["full"].get(n, [])
        cells = [fmt(median([r["seconds"].get(p, 0.0) for r in results])) for p in PHASES]
        totals[n] = median([r["wall"] for r in results])
        failed = sum(r["state"] != "COMPLETED" for r in results)
        label = f"3+{n}" + (f" ({failed} of {len(results)} runs failed)" if failed else "")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {fmt(totals[n])} | "
                     f"{fmt(median(raw['teardown'].get(n, [])))} | {cpu_cell(results)} |")
    noop = raw["noop"]
    if noop:
        cells = [fmt(median([r["seconds"].get(p, 0.0) for r in noop])) for p in PHASES]
        noop_total = median([r["wall"] for r in noop])
        failed = sum(r["state"] != "COMPLETED" for r in noop)
        label = f"3+{base} no-op re-run" + (f" ({failed} of {len(noop)} runs failed)" if failed else "")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {fmt(noop_total)} | | {cpu_cell(noop)} |")
    lines.append("")
    for r in [r for results in raw["full"].values() for r in results] + noop:
        if r["state"] != "COMPLETED":
            lines.append(f"A run failed: {r['message'][:400]}  ")
    if len(workers) > 1:
        last = workers[-1]
        lines.append(f"Scaling: T(3+{last}) / T(3+{base}) = {totals[last]:.1f} / {totals[base]:.1f} = "
                     f"**{totals[last] / totals[base]:.2f}** (target <= 1.3).  ")
    if noop:
        lines.append(f"No-op re-run / full build (3+{base}) = {noop_total:.1f} / {totals[base]:.1f} = "
                     f"**{noop_total / totals[base]:.2f}** (target <= 0.25).")
        lines += ["", "| no-op re-run | AWS calls | mutating AWS calls | uploads | files changed | downloads | "
                  "unit restarts | SSH connections | SSH commands |", "|---|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(noop, 1):
            changes = r.get("changes", {})
            lines.append(f"| {i} | {sum(r['actions'].values())} | {sum(mutating(Counter(r['actions'])).values())} "
                         f"| {changes.get('uploaded', '?')} | {changes.get('files_changed', '?')} "
                         f"| {changes.get('downloaded', '?')} | {changes.get('restarted', '?')} "
                         f"| {sum(r['stats']['connects'].values())} | {sum(r['stats']['commands'].values())} |")
        full = raw["full"][base][-1]
        made = mutating(Counter(full["actions"]))
        lines.append("")
        lines.append(f"A full 3+{base} build for comparison: {sum(full['actions'].values())} AWS calls, "
                     f"{sum(made.values())} mutating ({', '.join(f'{a} {n}' for a, n in sorted(made.items()))}).")
    if raw.get("retry"):
        r = raw["retry"]
        lines += ["", f"Retry after a late failure (3+{base}, deployment run on the sandbox's worker, sshd stopped on "
                  f"{r['failed_node']}, `ssh.boot_timeout_s` 5): the failing run {fmt(r['first_wall'])}; "
                  f"Retry of the same flow run (AwaitingRetry to Completed, with the worker's pick-up) "
                  f"{fmt(r['retry_wall'])}: {r['executed']} task runs executed, {r['cached']} found cached."]
    lines += ["", "Where the time goes (one run each; a phase's wall time against its longest task and the sum of "
              "its tasks' own times; the gap between wall and longest is orchestration and waiting):", "",
              "| run | phase | wall | task runs | longest task | sum of task times | SSH connections | "
              "SSH commands (per node) | SSH time in commands |", "|---|---|---|---|---|---|---|---|---|"]
    samples = [(f"3+{n} full", raw["full"][n][-1]) for n in workers] + ([(f"3+{base} no-op", noop[-1])] if noop else [])
    for label, r in samples:
        nodes = 3 + int(label.split("+")[1].split()[0])
        breakdown = phase_breakdown(r)
        for p in PHASES:
            b = breakdown.get(p)
            if not b:
                continue
            commands = r["stats"]["commands"].get(p, 0)
            lines.append(f"| {label} | {p} | {fmt(b['wall'])} | {b['tasks']} | {fmt(b['longest'])} | {fmt(b['sum'])} "
                         f"| {r['stats']['connects'].get(p, 0)} | {commands} ({commands / nodes:.0f}) "
                         f"| {fmt(r['stats']['seconds'].get(f'commands {p}', 0.0))} |")
    lines += ["", "Key generation and binary installs (the same runs):", "",
              "| run | keys generated | key generation (sum) | installs | install time (sum over nodes) | "
              "flow wall | process (with imports) |", "|---|---|---|---|---|---|---|"]
    for label, r in samples:
        keys = sum(r["stats"].get("keys", {}).values())
        installs = sum(r["stats"].get("installs", {}).values())
        key_s = sum(v for k, v in r["stats"]["seconds"].items() if k.startswith("keys "))
        inst_s = sum(v for k, v in r["stats"]["seconds"].items() if k.startswith("installs "))
        lines.append(f"| {label} | {keys} | {fmt(key_s)} | {installs} | {fmt(inst_s)} | {fmt(r['wall'])} "
                     f"| {fmt(r['process'])} |")
    lines += ["", "Where the machine's CPU goes (the same runs; CPU seconds by kind of process, /proc sampled every "
              "0.2 s; the rest is the kernel's own work and processes shorter than a sample):", "",
              "| run | machine busy | " + " | ".join(k for k, _ in CPU_KINDS) + " | other | rest |",
              "|---" * (len(CPU_KINDS) + 4) + "|"]
    for label, r in samples:
        by = r.get("cpu_by", {})
        rest = r["cpu_busy"] - sum(by.values())
        lines.append(f"| {label} | {r['cpu_busy']:.1f} | " + " | ".join(f"{by.get(k, 0.0):.1f}" for k, _ in CPU_KINDS)
                     + f" | {by.get('other', 0.0):.1f} | {rest:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        sys.exit(child(*sys.argv[2:5]))
    sys.exit(main())
