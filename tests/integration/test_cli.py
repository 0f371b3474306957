"""The `groundup` command as a user runs it, against the moto server (and the test Prefect server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.awsprobe import owned

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
GROUNDUP = str(Path(sys.executable).with_name("groundup"))


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([GROUNDUP, *args], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, **(env or {})})


def test_bad_spec_is_refused_before_any_aws_call(tmp_path, aws):
    bad = tmp_path / "bad.yaml"
    bad.write_text("master_count: 2\nregion: mars-1\n")
    for command in ("validate", "plan", "build", "teardown"):
        result = run(command, str(bad))
        assert result.returncode == 2, command
        assert "master_count" in result.stderr and "region" in result.stderr
    assert owned("k8s-cluster-from-ground-up") == {}


def test_plan_build_plan_teardown(aws, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    env = {"PREFECT_API_URL": PREFECT_API_URL.value()}
    before = run("plan", "clusters/seed.yaml", env=env)
    assert before.returncode == 0, before.stderr
    assert "create   vpc" in before.stdout and "create   instance worker-2" in before.stdout
    built = run("build", "clusters/seed.yaml", "--phases", "network,compute", env=env)
    assert built.returncode == 0, built.stderr[-2000:]
    assert "API endpoint https://k8s-cluster-from-ground-up" in built.stdout
    assert len(owned("k8s-cluster-from-ground-up")["instances"]) == 6
    after = run("plan", "clusters/seed.yaml", env=env)
    aws_changes = [line for line in after.stdout.splitlines() if line.startswith(("create", "modify", "register"))]
    assert aws_changes == [], "AWS matches the spec; only the PKI (not run yet) is left"
    assert "issue" in after.stdout and "pki/ca.pem" in after.stdout
    gone = run("teardown", "clusters/seed.yaml", env=env)
    assert gone.returncode == 0, gone.stderr[-2000:]
    assert owned("k8s-cluster-from-ground-up") == {}
