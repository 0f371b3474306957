"""The smoke test as Prefect tasks (kubernetes-the-hard-way 12): the API through the NLB from here, one
task per node over SSH (units, etcd, containerd), the pod network between workers, and the checks
that need a real API server. Every check reports where it ran (`groundup/smoke.py`).
"""

from __future__ import annotations

import base64
import json
import shlex
import time
import uuid
from ipaddress import ip_address

from prefect import get_run_logger, task

from groundup import smoke
from groundup.admin_kubeconfig import ADMIN_KUBECONFIG
from groundup.polling import poll
from groundup.bootstrap.layout import RESOURCE_LIMITS_NOTE
from groundup.smoke import Check, Status, Where, failed, not_run, passed
from groundup.spec import ClusterSpec, Node, Role, node_by_name
from groundup.ssh import RemoteFile
from tasks.nodes import boot_timeout_for, console_output_reader, fan_out
from tasks.store import cluster_ssh_key, cluster_store

CTR = "ctr -n groundup-smoke"
IMAGE_PATH = "/var/lib/groundup/smoke-image.tar"
POD = "groundup-smoke-pod"
CNI_STATE = "/var/lib/cni/networks"


def remove_pod(pod: str) -> str:
    """Stop and delete a smoke pod and free its address: `ctr run -d --cni` never runs CNI DEL itself."""
    return (f"{CTR} task delete --force {pod} >/dev/null 2>&1; "
            f"{CTR} container delete {pod} 2>/dev/null; "
            f'grep -ls "groundup-smoke-{pod}" {CNI_STATE}/*/* | xargs -r rm -f; true')


def remove_stale_pods() -> str:
    """Every smoke pod a dropped run left behind, and its address reservation."""
    return (f"for pod in $({CTR} containers ls -q | grep '^{POD}'); do {remove_pod('$pod')}; done; "
            f"grep -ls 'groundup-smoke-{POD}' {CNI_STATE}/*/* | xargs -r rm -f; true")


def _session(spec: ClusterSpec, node: Node, address: str, instance_id: str | None, boot_timeout: float):
    from groundup.node_bootstrap import open_session

    store = cluster_store(spec)
    pkey = cluster_ssh_key(spec)
    return open_session(spec, node, address, instance_id, store, pkey, console_output_reader(spec),
                        boot_timeout=boot_timeout)


def _sh(session, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
    return session.run(f"{session.sudo}sh -c {shlex.quote(command)}", timeout=timeout, check=False)


@task(name="smoke-api", persist_result=True)
def smoke_api(spec: ClusterSpec) -> dict:
    """/livez, /readyz?verbose and /version through the NLB by DNS name with the admin kubeconfig (real
    kubectl, TLS host-name check); a client without a certificate refused by the API server."""
    from groundup.cluster_api import credentials, https_get, kubectl

    kubeconfig = cluster_store(spec).read(ADMIN_KUBECONFIG)
    creds = credentials(kubeconfig)

    def raw(path: str) -> str:
        run = kubectl(kubeconfig, "get", "--raw", path, timeout=30)
        return (run.stdout if run.returncode == 0 else run.stderr).decode(errors="replace")

    version_text = raw("/version")
    try:
        version = json.loads(version_text)
    except ValueError:
        version = {}
    checks = smoke.judge_api(spec, raw("/livez"), raw("/readyz?verbose"), version)
    name = "an anonymous request (no client certificate) is refused by the API server"
    try:
        status, _ = https_get(creds, "/api/v1/namespaces", client_cert=False)
        result = (passed(name, Where.real, f"HTTP {status}") if status in (401, 403)
                  else failed(name, Where.real, f"HTTP {status}"))
    except OSError as exc:
        result = failed(name, Where.real, f"{type(exc).__name__}: {exc}")
    checks.append(result)
    return {"version": version, "server": creds.server, "checks": [c.as_dict() for c in checks]}


@task(name="smoke-node", task_run_name="smoke-{node}", persist_result=True)
def smoke_node(spec: ClusterSpec, node: str, address: str, instance_id: str | None, api_endpoint: str,
               boot_timeout: float = 60.0) -> dict:
    """Units active and not restarting; on masters etcd's members; on workers a container and a pod IP."""
    from groundup.bootstrap import node_plan
    from groundup.oci import IMAGE_NAME, find_busybox, image_archive

    target = node_by_name(spec, node)
    units = list(node_plan(spec, target, api_endpoint).units)
    session = _session(spec, target, address, instance_id, boot_timeout)
    out: dict = {"node": node, "role": target.role.value}
    try:
        _, shown, _ = _sh(session, smoke.unit_show_command(units))
        first = later = smoke.parse_unit_show(shown)
        wait = smoke.settle_seconds(units, first)
        settled = time.monotonic() + wait
        if target.role is Role.master:
            out.update(_master_checks(spec, target, session))
        else:
            out.update(_worker_checks(session, IMAGE_NAME, image_archive(find_busybox().read_bytes())))
        if wait > 0:  # the second look once the window covers every unit (the checks above ran inside it)
            time.sleep(max(0.0, settled - time.monotonic()))
            later = smoke.parse_unit_show(_sh(session, smoke.unit_show_command(units))[1])
        out["unit_looks"] = 2 if wait > 0 else 1
        problems = smoke.judge_units(target, units, first, later)
        for i, problem in enumerate(problems):
            unit = problem.split(": ", 1)[1].split()[0]
            _, why, _ = _sh(session, f"journalctl _SYSTEMD_UNIT={unit}.service -n 40 --no-pager -o cat | grep -iE 'error|fail|refus|invalid' | tail -n 2")
            if why.strip():
                problems[i] = f"{problem} ({' / '.join(why.strip().splitlines())[:300]})"
        out["unit_problems"] = problems
    finally:
        session.close()
    return out


def _master_checks(spec: ClusterSpec, master: Node, session) -> dict:
    """etcd's members and health over mTLS, and the master's own API server ready behind its cluster-CA
    certificate."""
    out: dict = {}
    endpoints = smoke.etcd_endpoints(spec)
    code, members, err = _sh(session, smoke.etcdctl(master, f"--endpoints={endpoints}", "member list -w json"))
    out["etcd_members"] = smoke.parse_member_list(members) if code == 0 else []
    out["etcd_error"] = "" if code == 0 else err.strip()[:300]
    code, health, err = _sh(session, smoke.etcdctl(master, f"--endpoints={endpoints}", "endpoint health -w json"))
    try:
        out["etcd_health"] = smoke.parse_endpoint_health(health)
    except ValueError:
        out["etcd_health"] = smoke.health_from_failure(spec, health + err)
    # a just (re)started API server needs a few seconds
    out["apiserver_readyz"] = poll(lambda: _sh(session, smoke.local_readyz_command(master))[1].strip()[-200:],
                                   lambda answer: answer == "200", APISERVER_READY_WAIT_S)
    return out


APISERVER_READY_WAIT_S = 60.0


POD_IP_WAIT_S = 10.0


KUBE_PROXY_HEALTHZ = ("python3 -c " + shlex.quote(
    "import urllib.request\ntry:\n print(urllib.request.urlopen('http://127.0.0.1:10256/healthz', timeout=5).status)\n"
    "except Exception as e:\n print(getattr(e, 'code', '') or type(e).__name__)"))
KUBE_PROXY_WAIT_S = 30.0


def _worker_checks(session, image: str, archive: bytes) -> dict:
    """kube-proxy's health, a container from the locally imported image, then a pod with its address
    (the pod stays for the ping)."""
    out: dict = {}
    out["resource_limits"] = _sh(session, f"cat {RESOURCE_LIMITS_NOTE} 2>/dev/null || echo unknown")[1].strip()
    out["kube_proxy_healthz"] = poll(lambda: _sh(session, KUBE_PROXY_HEALTHZ)[1].strip()[-80:],
                                     lambda answer: answer == "200", KUBE_PROXY_WAIT_S)
    session.sync([RemoteFile(IMAGE_PATH, archive, 0o600)])
    hello = f"groundup-smoke-{uuid.uuid4().hex[:8]}"
    code, said, err = _sh(session, f"{CTR} image import {IMAGE_PATH} >/dev/null && {CTR} run --rm --cpu-shares 0 "
                                   f"{image} {hello} /bin/busybox echo groundup-smoke", timeout=120)
    out["container"] = "ok" if code == 0 and "groundup-smoke" in said else err.strip()[-300:]
    pod = f"{POD}-{uuid.uuid4().hex[:8]}"
    code, _, err = _sh(session, f"{remove_stale_pods()}; {CTR} run -d --cni --cpu-shares 0 {image} {pod} "
                                "/bin/busybox sleep 900", timeout=120)
    out["pod"] = pod
    deadline = time.monotonic() + POD_IP_WAIT_S
    while True:
        shown, addr, err2 = _sh(session, f"{CTR} task exec --exec-id ip-{uuid.uuid4().hex[:6]} {pod} "
                                         "/bin/busybox ip -4 -o addr show eth0")
        out["pod_ip"] = smoke.parse_container_ip(addr)
        if out["pod_ip"] or code != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    out["pod_error"] = "" if out["pod_ip"] else (
        f"ctr run exited {code}, address look exited {shown}: {(err + err2 + addr).strip()[-300:]}")
    return out


PING_ROUNDS = 2


@task(name="smoke-pod-network", task_run_name="smoke-pod-network-{node}", persist_result=True)
def smoke_pod_network(spec: ClusterSpec, node: str, address: str, instance_id: str | None, pod: str,
                      peers: dict[str, str], boot_timeout: float = 60.0) -> dict:
    """From this worker's pod, ping every other worker's pod through the pod routes (all at once, in one
    command). The pod stays: the other workers may still be pinging it (`smoke_remove_pod` removes it once
    every worker is done)."""
    session = _session(spec, node_by_name(spec, node), address, instance_id, boot_timeout)
    reached, unreachable = [], []
    try:
        others = {peer: ip for peer, ip in sorted(peers.items()) if peer != node}
        answered: dict[str, bool] = {}
        for _ in range(PING_ROUNDS):  # a second round for the silent ones: one lost reply under load is no verdict
            silent = [ip for ip in others.values() if not answered.get(ip)]
            if not silent:
                break
            _, said, _ = _sh(session, f"{CTR} task exec --exec-id ping-{uuid.uuid4().hex[:6]} {pod} "
                                      + smoke.ping_all_command(silent), timeout=60)
            answered.update({ip: ok for ip, ok in smoke.parse_ping_all(said, silent).items() if ok})
        for peer, ip in others.items():
            (reached if answered.get(ip) else unreachable).append(f"{peer} {ip}")
    finally:
        session.close()
    return {"node": node, "reached": reached, "unreachable": unreachable}


@task(name="smoke-remove-pod", task_run_name="smoke-remove-pod-{node}", persist_result=True)
def smoke_remove_pod(spec: ClusterSpec, node: str, address: str, instance_id: str | None, pod: str,
                     boot_timeout: float = 60.0) -> str:
    """Remove this worker's smoke pod and free its address, once no worker pings it any more."""
    session = _session(spec, node_by_name(spec, node), address, instance_id, boot_timeout)
    try:
        _sh(session, remove_pod(pod))
    finally:
        session.close()
    return pod


WORKLOAD_CHECKS = ("a deployment runs; kubectl logs and exec work", "a NodePort answers on a worker",
                   "kubernetes.default resolves in a pod")
WORKLOADS_OFF = "the spec's smoke_workloads is off (the nodes cannot pull images)"


@task(name="smoke-kubernetes-api", persist_result=True)
def smoke_kubernetes_api(spec: ClusterSpec, master: tuple[str, str, str | None],
                         worker: tuple[str, str, str | None] | None) -> list[dict]:
    """The checks through the real API: a Secret read raw from etcd, nodes Ready, the apiserver-to-kubelet
    RBAC, the leader leases; then, unless the spec turns them off, workloads (deployment, logs, exec,
    NodePort, DNS)."""
    from groundup.bootstrap.addons import apiserver_to_kubelet_rbac
    from groundup.cluster_api import kubectl

    kubeconfig = cluster_store(spec).read(ADMIN_KUBECONFIG)
    checks = []
    kubectl(kubeconfig, "delete", "secret", "groundup-smoke", "--ignore-not-found")
    made = kubectl(kubeconfig, "create", "secret", "generic", "groundup-smoke", "--from-literal=mykey=mydata")
    master_node = node_by_name(spec, master[0])
    session = _session(spec, master_node, master[1], master[2], 60.0)
    try:
        _, raw, err = _sh(session, smoke.etcdctl(master_node, "--endpoints=https://127.0.0.1:2379", "get",
                                                  "/registry/secrets/default/groundup-smoke") + " | base64 -w0")
    finally:
        session.close()
    checks.append(smoke.judge_secret_encrypted(base64.b64decode(raw or b"")) if made.returncode == 0
                  else failed("Secret in etcd begins k8s:enc:aescbc:v1:key1", Where.real,
                              made.stderr.decode(errors="replace").strip()))
    kubectl(kubeconfig, "delete", "secret", "groundup-smoke", "--ignore-not-found")
    checks.append(_nodes_ready(spec, kubeconfig))
    rbac = {f"{o['kind']} {o['metadata']['name']}": kubectl(
        kubeconfig, "get", o["kind"].lower(), o["metadata"]["name"], "-o", "name").returncode == 0
        for o in apiserver_to_kubelet_rbac()}
    checks.append(smoke.judge_kubelet_rbac(rbac))
    checks.append(_leases(spec, kubeconfig))
    if not spec.smoke_workloads:
        return [c.as_dict() for c in checks] + [not_run(n, Where.real, WORKLOADS_OFF).as_dict() for n in WORKLOAD_CHECKS]
    checks += _workload_checks(spec, kubeconfig, worker)
    return [c.as_dict() for c in checks]


NODES_READY_WAIT_S = 120.0
LEASES_WAIT_S = 60.0


def _nodes_ready(spec: ClusterSpec, kubeconfig: bytes) -> Check:
    """Every worker registered and Ready, waited for up to NODES_READY_WAIT_S (kubelet registers once it starts)."""
    from groundup.cluster_api import kubectl

    return poll(lambda: smoke.judge_nodes_ready(spec, kubectl(kubeconfig, "get", "nodes", "-o", "json")
                                                .stdout.decode() or "{}"),
                _passed, NODES_READY_WAIT_S, interval=2.0)


def _leases(spec: ClusterSpec, kubeconfig: bytes) -> Check:
    from groundup.cluster_api import kubectl

    return poll(lambda: smoke.judge_leader_leases(spec, kubectl(kubeconfig, "get", "leases", "-n", "kube-system",
                                                                "-o", "json").stdout.decode()),
                _passed, LEASES_WAIT_S, interval=2.0)


def _passed(check: Check) -> bool:
    return check.status is Status.passed


def _workload_checks(spec: ClusterSpec, kubeconfig: bytes, worker: tuple[str, str, str | None] | None) -> list[Check]:
    """kubernetes-the-hard-way's: an nginx deployment, its logs and exec, a NodePort, DNS from a pod."""
    from groundup.cluster_api import kubectl

    names = WORKLOAD_CHECKS
    checks = []
    kubectl(kubeconfig, "create", "deployment", "groundup-smoke-nginx", "--image=nginx:1.27")
    rolled = kubectl(kubeconfig, "rollout", "status", "deployment/groundup-smoke-nginx", "--timeout=180s", timeout=200)
    logs = kubectl(kubeconfig, "logs", "deployment/groundup-smoke-nginx")
    execd = kubectl(kubeconfig, "exec", "deployment/groundup-smoke-nginx", "--", "nginx", "-v")
    ok = rolled.returncode == 0 and logs.returncode == 0 and execd.returncode == 0
    checks.append(passed(names[0], Where.real) if ok
                  else failed(names[0], Where.real, (rolled.stderr + logs.stderr + execd.stderr).decode()[:300]))
    kubectl(kubeconfig, "expose", "deployment", "groundup-smoke-nginx", "--port=80", "--type=NodePort")
    port = kubectl(kubeconfig, "get", "svc", "groundup-smoke-nginx", "-o",
                   "jsonpath={.spec.ports[0].nodePort}").stdout.decode().strip()
    if worker is None or not port:
        checks.append(failed(names[1], Where.real, "no worker" if worker is None else "no nodePort assigned"))
    else:
        worker_node = node_by_name(spec, worker[0])
        session = _session(spec, worker_node, worker[1], worker[2], 60.0)
        try:
            url = f"http://{worker_node.private_ip}:{port}/"
            code, said, err = _sh(session, "python3 -c " + shlex.quote(
                "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).status)") + f" {url}")
        finally:
            session.close()
        checks.append(passed(names[1], Where.real, url) if code == 0 and said.strip() == "200"
                      else failed(names[1], Where.real, f"{url}: {(said + err).strip()[-200:]}"))
    dns = kubectl(kubeconfig, "run", "groundup-smoke-dns", "--image=busybox:1.36", "--restart=Never", "--rm", "-i",
                  "--", "nslookup", f"kubernetes.default.svc.{spec.cluster_domain}", timeout=180)
    resolved = str(spec.kubernetes_service_ip) in dns.stdout.decode()
    checks.append(passed(names[2], Where.real) if resolved
                  else failed(names[2], Where.real, (dns.stdout + dns.stderr).decode()[-300:]))
    kubectl(kubeconfig, "delete", "svc,deployment", "groundup-smoke-nginx", "--ignore-not-found")
    return checks


def node_checks(spec: ClusterSpec, nodes: dict[str, dict], api: dict, pods: dict[str, dict],
                failures: dict[str, str]) -> list[Check]:
    """The per-node results judged into the report's rows."""
    checks: list[Check] = []
    masters = [nodes[m.short_name] for m in spec.masters if m.short_name in nodes]
    if masters:
        first = masters[0]
        checks.append(smoke.judge_etcd(spec, first.get("etcd_members", []), first.get("etcd_health", {})))
    else:
        checks.append(failed("etcd: every member started and healthy over mTLS", Where.real, "no master answered"))
    problems = [p for n in nodes.values() for p in n.get("unit_problems", [])]
    problems += [f"{name}: {why}" for name, why in failures.items()]
    name = "every unit active on every node, none restarting"
    checks.append(failed(name, Where.real, "; ".join(problems)) if problems
                  else passed(name, Where.real, f"{len(nodes)} nodes"))
    checks.append(smoke.judge_local_api_servers(spec, {m["node"]: m.get("apiserver_readyz", "") for m in masters}))
    workers = [nodes[w.short_name] for w in spec.workers if w.short_name in nodes]
    checks.append(smoke.judge_kube_proxies(spec, {w["node"]: w.get("kube_proxy_healthz", "") for w in workers}))
    checks.append(smoke.judge_resource_limits({w["node"]: w.get("resource_limits", "") for w in workers}))
    name = "containerd on every worker runs a container from a locally imported image"
    bad = [f"{w['node']}: {w.get('container')}" for w in workers if w.get("container") != "ok"]
    checks.append(failed(name, Where.real, "; ".join(bad)) if bad or not workers
                  else passed(name, Where.real, f"{len(workers)} workers"))
    name = "pod network: a pod on each worker gets an IP in its pod CIDR and reaches the pods on every other worker"
    bad = []
    for worker in spec.workers:
        got = nodes.get(worker.short_name, {})
        ip = got.get("pod_ip")
        if not ip:
            bad.append(f"{worker.short_name}: no pod IP ({got.get('pod_error', 'not run')})")
        elif ip_address(ip) not in worker.pod_cidr:
            bad.append(f"{worker.short_name}: pod IP {ip} outside {worker.pod_cidr}")
        unreachable = pods.get(worker.short_name, {}).get("unreachable", [])
        if unreachable:
            bad.append(f"{worker.short_name} cannot reach {', '.join(unreachable)}")
    checks.append(failed(name, Where.real, "; ".join(bad)) if bad
                  else passed(name, Where.real, f"{len(spec.workers)} pods, {len(spec.workers) * (len(spec.workers) - 1)} paths"))
    return checks


def smoke_phase(spec: ClusterSpec, api_endpoint: str) -> list[Check]:
    """Every check, each with where it ran; publishes the report; raises when any check failed."""
    from prefect.artifacts import create_markdown_artifact

    from groundup.distribution import NodesFailed

    logger = get_run_logger()
    timeout = min(boot_timeout_for(spec), 60.0)
    api = smoke_api.submit(spec)
    failures: dict[str, str] = {}
    addresses: dict[str, tuple[str, str, str | None]] = {}

    def submit(node: Node, address: str, instance_id: str | None):
        addresses[node.short_name] = (node.short_name, address, instance_id)
        return smoke_node.submit(spec, node.short_name, address, instance_id, api_endpoint, timeout)

    try:
        _, nodes = fan_out(spec, "smoke-nodes", spec.nodes, submit)
    except NodesFailed as exc:
        nodes = {}
        failures = exc.group.failed
    peers = {name: n["pod_ip"] for name, n in nodes.items() if n.get("pod_ip")}
    pods: dict[str, dict] = {}
    if peers:
        try:
            _, pods = fan_out(spec, "smoke-pod-network", [w for w in spec.workers if w.short_name in peers],
                              lambda node, address, instance_id: smoke_pod_network.submit(
                                  spec, node.short_name, address, instance_id, nodes[node.short_name]["pod"], peers,
                                  timeout))
        except NodesFailed as exc:
            failures.update({f"pod network {k}": v for k, v in exc.group.failed.items()})
    with_pods = [w for w in spec.workers if nodes.get(w.short_name, {}).get("pod")]
    if with_pods:
        try:
            fan_out(spec, "smoke-remove-pod", with_pods,
                    lambda node, address, instance_id: smoke_remove_pod.submit(
                        spec, node.short_name, address, instance_id, nodes[node.short_name]["pod"], timeout))
        except NodesFailed as exc:  # a pod left behind is removed by the next smoke test
            logger.warning("smoke pods not removed (the next smoke test removes them): %s", exc)
    api_result = api.result()
    checks = [Check.from_dict(c) for c in api_result["checks"]]
    checks += node_checks(spec, nodes, api_result, pods, failures)
    if spec.masters[0].short_name not in addresses:
        checks.append(failed("checks through the API (Secret in etcd, nodes, RBAC, leases, workloads)", Where.real,
                             f"{spec.masters[0].short_name} is unreachable"))
    else:
        checks += [Check.from_dict(c) for c in smoke_kubernetes_api.submit(
            spec, addresses[spec.masters[0].short_name],
            addresses.get(spec.workers[0].short_name) if spec.workers else None).result()]
    report = smoke.report_markdown(spec, checks, f"https://{api_endpoint}:6443")
    try:
        create_markdown_artifact(key=f"smoke-{spec.name}".lower(), markdown=report,
                                 description=f"smoke test of {spec.name}")
    except Exception as exc:  # the report is not the reason the phase fails
        logger.warning("could not publish the smoke report: %s", exc)
    logger.info("smoke test of %s:\n%s", spec.name, smoke.report_table(checks))
    bad = smoke.failures(checks)
    if bad:
        raise SmokeFailed(spec, bad, checks)
    return checks


class SmokeFailed(RuntimeError):
    """At least one smoke check failed; the message names each with its node and reason."""

    def __init__(self, spec: ClusterSpec, checks: list[Check], all_checks: list[Check] | None = None) -> None:
        lines = "\n".join(f"  {c.name}: {c.detail}" for c in checks)
        super().__init__(f"smoke test of {spec.name}: {len(checks)} checks failed:\n{lines}")
        self.checks = checks
        self.all_checks = all_checks if all_checks is not None else checks

