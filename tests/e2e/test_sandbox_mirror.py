"""The release mirror on the bridge: a node runs the product's download-verify-install script
(groundup/node_scripts/install_releases.py) against http://10.240.0.1:8080 and installs every
artifact of its role; against a copy of the mirror with one artifact tampered, that artifact's
checksum fails and nothing of it is installed; a version the mirror lacks is named with the ones it has.

Uses address .80 of the sandbox subnet."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from groundup.releases import node_release_manifest
from groundup.spec import load_spec
from tests.e2e.conftest import REPO, SPEC, Sandbox
from tests.e2e.test_sandbox_lifecycle import Cloud, sshd_answers, wait_for

pytestmark = pytest.mark.e2e
NODE = "10.240.0.80"
SCRIPT = REPO / "groundup" / "node_scripts" / "install_releases.py"


@pytest.fixture(scope="module")
def node(sandbox: Sandbox):
    cloud = Cloud(sandbox)
    cloud.clear(NODE)
    cloud.launch(NODE)
    try:
        wait_for(lambda: sshd_answers(NODE), 60, f"sshd on {NODE}")
        root = Path(sandbox.node(NODE)["root"])
        shutil.copy(SCRIPT, root / "root/install_releases.py")
        yield root
    finally:
        cloud.terminate_all()


def install(sandbox: Sandbox, root: Path, manifest: dict, name: str) -> tuple[subprocess.CompletedProcess, dict]:
    (root / f"root/{name}.json").write_text(json.dumps(manifest))
    result = sandbox.node_exec(NODE, "python3", "/root/install_releases.py", f"/root/{name}.json", "--root", f"/srv/{name}")
    return result, json.loads(result.stdout.strip().splitlines()[-1])


def worker_manifest(**changes) -> dict:
    spec = load_spec(SPEC).model_copy(update=changes)
    return node_release_manifest(spec, spec.workers[0])


def test_a_node_downloads_verifies_and_installs_its_roles_releases_from_the_mirror(sandbox: Sandbox, node: Path) -> None:
    manifest = worker_manifest()
    assert manifest["mirror"] == "http://10.240.0.1:8080" == sandbox.record["mirror"]["url"]
    result, summary = install(sandbox, node, manifest, "good")
    assert result.returncode == 0, result.stderr
    assert sorted(summary["downloaded"]) == sorted(a["artifact"] for a in manifest["artifacts"])
    assert not summary["failed"]
    runc = sandbox.node_exec(NODE, "sh", "-c", "/srv/good/usr/local/sbin/runc --version | head -1")
    assert runc.stdout.startswith(f"runc version {load_spec(SPEC).runc_version}"), runc.stdout + runc.stderr
    kubelet = sandbox.node_exec(NODE, "/srv/good/usr/local/bin/kubelet", "--version")
    assert kubelet.stdout.strip() == f"Kubernetes v{load_spec(SPEC).kubernetes_version}", kubelet.stdout


def test_a_tampered_artifact_fails_its_checksum_and_installs_nothing(sandbox: Sandbox, node: Path, tmp_path) -> None:
    mirror = Path(sandbox.record["mirror"]["root"])
    copy = tmp_path / "mirror"
    subprocess.run(["cp", "-al", str(mirror), str(copy)], check=True)
    runc = next(a for a in worker_manifest()["artifacts"] if a["artifact"] == "runc")
    tampered = copy / runc["url"].split(":8080/", 1)[1]
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.unlink()
    tampered.write_bytes(bytes(data))
    server = subprocess.Popen([sys.executable, "-m", "sandbox.mirror", "serve", "--root", str(copy),
                               "--bind", "10.240.0.1", "--port", "8081"], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        probe = "import urllib.request; urllib.request.urlopen('http://10.240.0.1:8081/index.json', timeout=1)"
        wait_for(lambda: sandbox.node_exec(NODE, "python3", "-c", probe).returncode == 0, 20, "the tampered mirror")
        result, summary = install(sandbox, node, worker_manifest(release_mirror="http://10.240.0.1:8081"), "tampered")
    finally:
        server.terminate()
        server.wait(10)
    assert result.returncode == 1
    assert summary["failed"] == ["runc"], summary
    assert "runc" in result.stderr and "sha256" in result.stderr.lower(), result.stderr
    assert sandbox.node_exec(NODE, "test", "-e", "/srv/tampered/usr/local/sbin/runc").returncode == 1
    assert sandbox.node_exec(NODE, "test", "-x", "/srv/tampered/usr/local/bin/containerd").returncode == 0


def test_a_version_the_mirror_lacks_is_named_with_the_versions_it_has(sandbox: Sandbox, node: Path) -> None:
    result, summary = install(sandbox, node, worker_manifest(runc_version="9.9.9"), "missing")
    assert result.returncode == 1 and summary["failed"] == ["runc"]
    assert "9.9.9" in result.stderr and load_spec(SPEC).runc_version in result.stderr, result.stderr
