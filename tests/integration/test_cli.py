"""The `groundup` command as a user runs it, against the moto server (and the test Prefect server)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.awsprobe import owned

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
GROUNDUP = str(Path(sys.executable).with_name("groundup"))
USER_GROUNDUP = str(ROOT / ".venv" / "bin" / "groundup")
UNREACHABLE = "http://127.0.0.1:9"


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


# --- as a new user: an empty HOME, no GROUNDUP_*/AWS_*/PREFECT_* settings but the ones given ---------

STRIPPED_PREFIXES = ("GROUNDUP_", "AWS_", "PREFECT_")


def new_user_env(home: Path, **settings: str | None) -> dict[str, str]:
    """The environment of someone who just installed groundup: only `settings` (None removes one).

    The instance metadata service is switched off: tests never contact anything outside 127.0.0.0/8.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(STRIPPED_PREFIXES)}
    env.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true")
    for name, value in settings.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def moto_user(endpoint: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ENDPOINT_URL": endpoint}


def run_as_user(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([USER_GROUNDUP, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                            env=env, stdin=subprocess.DEVNULL)
    return result, time.monotonic() - started


def test_first_run_on_an_empty_home_without_a_prefect_server(tmp_path, aws):
    """plan, build and teardown with only AWS credentials: the temporary Prefect server and every default path."""
    home = tmp_path / "home"
    home.mkdir()
    env = new_user_env(home, **moto_user(aws))
    plan, _ = run_as_user(["plan", "clusters/seed.yaml"], env)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "AWS account 123456789012" in plan.stderr and "create   vpc" in plan.stdout
    built, _ = run_as_user(["build", "clusters/seed.yaml", "--phases", "network,compute"], env)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "Traceback" not in built.stderr
    assert len(owned("k8s-cluster-from-ground-up")["instances"]) == 6
    store = home / ".groundup" / "artifacts"
    for directory in (home / ".groundup", store, store / "k8s-cluster-from-ground-up"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert (store / "k8s-cluster-from-ground-up" / "ssh" / "k8s-cluster-from-ground-up.id_rsa").is_file()
    gone, _ = run_as_user(["teardown", "clusters/seed.yaml"], env)
    assert gone.returncode == 0, gone.stderr[-3000:]
    assert owned("k8s-cluster-from-ground-up") == {}


def test_endpoint_dropped_during_a_run_fails_in_bounded_time_naming_the_step(tmp_path, aws, prefect_harness):
    """Preflight passes (STS, EC2 answer); the load balancer API is gone: those steps fail, the run says which."""
    from prefect.settings import PREFECT_API_URL

    from groundup.aws.core import endpoint_retry_budget_s

    spec = tmp_path / "dropped.yaml"
    spec.write_text("name: dropped-endpoint\n")
    home = tmp_path / "home"
    home.mkdir()
    env = new_user_env(home, **moto_user(aws), PREFECT_API_URL=PREFECT_API_URL.value(),
                       AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2=UNREACHABLE)
    result, elapsed = run_as_user(["build", str(spec), "--phases", "network"], env)
    assert result.returncode == 1
    summary = result.stderr[result.stderr.index("groundup: build-cluster"):]
    assert "load-balancer:" in summary and "EndpointConnectionError" in summary and "127.0.0.1:9" in summary
    assert "/runs/flow-run/" in summary, "the run's URL on the Prefect server"
    assert "Traceback" not in result.stderr
    assert elapsed < 2 * endpoint_retry_budget_s() + 60


def test_debug_shows_the_traceback(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = new_user_env(home, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_ENDPOINT_URL=UNREACHABLE)
    quiet, _ = run_as_user(["plan", "clusters/seed.yaml"], env)
    loud, _ = run_as_user(["--debug", "plan", "clusters/seed.yaml"], env)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr and "does not answer" in quiet.stderr
    assert loud.returncode != 0 and "Traceback" in loud.stderr and "does not answer" in loud.stderr
