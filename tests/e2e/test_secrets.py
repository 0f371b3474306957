"""No secret leaks: after a whole build (in process, then as a deployment run on the sandbox's worker), no
private key, encryption key, kubeconfig credential or store passphrase appears in Prefect's logs, results,
artifacts, flow-run parameters or database, in the sandbox's log files, or in any node's process list;
nor in the nodes' journals and log files; every key file on a node is owner-only; the artifact store
keeps keys encrypted at rest.

The secrets are collected independently of the flows: the passphrase from the Prefect API, every key and
secret file by walking the artifact store's directory and decrypting with the store's reader.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from groundup.spec import load_spec
from sandbox.cli import DEMO_PHASES
from tests.e2e.conftest import REPO, SPEC, Sandbox
from tests.ui.stack import wait_flow_run
from tests.e2e.secrets_scan import (Finding, Scanner, Secret, encryption_key_secret, kubeconfig_secrets,
                                    private_key_secret, redacted, report, value_secret)

CLUSTER = load_spec(SPEC)
PASSPHRASE_BLOCK = "groundup-artifacts-passphrase"
STORE_MAGIC = b"groundup-encrypted-v1\n"
"""How the store begins a file it encrypted whole: this line, a 16-byte scrypt salt, a Fernet token."""
SANDBOX_SKIP = ("nodes", "rootfs", "mirror")
"""Under the sandbox's state directory: node disks (keys belong there), the base image, release binaries."""

MASTER_KEY_FILES = ["/var/lib/kubernetes/ca-key.pem", "/var/lib/kubernetes/master-kubernetes-key.pem",
                    "/var/lib/kubernetes/service-account-key.pem", "/var/lib/kubernetes/encryption-config.yaml",
                    "/var/lib/kubernetes/kube-controller-manager.kubeconfig",
                    "/var/lib/kubernetes/kube-scheduler.kubeconfig", "/var/lib/kubernetes/admin.kubeconfig",
                    "/etc/etcd/etcd-{node.short_name}-key.pem"]
WORKER_KEY_FILES = ["/var/lib/kubelet/{node.name}-key.pem", "/var/lib/kubelet/kubeconfig",
                    "/var/lib/kube-proxy/kubeconfig"]
"""The key files of docs/node-layout.md, per role."""
KEY_MARKERS = r"PRIVATE KEY-----|client-key-data|kind: EncryptionConfiguration"
KEY_SEARCH_DIRS = ["/etc", "/var/lib", "/root", "/home", "/tmp", "/var/tmp", "/run", "/srv", "/opt"]


def groundup(sandbox: Sandbox, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "groundup.cli", *args], cwd=REPO, env=sandbox.env,
                          capture_output=True, text=True, timeout=timeout)


class ProcessLists:
    """`ps -eo args` of every node and of the host, sampled while the builds run: each distinct line kept."""

    def __init__(self, sandbox: Sandbox, interval: float = 1.0) -> None:
        self.sandbox = sandbox
        self.interval = interval
        self.lines: dict[str, set[str]] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessLists:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        nodes = {n["private_ip"]: n for n in self.sandbox.nodes().values()}
        for node in CLUSTER.nodes:
            if str(node.private_ip) not in nodes:
                continue
            try:
                out = self.sandbox.node_exec(str(node.private_ip), "ps", "-eo", "args").stdout
            except (subprocess.SubprocessError, KeyError, OSError, RuntimeError):
                continue  # the node is (re)booting
            self.lines.setdefault(f"ps on {node.short_name}", set()).update(out.splitlines())
        host = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        self.lines.setdefault("ps on the host", set()).update(host.splitlines())
        self.samples += 1


def _api(sandbox: Sandbox) -> httpx.Client:
    return httpx.Client(base_url=sandbox.env["PREFECT_API_URL"], timeout=60)


@pytest.fixture(scope="module")
def built(sandbox: Sandbox):
    """The whole build in process, then once more as the build-cluster deployment on the worker; torn down after."""
    api = _api(sandbox)
    try:
        with ProcessLists(sandbox) as processes:
            result = groundup(sandbox, "build", str(SPEC))
            assert result.returncode == 0, redacted(result.stdout[-3000:] + result.stderr[-3000:])
            deployed = groundup(sandbox, "deploy", str(SPEC), timeout=300)
            assert deployed.returncode == 0, redacted(deployed.stderr[-3000:])
            deployment = api.get(f"/deployments/name/build-cluster/{CLUSTER.name}").raise_for_status().json()
            spec = yaml.safe_load(SPEC.read_text())
            run = api.post(f"/deployments/{deployment['id']}/create_flow_run",
                           json={"parameters": {"spec": spec, "phases": DEMO_PHASES}}).raise_for_status().json()
            finished = wait_flow_run(api, run["id"], timeout=600)
            assert finished["state_type"] == "COMPLETED", redacted(json.dumps(finished["state"]))
        outputs = {"output of groundup build": result.stdout + result.stderr,
                   "output of groundup deploy": deployed.stdout + deployed.stderr}
        yield {"sandbox": sandbox, "processes": processes, "deployment_run": run["id"], "outputs": outputs}
    finally:
        down = groundup(sandbox, "teardown", str(SPEC), timeout=600)
        assert down.returncode == 0, redacted(down.stdout[-3000:] + down.stderr[-3000:])


@pytest.fixture(scope="module")
def secrets(built) -> dict:
    """Every secret of the cluster, by name, read from the artifact store and the Prefect API."""
    from blocks.artifact_store import ArtifactStore, is_encrypted
    from prefect.filesystems import LocalFileSystem

    sandbox = built["sandbox"]
    block = _api(sandbox).get(f"/block_types/slug/secret/block_documents/name/{PASSPHRASE_BLOCK}",
                              params={"include_secrets": True}).raise_for_status().json()
    passphrase = block["data"]["value"]
    base = Path(sandbox.env["GROUNDUP_ARTIFACTS"])
    store = ArtifactStore(LocalFileSystem(basepath=str(base)), CLUSTER.name, passphrase.encode())
    found = [value_secret(f"artifact-store passphrase (Secret block {PASSPHRASE_BLOCK})", passphrase)]
    kinds: dict[str, list[str]] = {"private key": [], "kubeconfig": [], "encryption config": []}
    salts: dict[bytes, tuple[str, bytes]] = {}
    for path in sorted((base / CLUSTER.name).rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(base / CLUSTER.name).as_posix()
        raw = path.read_bytes()
        if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in raw:
            found.append(private_key_secret(f"private key {rel}", store.read_private_key(rel)))
            kinds["private key"].append(rel)
        elif is_encrypted(raw):
            plain = store.read(rel)
            document = yaml.safe_load(plain)
            if isinstance(document, dict) and document.get("kind") == "Config":
                found += kubeconfig_secrets(f"kubeconfig {rel}", plain)
                kinds["kubeconfig"].append(rel)
            elif isinstance(document, dict) and document.get("kind") == "EncryptionConfiguration":
                for resource in document["resources"]:
                    for provider in resource["providers"]:
                        for key in (provider.get("aescbc") or {}).get("keys", []):
                            found.append(encryption_key_secret(f"encryption key {key['name']} of {rel}",
                                                               key["secret"]))
                kinds["encryption config"].append(rel)
            else:
                found.append(value_secret(f"encrypted artifact {rel}", plain))
            salts.setdefault(raw[len(STORE_MAGIC):len(STORE_MAGIC) + 16], (rel, raw))
    for salt, (rel, blob) in salts.items():
        found.append(_file_key_secret(passphrase.encode(), salt, rel, blob))
    kinds["file key"] = sorted(rel for rel, _ in salts.values())
    return {"scanner": Scanner(found), "kinds": kinds, "base": base}


def _file_key_secret(passphrase: bytes, salt: bytes, rel: str, blob: bytes) -> Secret:
    """The Fernet key the store derived (scrypt of the passphrase and the file's salt) to encrypt `rel`:
    proven right by decrypting the file with it."""
    import base64

    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    raw = Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(passphrase)
    key = base64.urlsafe_b64encode(raw)
    Fernet(key).decrypt(blob[len(STORE_MAGIC) + 16:])
    name = f"artifact-store file key (scrypt of the passphrase with the salt of {rel})"
    return Secret(name, frozenset({key, base64.b64encode(raw), raw.hex().encode(), raw}))


def _fail_on(findings: list[Finding], what: str) -> None:
    assert not findings, f"secrets found in {what} (where: which secret):\n{report(findings)}"


def test_the_collected_secrets_are_the_cluster_s_and_the_scanner_finds_them_on_the_nodes(built, secrets):
    """Not vacuous: every kind of secret was collected, and the very files on the nodes are recognised."""
    kinds = secrets["kinds"]
    workers = [n.name for n in CLUSTER.workers]
    assert {"pki/ca-key.pem", "pki/service-account-key.pem", f"ssh/{CLUSTER.name}.id_rsa"} <= set(kinds["private key"])
    assert {f"kubeconfigs/{w}.kubeconfig" for w in workers} <= set(kinds["kubeconfig"]), kinds
    assert kinds["encryption config"] == ["encryption-config.yaml"]
    assert kinds["file key"], "no whole-file encrypted artifact, so no derived store key to look for"
    scanner: Scanner = secrets["scanner"]
    master, worker = CLUSTER.masters[0], CLUSTER.workers[0]
    expected = {(master, "/var/lib/kubernetes/ca-key.pem"): ("private key pki/ca-key.pem", ""),
                (master, "/var/lib/kubernetes/encryption-config.yaml"):
                    ("encryption key key1 of encryption-config.yaml", ""),
                (worker, "/var/lib/kubelet/kubeconfig"):
                    (f"kubeconfig kubeconfigs/{worker.name}.kubeconfig user ", " client-key-data")}
    for (node, path), (start, end) in expected.items():
        content = built["sandbox"].node_exec(node.short_name, "cat", path).stdout
        found = {f.secret for f in scanner.scan(path, content)}
        assert any(name.startswith(start) and name.endswith(end) for name in found), (node.short_name, path, found)


def test_no_secret_in_prefect_logs_artifacts_parameters_or_states(built, secrets):
    scanner: Scanner = secrets["scanner"]
    api = _api(built["sandbox"])
    findings: list[Finding] = []
    logs = 0
    offset = 0
    while True:
        page = api.post("/logs/filter", json={"limit": 200, "offset": offset, "sort": "TIMESTAMP_ASC"}
                        ).raise_for_status().json()
        for log in page:
            findings += scanner.scan(f"Prefect log line ({log['name']}, {log['timestamp']}, flow run "
                                     f"{log['flow_run_id']}, task run {log['task_run_id']})", json.dumps(log))
        logs += len(page)
        offset += len(page)
        if len(page) < 200:
            break
    assert logs > 100, f"only {logs} log lines: did the builds log through Prefect?"
    artifacts = api.post("/artifacts/filter", json={"limit": 200}).raise_for_status().json()
    assert any(a.get("key") == f"build-{CLUSTER.name}" for a in artifacts), [a.get("key") for a in artifacts]
    for artifact in artifacts:
        findings += scanner.scan(f"Prefect artifact {artifact.get('key') or artifact['id']}", json.dumps(artifact))
    runs = _all(api, "/flow_runs/filter")
    assert built["deployment_run"] in {r["id"] for r in runs}
    for run in runs:
        findings += scanner.scan(f"flow run {run['name']} (parameters, state)", json.dumps(run))
        states = api.get("/flow_run_states/", params={"flow_run_id": run["id"]}).raise_for_status().json()
        findings += scanner.scan(f"flow run {run['name']} state history", json.dumps(states))
    for task_run in _all(api, "/task_runs/filter"):
        findings += scanner.scan(f"task run {task_run['name']} (state, result reference)", json.dumps(task_run))
    for path in ("/deployments/filter", "/block_documents/filter", "/variables/filter"):
        for item in _all(api, path):
            findings += scanner.scan(f"Prefect {path.split('/')[1]} {item.get('name')}", json.dumps(item))
    _fail_on(findings, "the Prefect API")


def _all(api: httpx.Client, path: str) -> list[dict]:
    items: list[dict] = []
    while True:
        page = api.post(path, json={"limit": 200, "offset": len(items)}).raise_for_status().json()
        items += page
        if len(page) < 200:
            return items


def test_no_secret_in_the_prefect_database_results_or_log_files(built, secrets):
    """The Prefect server's SQLite files (with the WAL), the persisted task results, every log file."""
    state = built["sandbox"].state
    database = state / "prefect" / "prefect.db"
    assert database.stat().st_size > 0
    results = [d for d in (state / "prefect" / "storage", secrets["base"] / "prefect-results") if d.is_dir()]
    assert results and any(any(d.iterdir()) for d in results), "no persisted task results to scan"
    findings, files = secrets["scanner"].scan_tree(state, exclude=[state / d for d in SANDBOX_SKIP]
                                                   + [secrets["base"] / CLUSTER.name])
    assert files > 10
    _fail_on(findings, f"the files under {state} (Prefect database, results, logs)")


def test_no_secret_in_any_process_list(built, secrets):
    processes: ProcessLists = built["processes"]
    assert processes.samples >= 3 and len(processes.lines) == len(CLUSTER.nodes) + 1, processes.lines.keys()
    assert any("kube-apiserver" in line for line in processes.lines[f"ps on {CLUSTER.masters[0].short_name}"])
    findings = [f for where, lines in processes.lines.items()
                for f in secrets["scanner"].scan(where, "\n".join(sorted(lines)))]
    _fail_on(findings, f"the process lists ({processes.samples} samples during the builds)")


def test_no_secret_in_the_command_line_output(built, secrets):
    findings = [f for where, text in built["outputs"].items() for f in secrets["scanner"].scan(where, text)]
    _fail_on(findings, "what the groundup commands printed")


def test_no_secret_in_any_node_log(built, secrets):
    """The nodes' journals (every unit's output) and the files under /var/log (the apiserver's audit log)."""
    sandbox = built["sandbox"]
    findings: list[Finding] = []
    for node in CLUSTER.nodes:
        journal = _node_output(sandbox, node.short_name, "journalctl", "--no-pager", "-q", "-o", "cat")
        assert len(journal) > 1000, f"{node.short_name}: journal of {len(journal)} bytes"
        findings += secrets["scanner"].scan(f"journal of {node.short_name}", journal)
        root = Path(sandbox.node(node.short_name)["root"])
        for path in sorted((root / "var/log").rglob("*")):
            if path.is_file() and not path.is_symlink() and "journal" not in path.relative_to(root).parts:
                findings += secrets["scanner"].scan_file(path, f"{node.short_name}:/{path.relative_to(root)}")
    _fail_on(findings, "the nodes' logs")


def _node_output(sandbox: Sandbox, node: str, *argv: str) -> bytes:
    """A command's stdout inside a node, as bytes."""
    from sandbox.nodes import init_pid

    pid = init_pid(sandbox.node(node)["pid"])
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "-u", "-i", "-n", "-p", "--", *argv],
                          capture_output=True, timeout=120, check=True).stdout


def test_every_key_file_on_a_node_is_owner_only(built):
    sandbox = built["sandbox"]
    wrong = []
    for node in CLUSTER.nodes:
        documented = [p.format(node=node) for p in
                      (MASTER_KEY_FILES if node.role.value == "master" else WORKER_KEY_FILES)]
        found = sandbox.node_exec(node.short_name, "grep", "-rlIE", "-D", "skip", "--exclude-dir=containerd", KEY_MARKERS,
                                  *KEY_SEARCH_DIRS).stdout.split()
        assert set(documented) <= set(found), (node.short_name, set(documented) - set(found))
        keys = sorted(set(found) | {f"/etc/ssh/ssh_host_{t}_key" for t in ("rsa", "ecdsa", "ed25519")})
        stat = sandbox.node_exec(node.short_name, "stat", "-c", "%a %U %n", *keys)
        for line in stat.stdout.splitlines():
            mode, owner, path = line.split(" ", 2)
            if (path in documented and mode != "600") or int(mode, 8) & 0o077 or owner != "root":
                wrong.append(f"{node.short_name}:{path} mode {mode} owner {owner}")
    assert not wrong, "key files readable beyond their owner (want 0600, root):\n" + "\n".join(wrong)


def test_the_artifact_store_keeps_every_key_encrypted_at_rest(secrets):
    base: Path = secrets["base"]
    findings, files = secrets["scanner"].scan_tree(base)
    assert files > 20
    plain = [str(p.relative_to(base)) for p in base.rglob("*-key.pem")
             if b"-----BEGIN ENCRYPTED PRIVATE KEY-----" not in p.read_bytes()]
    assert not plain, f"private keys not passphrase-encrypted in the store: {plain}"
    _fail_on(findings, f"the artifact store {base} (keys must be encrypted at rest)")
