"""On the sandbox: nodes reachable with pinned host keys, build through distribution, exact file sets,
idempotent re-runs, changed host keys refused, one unreachable node failing alone and healing on retry.

The tests run in order and share the sandbox and the built cluster.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

from groundup.distribution import remote_dirs
from groundup.spec import load_spec
from groundup.ssh import parse_public_key
from tests.e2e.conftest import REPO, SPEC, Sandbox

pytestmark = pytest.mark.e2e


def _presented_host_key(address: str) -> paramiko.PKey:
    sock = socket.create_connection((address, 22), timeout=10)
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=10)
        return transport.get_remote_server_key()
    finally:
        transport.close()


def _ec2(sandbox: Sandbox):
    import boto3

    return boto3.client("ec2", endpoint_url=sandbox.env["AWS_ENDPOINT_URL"], region_name=sandbox.env["AWS_DEFAULT_REGION"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def _wait_nodes_gone(sandbox: Sandbox, ips: set[str], timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while ips & set(sandbox.nodes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ips & set(sandbox.nodes()), f"nodes still there: {ips & set(sandbox.nodes())}"


@pytest.fixture(scope="module")
def built(sandbox: Sandbox, tmp_path_factory) -> Path:
    """Fresh nodes (the cluster's instances terminated, as a rebuild does), then network, compute, pki,
    distribute once; export the SSH key and the expected files."""
    ips = {str(n.private_ip) for n in load_spec(SPEC).nodes}
    ec2 = _ec2(sandbox)
    pages = ec2.get_paginator("describe_instances").paginate()  # moto pages at 100 instances, terminated ones too
    live = [i["InstanceId"] for page in pages for r in page["Reservations"] for i in r["Instances"]
            if i.get("PrivateIpAddress") in ips and i["State"]["Name"] not in ("shutting-down", "terminated")]
    if live:
        ec2.terminate_instances(InstanceIds=live)
    _wait_nodes_gone(sandbox, ips)
    result = sandbox.groundup("demo", str(SPEC), "--phases", "network,compute,pki,distribute")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "build-cluster/groundup-sandbox (network, compute, pki, distribute): Completed" in result.stdout
    out = tmp_path_factory.mktemp("inspect")
    helper = subprocess.run([sys.executable, "-m", "tests.e2e.helpers", str(SPEC), str(out)], cwd=REPO,
                            env=sandbox.env, capture_output=True, text=True, timeout=300)
    assert helper.returncode == 0, helper.stderr[-3000:]
    return out


def _cluster_nodes(sandbox: Sandbox) -> list[dict]:
    """The spec's nodes with the sandbox node playing each one's instance."""
    return [{**sandbox.node(n.short_name), "short_name": n.short_name, "role": n.role.value}
            for n in load_spec(SPEC).nodes]


def _ssh(sandbox: Sandbox, inspect: Path, address: str, command: str) -> subprocess.CompletedProcess:
    """OpenSSH's client, strict host key checking against the sandbox's own known_hosts (not the product's pins)."""
    return subprocess.run(
        ["ssh", "-i", str(inspect / "id_rsa"), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={sandbox.state / 'known_hosts'}", "-o", "ConnectTimeout=10",
         f"root@{address}", command],
        capture_output=True, text=True, timeout=60,
    )


def _remote_files(sandbox: Sandbox, inspect: Path, address: str) -> dict[str, list]:
    dirs = " ".join(remote_dirs())
    result = _ssh(sandbox, inspect, address,
                  f"for f in $(find {dirs} -type f 2>/dev/null); do "
                  "echo \"$(stat -c '%a %U %G %i %Y' $f) $(sha256sum $f)\"; done")
    assert result.returncode == 0, result.stderr
    files = {}
    for line in result.stdout.splitlines():
        mode, user, group, inode, mtime, digest, path = line.split()
        files[path] = [int(mode, 8), user, group, digest, inode, mtime]
    return files


def test_every_instance_booted_a_node_whose_sshd_presents_the_key_of_its_console_output(
        sandbox: Sandbox, built: Path) -> None:
    import boto3

    from groundup.hostkeys import parse_console_host_keys

    nodes = _cluster_nodes(sandbox)
    assert len(nodes) == 6
    ec2 = boto3.client("ec2", endpoint_url=sandbox.env["AWS_ENDPOINT_URL"], region_name=sandbox.env["AWS_DEFAULT_REGION"],
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    for node in nodes:
        presented = _presented_host_key(node["private_ip"])
        console = ec2.get_console_output(InstanceId=node["instance_id"])["Output"]
        assert [presented] == [parse_public_key(k) for k in parse_console_host_keys(console)], node["short_name"]
        assert presented == parse_public_key(node["host_key"]), node["short_name"]
        assert sandbox.node_exec(node["short_name"], "systemctl", "is-system-running").stdout.strip() in (
            "running", "degraded")


def test_every_node_has_exactly_its_role_files_with_modes_and_checksums(sandbox: Sandbox, built: Path) -> None:
    expected = json.loads((built / "expected.json").read_text())
    for node in _cluster_nodes(sandbox):
        actual = _remote_files(sandbox, built, node["private_ip"])
        want = expected[node["short_name"]]
        assert sorted(actual) == sorted(want), node["short_name"]
        for path, (mode, digest) in want.items():
            assert actual[path][:4] == [mode, "root", "root", digest], (node["short_name"], path)
            if path.endswith(("-key.pem", "kubeconfig", ".kubeconfig", "encryption-config.yaml")):
                assert mode == 0o600, path
    masters = {n["short_name"]: n for n in _cluster_nodes(sandbox) if n["role"] == "master"}
    assert "/var/lib/kubernetes/encryption-config.yaml" in expected["master-0"]
    assert "/var/lib/kubelet/kubeconfig" in expected["worker-0"] and len(masters) == 3


def test_a_rerun_uploads_nothing(sandbox: Sandbox, built: Path) -> None:
    before = {n["short_name"]: _remote_files(sandbox, built, n["private_ip"]) for n in _cluster_nodes(sandbox)}
    result = sandbox.groundup("demo", "--in-process", str(SPEC), "--phases", "distribute")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert output.count(" 0 uploaded, 0 fixed") == 6, output[-3000:]
    after = {n["short_name"]: _remote_files(sandbox, built, n["private_ip"]) for n in _cluster_nodes(sandbox)}
    assert after == before


def test_a_changed_host_key_is_refused_and_only_that_node_fails(sandbox: Sandbox, built: Path) -> None:
    from sandbox.nodes import new_host_key

    node = sandbox.node("worker-2")
    key = Path(node["root"]) / "etc/ssh/ssh_host_ed25519_key"
    original = (key.read_bytes(), key.with_suffix(".pub").read_bytes())
    private, public = new_host_key()
    try:
        key.write_bytes(private)
        key.with_suffix(".pub").write_text(public + "\n")
        assert sandbox.node_exec("worker-2", "systemctl", "restart", "ssh").returncode == 0
        result = sandbox.groundup("demo", "--in-process", str(SPEC), "--phases", "distribute",
                                  extra_env={"GROUNDUP_SSH_BOOT_TIMEOUT": "10"})
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert "distribution: 5 of 6 nodes ok" in output, output[-3000:]
        assert "host key of worker-2 (10.240.0.22) changed" in output
    finally:
        key.write_bytes(original[0])
        key.with_suffix(".pub").write_bytes(original[1])
        sandbox.node_exec("worker-2", "systemctl", "restart", "ssh")


def test_sshd_down_on_one_node_fails_that_node_only_and_a_retry_completes_it(
        sandbox: Sandbox, built: Path) -> None:
    worker, master = sandbox.node("worker-1"), sandbox.node("master-1")
    assert _ssh(sandbox, built, worker["private_ip"], "rm /var/lib/kube-proxy/kubeconfig").returncode == 0
    assert _ssh(sandbox, built, master["private_ip"], "rm /var/lib/kubernetes/ca.pem").returncode == 0
    stopped = sandbox.node_exec("worker-1", "systemctl", "stop", "ssh.service", "ssh.socket")
    assert stopped.returncode == 0, stopped.stderr
    try:
        result = sandbox.groundup("demo", "--in-process", str(SPEC), "--phases", "distribute",
                                  extra_env={"GROUNDUP_SSH_BOOT_TIMEOUT": "5"})
        output = result.stdout + result.stderr
        assert result.returncode != 0
        assert "distribution: 5 of 6 nodes ok" in output, output[-3000:]
        assert "worker-1: ConnectionError: cannot reach worker-1 at 10.240.0.21:22" in output
        assert "master-1 (10.240.0.11): 1 uploaded" in output
    finally:
        sandbox.node_exec("worker-1", "systemctl", "start", "ssh.service")
    retry = sandbox.groundup("demo", "--in-process", str(SPEC), "--phases", "distribute")
    output = retry.stdout + retry.stderr
    assert retry.returncode == 0, output[-3000:]
    assert "worker-1 (10.240.0.21): 1 uploaded" in output
    assert "master-1 (10.240.0.11): 0 uploaded" in output
    expected = json.loads((built / "expected.json").read_text())
    actual = _remote_files(sandbox, built, worker["private_ip"])
    assert sorted(actual) == sorted(expected["worker-1"])


def test_a_terminated_node_is_relaunched_by_a_rerun_with_new_host_keys_read_from_the_console(
        sandbox: Sandbox, built: Path) -> None:
    old = sandbox.node("worker-2")
    old_key = _presented_host_key(old["private_ip"])
    _ec2(sandbox).terminate_instances(InstanceIds=[old["instance_id"]])
    _wait_nodes_gone(sandbox, {old["private_ip"]})

    result = sandbox.groundup("demo", "--in-process", str(SPEC), "--phases", "network,compute,pki,distribute")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    new = sandbox.node("worker-2")
    assert new["instance_id"] != old["instance_id"]
    assert _presented_host_key(new["private_ip"]) != old_key
    assert "HostKeyChanged" not in output
    expected = json.loads((built / "expected.json").read_text())
    assert f"worker-2 ({new['private_ip']}): {len(expected['worker-2'])} uploaded" in output, output[-3000:]
    actual = _remote_files(sandbox, built, new["private_ip"])
    assert sorted(actual) == sorted(expected["worker-2"])
