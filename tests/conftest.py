"""Shared fixtures: a real moto server on loopback, one Prefect test harness per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="groundup-tests-"))
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
os.environ["GROUNDUP_ARTIFACTS"] = str(_SESSION_DIR / "artifacts")
os.environ.pop("AWS_PROFILE", None)

import pytest  # noqa: E402

from sandbox.moto import MotoServer, start_moto_server  # noqa: E402

REGION = "us-east-2"


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def moto_server(session_dir: Path):
    """A moto server process on 127.0.0.1 with Ubuntu AMIs, AMI and key-pair validation on."""
    server = start_moto_server(session_dir / "moto", log=session_dir / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def aws(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A clean moto server reached through boto3's standard AWS_ENDPOINT_URL; returns the endpoint."""
    moto_server.reset()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    return moto_server.endpoint


@pytest.fixture
def in_process_aws(monkeypatch: pytest.MonkeyPatch):
    """moto inside this process only (`mock_aws`), whatever endpoint, credentials or config files the shell
    has set (a shell with the sandbox's env would otherwise send these calls to the sandbox's moto)."""
    from moto import mock_aws

    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    with mock_aws():
        yield


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect server for the whole session (it takes ~18 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield
