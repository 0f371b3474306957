"""The command line in process: arguments and specs refused before Prefect or AWS, exit codes, no tracebacks."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from groundup import cli

ROOT = Path(__file__).resolve().parents[2]
SEED = str(ROOT / "clusters/seed.yaml")
QUIET_CONSOLE_TRACEBACKS = cli.quiet_console_tracebacks


@pytest.fixture(autouse=True)
def no_aws_no_prefect(monkeypatch):
    """Any attempt to reach AWS or start a flow fails the test: these checks must come first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("reached AWS or Prefect")

    monkeypatch.setattr("groundup.preflight.preflight", forbidden)
    monkeypatch.setattr(cli, "prepare_prefect", forbidden)
    monkeypatch.setattr(cli, "check_prefect_server", lambda: None)
    monkeypatch.setattr(cli, "quiet_console_tracebacks", lambda: None)  # process-wide: tested on its own


def run(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["build", SEED, "--phases", "network,bogus"], "unknown bogus"),
        (["build", SEED, "--phases", ""], "none given"),
        (["build", SEED, "--phases", " , "], "none given"),
        (["kubeconfig", SEED, "-o", "/no/such/dir/kc"], "directory /no/such/dir does not exist"),
        (["kubeconfig", SEED, "-o", ""], "empty path"),
        (["deploy", SEED, "--nightly", "nightly"], "5 fields"),
        (["validate"], "spec"),
        (["launch", SEED], "invalid choice"),
    ],
    ids=["unknown-phase", "empty-phases", "blank-phases", "missing-output-dir", "empty-output", "bad-cron",
         "no-spec", "unknown-command"],
)
def test_bad_arguments_exit_2_before_prefect_or_aws(capsys, argv, expected):
    code, output = run(capsys, *argv)
    assert code == 2 and expected in output and "Traceback" not in output


def test_output_that_is_a_directory_is_refused(capsys, tmp_path):
    code, output = run(capsys, "kubeconfig", SEED, "-o", str(tmp_path))
    assert code == 2 and "is a directory" in output


def test_output_under_a_file_is_refused(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, output = run(capsys, "kubeconfig", SEED, "-o", str(blocker / "kc"))
    assert code == 2 and "not a directory" in output


def test_spec_error_names_the_file_once(capsys, tmp_path):
    spec = tmp_path / "dup.yaml"
    spec.write_text("name: one\nname: two\n")
    code, output = run(capsys, "plan", str(spec))
    assert code == 2
    assert output.count(str(spec)) == 1 and "duplicate key 'name'" in output


def test_phases_are_parsed_in_build_order():
    assert cli.phases_argument("pki,network") == ["network", "pki"]


def test_validate_needs_neither_aws_nor_prefect(capsys):
    code, output = run(capsys, "validate", SEED)
    assert code == 0 and "valid (3 masters, 3 workers in us-east-2)" in output


def test_unexpected_error_is_one_line_without_traceback_and_debug_shows_it(capsys, monkeypatch):
    def broken(spec, args):
        raise ValueError("the disk is full")

    monkeypatch.setitem(cli.COMMANDS, "validate", cli.Command("validate", "x", broken, uses_prefect=False))
    code, output = run(capsys, "validate", SEED)
    assert code == 1 and "ValueError: the disk is full" in output and "--debug" in output
    with pytest.raises(ValueError, match="the disk is full"):
        cli.main(["validate", "--debug", SEED])


def test_a_command_is_added_by_registering_it(capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))
    seen = []
    cli.command("greet", "say hello", uses_prefect=False)(lambda spec, args: seen.append(spec.name) or 0)
    code, _ = run(capsys, "greet", SEED)
    assert code == 0 and seen == ["k8s-cluster-from-ground-up"]


def test_console_logs_drop_tracebacks_but_keep_the_message(monkeypatch):
    monkeypatch.setattr(logging.StreamHandler, "format", logging.Handler.format)
    monkeypatch.setattr(logging.StreamHandler, "_groundup_quiet", False, raising=False)
    QUIET_CONSOLE_TRACEBACKS()
    handler = logging.StreamHandler(sys.stderr)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "step failed", None, sys.exc_info())
    assert handler.format(record) == "step failed"
    assert record.exc_info is not None, "other handlers (Prefect's API log) still get the traceback"


def test_ephemeral_server_gets_a_generous_startup_timeout_unless_set():
    import os
    import subprocess

    probe = "import os, groundup.cli; print(os.environ['PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS'])"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    default = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert float(default.stdout) >= 120
    chosen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            env={**env, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "7"})
    assert chosen.stdout.strip() == "7"
