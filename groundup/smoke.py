"""The smoke test (kubernetes-the-hard-way 12): what is checked, where it ran, how it ended.

Every check says *where it ran*: `real` (the real components, on the cluster's own nodes, load balancer
and TLS), or `needs AWS` (kept for a check this machine cannot give; none today). A check that could
not run says why (a spec setting that turns it off, a node that did not answer). Each check reads command
output; the parsing is pure and tested on recorded output. Nothing here imports Prefect.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import asdict, dataclass
from enum import Enum

from groundup.bootstrap.layout import distributed
from groundup.kubeconfig import API_PORT
from groundup.spec import ClusterSpec, Node


class Where(str, Enum):
    real = "real"
    aws = "needs AWS"


class Status(str, Enum):
    passed = "passed"
    failed = "failed"
    not_run = "not run"


@dataclass(frozen=True)
class Check:
    """One smoke check's outcome; `detail` names the node and says why when it failed."""

    name: str
    where: Where
    status: Status
    detail: str = ""

    def as_dict(self) -> dict:
        data = asdict(self)
        data["where"], data["status"] = self.where.value, self.status.value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Check:
        return cls(data["name"], Where(data["where"]), Status(data["status"]), data.get("detail", ""))


def passed(name: str, where: Where, detail: str = "") -> Check:
    return Check(name, where, Status.passed, detail)


def failed(name: str, where: Where, detail: str) -> Check:
    return Check(name, where, Status.failed, detail)


def not_run(name: str, where: Where, detail: str) -> Check:
    return Check(name, where, Status.not_run, detail)


# etcd --------------------------------------------------------------------------------------------

def etcdctl(master: Node, *args: str) -> str:
    """etcdctl over mTLS with the master's own etcd certificate, against every member."""
    return ("ETCDCTL_API=3 /usr/local/bin/etcdctl --cacert=/var/lib/kubernetes/ca.pem "
            f"--cert=/etc/etcd/etcd-{master.short_name}.pem --key=/etc/etcd/etcd-{master.short_name}-key.pem "
            "--command-timeout=5s " + " ".join(args))


def etcd_endpoints(spec: ClusterSpec) -> str:
    return ",".join(f"https://{m.private_ip}:2379" for m in spec.masters)


def parse_member_list(output: str) -> list[dict]:
    """`etcdctl member list -w json` -> [{name, peer_urls, client_urls}] (unstarted members have no name)."""
    data = json.loads(output)
    return [{"name": m.get("name", ""), "peer_urls": m.get("peerURLs", []), "client_urls": m.get("clientURLs", [])}
            for m in data.get("members", [])]


def parse_endpoint_health(output: str) -> dict[str, bool]:
    """`etcdctl endpoint health -w json` -> {endpoint: healthy}."""
    return {e["endpoint"]: bool(e.get("health")) for e in json.loads(output)}


def judge_etcd(spec: ClusterSpec, members: list[dict], health: dict[str, bool]) -> Check:
    name = "etcd: every member started and healthy over mTLS"
    problems = []
    started = {m["name"] for m in members if m["name"]}
    for master in spec.masters:
        if master.short_name not in started and master.hostname not in started:
            problems.append(f"{master.short_name} is not a started member")
        endpoint = f"https://{master.private_ip}:2379"
        if not health.get(endpoint, False):
            problems.append(f"{master.short_name} ({endpoint}) is unhealthy")
    if len(members) != len(spec.masters):
        problems.append(f"{len(members)} members, expected {len(spec.masters)}")
    if problems:
        return failed(name, Where.real, "; ".join(problems))
    return passed(name, Where.real, f"{len(members)} members healthy")


def health_from_failure(spec: ClusterSpec, output: str) -> dict[str, bool]:
    """`etcdctl endpoint health` exits 1 when one endpoint is down: read the per-endpoint lines."""
    health = {}
    for master in spec.masters:
        endpoint = f"https://{master.private_ip}:2379"
        line = next((ln for ln in output.splitlines() if endpoint in ln), "")
        health[endpoint] = "is healthy" in line
    return health


# units -------------------------------------------------------------------------------------------

NOW_PROPERTY = "MonotonicNow"


def unit_show_command(units: list[str]) -> str:
    """The units' states, restart counts and when each last became active, after the node's monotonic
    clock (`MonotonicNow=` in microseconds, the clock of systemd's *Monotonic timestamps)."""
    now = "import time; print('%s=%d' % (sys.argv[1], time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6))"
    return (f"python3 -c \"import sys; {now}\" {NOW_PROPERTY}; echo; "
            "systemctl show -p Id,ActiveState,SubState,NRestarts,ActiveEnterTimestampMonotonic "
            + " ".join(f"{u}.service" for u in units))


def parse_unit_show(output: str) -> dict[str, dict[str, str]]:
    """`systemctl show -p ...` blocks -> {unit: {ActiveState, SubState, NRestarts, ...}}; the node's
    clock, when the output has it, under NOW_PROPERTY."""
    units: dict[str, dict[str, str]] = {}
    for block in output.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in fields:
            units[fields["Id"].removesuffix(".service")] = fields
        elif NOW_PROPERTY in fields:
            units[NOW_PROPERTY] = fields
    return units


RESTART_WINDOW_S = 6.0
"""No unit may have (re)started within this long (longer than the units' RestartSec): a crash loop
restarts inside it."""


def _active_for(fields: dict[str, str], shown: dict[str, dict[str, str]]) -> float | None:
    """Seconds the unit has been active at the time of the look, when the look has both clocks."""
    now = shown.get(NOW_PROPERTY, {}).get(NOW_PROPERTY)
    entered = fields.get("ActiveEnterTimestampMonotonic")
    if not now or not entered or not entered.isdigit() or int(entered) == 0:
        return None
    return (int(now) - int(entered)) / 1e6


def settle_seconds(wanted: list[str], shown: dict[str, dict[str, str]]) -> float:
    """How long to wait before a second look so that the window covers RESTART_WINDOW_S of every
    unit's life: 0 when each has been active that long already (a built cluster), the whole window
    when the look has no clock."""
    ages = [_active_for(shown.get(unit, {}), shown) for unit in wanted]
    if any(age is None for age in ages):
        return RESTART_WINDOW_S
    return max(0.0, min(RESTART_WINDOW_S, RESTART_WINDOW_S - min(ages, default=RESTART_WINDOW_S)))


def judge_units(node: Node, wanted: list[str], shown: dict[str, dict[str, str]],
                later: dict[str, dict[str, str]] | None = None) -> list[str]:
    """Problems with the node's units: not active (running, or exited for a oneshot), restarted by
    systemd between the two looks (`shown`, then `later`), or (when the looks carry the node's clock)
    active for less than RESTART_WINDOW_S at the last look. One look suffices when every unit has
    been active for the whole window (`settle_seconds` is 0)."""
    problems = []
    later = later if later is not None else shown
    for unit in wanted:
        first, last = shown.get(unit, {}), later.get(unit, {})
        states = {f"{f.get('ActiveState', '?')}/{f.get('SubState', '?')}" for f in (first, last)}
        bad = sorted(states - {"active/running", "active/exited"})
        restarts = int(last.get("NRestarts") or 0) - int(first.get("NRestarts") or 0)
        age = _active_for(last, later)
        if bad:
            problems.append(f"{node.short_name}: {unit} is {bad[0]}")
        elif restarts > 0:
            problems.append(f"{node.short_name}: {unit} restarted {restarts} times in {RESTART_WINDOW_S:.0f} s")
        elif age is not None and age < RESTART_WINDOW_S - 0.05:
            problems.append(f"{node.short_name}: {unit} became active again {age:.1f} s before the last look "
                            f"(restarted within {RESTART_WINDOW_S:.0f} s)")
    return problems


# API ---------------------------------------------------------------------------------------------

def judge_api(spec: ClusterSpec, livez: str, readyz: str, version: dict) -> list[Check]:
    """`/livez`, `/readyz?verbose` (every check `ok`) and `/version` (= the spec's release) through the NLB."""
    checks = []
    name = "API /livez through the NLB by DNS name with the admin kubeconfig"
    checks.append(passed(name, Where.real, "ok") if livez.strip() == "ok" else failed(name, Where.real, livez[-300:]))
    name = "API /readyz?verbose: every check ok"
    lines = [ln.strip() for ln in readyz.splitlines() if ln.strip().startswith("[")]
    bad = [ln for ln in lines if not ln.endswith(" ok")]
    if lines and not bad and "readyz check passed" in readyz:
        checks.append(passed(name, Where.real, f"{len(lines)} checks ok"))
    else:
        checks.append(failed(name, Where.real, "; ".join(bad)[:300] or readyz[-300:] or "no answer"))
    name = "API /version is the spec's release"
    got = version.get("gitVersion", "")
    wanted = f"v{spec.kubernetes_version}"
    checks.append(passed(name, Where.real, got) if got == wanted
                  else failed(name, Where.real, f"{got or 'no answer'}, wanted {wanted}"))
    return checks


def local_readyz_command(master: Node) -> str:
    """On a master: its own API server's /readyz over TLS, its certificate verified against the cluster CA
    (through the NLB a broken master only shows as a failed request on some other check)."""
    code = ("import ssl, sys, urllib.request\n"
            "try:\n"
            f" ctx = ssl.create_default_context(cafile={distributed(master, 'pki/ca.pem')!r})\n"
            f" print(urllib.request.urlopen('https://127.0.0.1:{API_PORT}/readyz', context=ctx, timeout=5).status)\n"
            "except Exception as exc:\n"
            " print(type(exc).__name__, str(exc)[:160])")
    return "python3 -c " + shlex.quote(code)


def judge_local_api_servers(spec: ClusterSpec, answers: dict[str, str]) -> Check:
    """Every master's own API server answered /readyz with 200 and a certificate from the cluster CA."""
    name = "each master's API server is ready and serves a certificate from the cluster CA"
    bad = [f"{m.short_name}: {answers.get(m.short_name) or 'not checked'}" for m in spec.masters
           if answers.get(m.short_name) != "200"]
    return failed(name, Where.real, "; ".join(bad)) if bad else passed(name, Where.real, f"{len(spec.masters)} masters")


LEASES = ("kube-controller-manager", "kube-scheduler")


def judge_leader_leases(spec: ClusterSpec, leases_json: str) -> Check:
    """`kubectl get leases -n kube-system -o json`: the controller-manager and scheduler leases are each
    held by one of the masters (holderIdentity `<hostname>_<uuid>`)."""
    name = "controller-manager and scheduler leader leases each held by one master"
    try:
        items = {i["metadata"]["name"]: i for i in json.loads(leases_json or "{}").get("items", [])}
    except (ValueError, KeyError, TypeError):
        return failed(name, Where.real, "kubectl returned no lease list")
    masters = {m.hostname: m.short_name for m in spec.masters}
    held, problems = [], []
    for lease in LEASES:
        holder = (items.get(lease, {}).get("spec") or {}).get("holderIdentity") or ""
        host = holder.split("_", 1)[0]
        if host in masters:
            held.append(f"{lease}: {masters[host]}")
        else:
            problems.append(f"{lease}: held by {holder or 'nobody'}")
    return failed(name, Where.real, "; ".join(problems)) if problems else passed(name, Where.real, ", ".join(held))


def judge_kubelet_rbac(found: dict[str, bool]) -> Check:
    """The apiserver-to-kubelet ClusterRole and its binding exist."""
    name = "apiserver-to-kubelet ClusterRole and ClusterRoleBinding exist"
    missing = [kind for kind, ok in found.items() if not ok]
    return failed(name, Where.real, "missing: " + ", ".join(missing)) if missing else passed(name, Where.real)


def judge_resource_limits(notes: dict[str, str]) -> Check:
    """What each worker's node-prep decided from its cgroup controllers: a worker that cannot enforce CPU and
    memory limits is reported, plainly, as not run (it is the machine's limit, not a fault of the build)."""
    name = "resource limits (CPU, memory) enforced on every worker"
    lacking = sorted(node for node, note in notes.items() if note.startswith("resource limits not enforced"))
    if lacking:
        why = notes[lacking[0]].split(" (missing", 1)[0]
        return not_run(name, Where.real, f"{why}: {', '.join(lacking)}")
    unknown = sorted(node for node, note in notes.items() if note != "enforced")
    return failed(name, Where.real, f"not decided on {', '.join(unknown)}") if unknown else passed(name, Where.real)


def judge_kube_proxies(spec: ClusterSpec, healthz: dict[str, str]) -> Check:
    """Each worker's kube-proxy answers its /healthz (200 only once it has synced with the API)."""
    name = "kube-proxy on every worker synced with the API (/healthz)"
    bad = [f"{w.short_name}: {healthz.get(w.short_name) or 'not checked'}" for w in spec.workers
           if healthz.get(w.short_name) != "200"]
    return failed(name, Where.real, "; ".join(bad)) if bad else passed(name, Where.real, f"{len(spec.workers)} workers")


def judge_nodes_ready(spec: ClusterSpec, nodes_json: str) -> Check:
    """`kubectl get nodes -o json`: every worker registered and Ready."""
    name = "nodes Ready"
    items = {n["metadata"]["name"]: n for n in json.loads(nodes_json).get("items", [])}
    problems = []
    for worker in spec.workers:
        node = items.get(worker.hostname)
        if node is None:
            problems.append(f"{worker.short_name} ({worker.hostname}) not registered")
            continue
        ready = [c for c in node.get("status", {}).get("conditions", []) if c.get("type") == "Ready"]
        if not ready or ready[0].get("status") != "True":
            why = ready[0].get("message", "") if ready else "no Ready condition"
            problems.append(f"{worker.short_name} not Ready ({why[:120]})")
            continue
        kubelet = node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion")
        if kubelet != f"v{spec.kubernetes_version}":
            problems.append(f"{worker.short_name} runs kubelet {kubelet}, not v{spec.kubernetes_version}")
        if node.get("spec", {}).get("podCIDR") != str(worker.pod_cidr):
            problems.append(f"{worker.short_name} podCIDR {node.get('spec', {}).get('podCIDR')}, "
                            f"spec says {worker.pod_cidr}")
    return (failed(name, Where.real, "; ".join(problems)) if problems
            else passed(name, Where.real, f"{len(spec.workers)} workers at v{spec.kubernetes_version}"))


ENCRYPTED_PREFIX = b"k8s:enc:aescbc:v1:key1"


def judge_secret_encrypted(raw_value: bytes) -> Check:
    """The Secret's value as etcd stores it begins with the aescbc provider's prefix."""
    name = "Secret in etcd begins k8s:enc:aescbc:v1:key1"
    marker = raw_value.find(b"/registry/secrets/")
    value = raw_value[raw_value.find(b"\n", marker) + 1:] if marker >= 0 else raw_value
    if value.startswith(ENCRYPTED_PREFIX):
        return passed(name, Where.real, "read raw from etcd on a master")
    return failed(name, Where.real, f"stored value begins {value[:24]!r}")


# pod network -------------------------------------------------------------------------------------

def parse_container_ip(ip_output: str) -> str | None:
    """The IPv4 address of eth0 from `ip -4 -o addr show eth0` inside a container."""
    match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", ip_output)
    return match.group(1) if match else None


PING_ATTEMPTS = 3


def ping_all_command(ips: list[str]) -> str:
    """One busybox shell in the pod that pings every address at once: one packet at a time, up to
    PING_ATTEMPTS, each waiting 1 s for its reply, stopping at the first reply (two packets in one ping
    waited a further second whenever the second reply was late); each address's output printed whole
    after a `== <ip>` line."""
    script = ('for ip in "$@"; do (out=""; n=0; while [ $n -lt ' + str(PING_ATTEMPTS) + ' ]; do '
              'o=$(/bin/busybox ping -c 1 -W 1 "$ip" 2>&1); out="$out$o\n"; '
              'case "$o" in *", 1 packets received"*) break;; esac; n=$((n+1)); done; '
              'printf "== %s\n%b\n" "$ip" "$out") & done; wait')
    return f"/bin/busybox sh -c {shlex.quote(script)} ping-all " + " ".join(shlex.quote(ip) for ip in ips)


def parse_ping_all(output: str, ips: list[str]) -> dict[str, bool]:
    """`ping_all_command` output -> {ip: at least one reply}; an address with no section did not answer."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("== "):
            current = line[3:].strip()
            sections.setdefault(current, [])
        elif current is not None:
            sections[current].append(line)
    return {ip: parse_ping("\n".join(sections.get(ip, []))) for ip in ips}


def parse_ping(output: str) -> bool:
    """busybox/iputils ping, one run or several: at least one reply in any of them."""
    return any(int(a or b) > 0 for a, b in re.findall(r"(\d+) packets received|(\d+) received", output))


# report ------------------------------------------------------------------------------------------

def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status is Status.failed]


def report_markdown(spec: ClusterSpec, checks: list[Check], api: str) -> str:
    """The smoke report: every check with where it ran and how it ended."""
    verdict = "FAILED" if failures(checks) else "passed"
    lines = [f"# Smoke test of `{spec.name}`: {verdict}", "", f"API: {api}", "", *table_rows(checks)]
    return "\n".join(lines) + "\n"


def table_rows(checks: list[Check]) -> list[str]:
    """The markdown table of checks: name, where it ran, result, detail."""
    rows = ["| check | where it ran | result | detail |", "|---|---|---|---|"]
    for check in checks:
        detail = check.detail.replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {check.name} | {check.where.value} | {check.status.value} | {detail} |")
    return rows


def report_table(checks: list[Check]) -> str:
    """The same as plain text, for the command line."""
    width = max((len(c.name) for c in checks), default=10)
    rows = [f"{'check':<{width}}  {'where':<11}  result   detail"]
    rows += [f"{c.name:<{width}}  {c.where.value:<11}  {c.status.value:<7}  {c.detail}" for c in checks]
    return "\n".join(rows)
