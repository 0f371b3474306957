"""`groundup`: build, plan, tear down and reach a cluster from the command line.

Honours boto3's standard AWS settings (AWS_ENDPOINT_URL, AWS_PROFILE, ...), so the same
commands run against AWS or the sandbox's moto server. Order of work for every command:
arguments and spec are checked (no Prefect, no AWS), then the AWS preflight for commands that
talk to AWS, then the command. A user error ends with exit code 2 and a message; a failed flow
run with its per-step summary and exit code 1; `--debug` shows tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groundup.phases import BUILD_PHASES, parse_phases
from groundup.spec import ClusterSpec, SpecError, load_spec

EXIT_FAILED = 1
EXIT_USER_ERROR = 2
EPHEMERAL_STARTUP_TIMEOUT_S = "240"
PREFECT_HEALTH_TIMEOUT_S = 5.0
FIRST_RUN_DOC = "docs/first-run.md"

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Without PREFECT_API_URL every command starts a temporary Prefect server; on a busy 2-core
# machine that takes longer than Prefect's default wait.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_TIMEOUT_S)


class UsageError(Exception):
    """A command-line argument or the environment is wrong; the message says which and what to do."""


@dataclass(frozen=True)
class Command:
    """One `groundup` subcommand: its arguments, the checks run before Prefect or AWS, and its action."""

    name: str
    help: str
    run: Callable[[ClusterSpec, argparse.Namespace], int]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    check: Callable[[ClusterSpec, argparse.Namespace], None] = lambda spec, args: None
    talks_to_aws: bool = False
    uses_prefect: bool = True


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, **options: Any) -> Callable:
    """Register a subcommand taking a spec: `@command("smoke", "run the smoke test", talks_to_aws=True)`."""

    def register(run: Callable[[ClusterSpec, argparse.Namespace], int]) -> Callable:
        COMMANDS[name] = Command(name=name, help=help, run=run, **options)
        return run

    return register


# --- argument checks (pure: no Prefect, no AWS) ---------------------------------------------


def phases_argument(value: str) -> list[str]:
    """argparse type for `--phases`: known phase names, in build order."""
    try:
        return parse_phases(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("phases: ")) from None


def check_output_file(value: str | None, what: str) -> Path | None:
    """An output file the user named: its directory must exist and be writable; it must not be a directory."""
    if value is None:
        return None
    if not value.strip():
        raise UsageError(f"{what}: an empty path; give a file name such as ./admin.kubeconfig")
    path = Path(value).expanduser()
    if path.is_dir():
        raise UsageError(f"{what}: {path} is a directory; give a file path such as {path / 'admin.kubeconfig'}")
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"{what}: directory {parent} does not exist; create it (mkdir -p {parent}) or choose another path")
    if not parent.is_dir():
        raise UsageError(f"{what}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{what}: cannot write in {parent} (permission denied)")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{what}: {path} exists and is not writable")
    return path


def check_prefect_server() -> None:
    """With PREFECT_API_URL set, the server must answer before any flow starts."""
    url = os.environ.get("PREFECT_API_URL", "").strip()
    if not url:
        return
    health = url.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=PREFECT_HEALTH_TIMEOUT_S) as response:
            response.read(64)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(
            f"the Prefect server at PREFECT_API_URL={url} does not answer ({reason}). Start it "
            f"(`prefect server start`), fix PREFECT_API_URL, or unset it to use a temporary server "
            f"(see {FIRST_RUN_DOC})."
        ) from None


# --- commands --------------------------------------------------------------------------------


@command("validate", "check a spec without touching AWS", uses_prefect=False)
def cmd_validate(spec: ClusterSpec, args: argparse.Namespace) -> int:
    print(f"{args.spec}: valid ({len(spec.masters)} masters, {len(spec.workers)} workers in {spec.region})")
    return 0


@command("plan", "show what build would create or change, changing nothing", talks_to_aws=True)
def cmd_plan(spec: ClusterSpec, args: argparse.Namespace) -> int:
    from groundup.plan import existing_store, plan, render_plan

    print(render_plan(plan(spec, existing_store(spec))))
    return 0


def _build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--phases", type=phases_argument, default=None,
                        help=f"comma-separated subset of: {','.join(BUILD_PHASES)} (default: all)")


@command("build", "run the build-cluster flow", talks_to_aws=True, arguments=_build_arguments)
def cmd_build(spec: ClusterSpec, args: argparse.Namespace) -> int:
    from groundup.aws.compute import ssh_key_path

    check_artifact_store(spec, key_paths=(ssh_key_path(spec), "pki/ca-key.pem"))
    from flows.build_cluster import build_cluster

    state = build_cluster(spec=spec, phases=args.phases, return_state=True)
    if not state.is_completed():
        return report_failed_run("build-cluster", spec, state)
    summary = state.result()
    print(f"cluster {spec.name}: {', '.join(summary['phases'])} done; "
          f"API endpoint https://{summary['network']['load_balancer_dns']}:6443")
    print_run_url(state)
    return 0


@command("teardown", "run the teardown-cluster flow", talks_to_aws=True)
def cmd_teardown(spec: ClusterSpec, args: argparse.Namespace) -> int:
    prepare_prefect()
    from flows.teardown_cluster import teardown_cluster

    state = teardown_cluster(spec=spec, return_state=True)
    if not state.is_completed():
        return report_failed_run("teardown-cluster", spec, state)
    deleted = state.result()
    print(f"cluster {spec.name}: deleted {deleted or 'nothing (no resources found)'}")
    print_run_url(state)
    return 0


def _kubeconfig_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", help="where to write it (its directory must exist)")


def _kubeconfig_check(spec: ClusterSpec, args: argparse.Namespace) -> None:
    args.output = check_output_file(args.output, "-o/--output")


@command("kubeconfig", "write the admin kubeconfig (default ~/.kube/<cluster>.kubeconfig)",
         arguments=_kubeconfig_arguments, check=_kubeconfig_check)
def cmd_kubeconfig(spec: ClusterSpec, args: argparse.Namespace) -> int:
    prepare_prefect()
    from groundup.admin_kubeconfig import export_admin_kubeconfig

    try:
        path = export_admin_kubeconfig(spec, args.output)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    print(f"admin kubeconfig written to {path} (mode 0600); use: export KUBECONFIG={path}")
    return 0


def _deploy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", default="groundup", help="work pool name (default: groundup)")
    parser.add_argument("--nightly", metavar="CRON", default="0 2 * * *",
                        help="cron schedule of rebuild-and-test (default '0 2 * * *'; 'off': no schedule)")
    parser.add_argument("--timezone", default="UTC", help="time zone of the schedule (default UTC)")
    parser.add_argument("--result-storage", metavar="BLOCK",
                        help="where runs persist results: a Prefect filesystem block name, or 'artifact-store' "
                             "for a folder of the artifact store (lets a worker on another machine resume a run)")


def _deploy_check(spec: ClusterSpec, args: argparse.Namespace) -> None:
    if args.nightly != "off" and len(args.nightly.split()) != 5:
        raise UsageError(f"--nightly {args.nightly!r}: a cron schedule has 5 fields, e.g. '0 2 * * *', or 'off'")
    if not args.pool.strip():
        raise UsageError("--pool: a work pool name cannot be empty")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(args.timezone)
    except Exception:
        raise UsageError(f"--timezone {args.timezone!r}: not a time zone name such as UTC or Europe/London") from None


@command("deploy", "create the cluster's Prefect deployments on a process work pool",
         arguments=_deploy_arguments, check=_deploy_check)
def cmd_deploy(spec: ClusterSpec, args: argparse.Namespace) -> int:
    prepare_prefect()
    from deployments.register import register

    storage = args.result_storage
    if storage == "artifact-store":
        from deployments.result_storage import configure_result_storage

        storage = configure_result_storage()
    for registered in register(spec, work_pool=args.pool, nightly=None if args.nightly == "off" else args.nightly,
                               timezone=args.timezone, result_storage=storage):
        name = getattr(registered, "name", registered)
        print(f"deployment {name}: run it with  prefect deployment run '{name}'")
    return 0


@command("smoke", "run the smoke-test flow on a built cluster", talks_to_aws=True)
def cmd_smoke(spec: ClusterSpec, args: argparse.Namespace) -> int:
    prepare_prefect()
    from flows.smoke_test import smoke_test
    from groundup.smoke import Check, report_table

    state = smoke_test(spec=spec, return_state=True)
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        checks = getattr(error, "all_checks", None)
        if checks:
            print(report_table(checks))
        return report_failed_run("smoke-test", spec, state)
    print(report_table([Check.from_dict(c) for c in state.result()]))
    print_run_url(state)
    return 0


# --- Prefect: quiet logs, the store, failed runs ----------------------------------------------


def prepare_prefect() -> None:
    """Import Prefect (it configures logging on import)."""
    import prefect  # noqa: F401


def quiet_console_tracebacks() -> None:
    """Console log records print one line each; the traceback stays in the records Prefect sends to
    its server (the UI's logs), which are not written through a StreamHandler."""
    if getattr(logging.StreamHandler, "_groundup_quiet", False):
        return
    original = logging.StreamHandler.format

    def format(self: logging.Handler, record: logging.LogRecord) -> str:
        clean = logging.makeLogRecord(record.__dict__)
        clean.exc_info, clean.exc_text, clean.stack_info = None, None, None
        return original(self, clean)

    logging.StreamHandler.format = format  # type: ignore[method-assign]
    logging.StreamHandler._groundup_quiet = True  # type: ignore[attr-defined]


def check_artifact_store(spec: ClusterSpec, key_paths: tuple[str, ...]) -> None:
    """The store works and decrypts the keys already stored, before a flow touches AWS."""
    prepare_prefect()
    from blocks.artifact_store import ArtifactError, check_store

    try:
        check_store(spec.name, key_paths)
    except ArtifactError as exc:
        raise UsageError(f"artifact store: {exc}") from None


def report_failed_run(flow_name: str, spec: ClusterSpec, state: Any) -> int:
    """The per-step summary of a failed run, what to retry, and the run's URL."""
    try:
        error: Any = state.result(raise_on_failure=False)
    except Exception as exc:  # the result itself could not be read
        error = exc
    detail = str(error) if isinstance(error, BaseException) else (state.message or state.name)
    lines = [f"{flow_name} for cluster {spec.name} ended {state.name}:"]
    lines += [f"  {line}" for line in detail.strip().splitlines()]
    url = run_url(state)
    if url:
        lines.append(f"Retry the run from the Prefect UI (only failed and not-yet-run steps run again): {url}")
    else:
        lines.append("Fix the cause and run the same command again: steps that completed are found in AWS "
                     f"and kept. To retry from the Prefect UI instead, use a Prefect server (see {FIRST_RUN_DOC}).")
    print("groundup: " + "\n".join(lines), file=sys.stderr)
    return EXIT_FAILED


def run_url(state: Any) -> str | None:
    """The flow run's page in the Prefect UI, when a long-running server records it."""
    if not os.environ.get("PREFECT_API_URL"):
        return None
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value() or os.environ["PREFECT_API_URL"].rstrip("/").removesuffix("/api")
    run_id = getattr(state.state_details, "flow_run_id", None)
    return f"{ui.rstrip('/')}/runs/flow-run/{run_id}" if run_id else None


def print_run_url(state: Any) -> None:
    url = run_url(state)
    if url:
        print(f"flow run: {url}")


# --- parsing and dispatch ----------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="groundup", description="Kubernetes from the ground up on AWS, as Prefect flows")
    top.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show Python tracebacks")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, parents=[common])
        p.add_argument("spec", help="cluster spec YAML, e.g. clusters/seed.yaml")
        cmd.arguments(p)
        p.set_defaults(cmd=cmd)
    sandbox = sub.add_parser("sandbox", help="the local sandbox: up | down | status | demo", add_help=False)
    sandbox.add_argument("rest", nargs=argparse.REMAINDER)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sandbox":
        from sandbox.cli import run

        return run(argv[1:])
    args = parser().parse_args(argv)
    if args.command == "sandbox":
        from sandbox.cli import run

        return run(args.rest)
    debug = bool(args.debug)
    if not debug:
        quiet_console_tracebacks()
    try:
        return run_command(args)
    except KeyboardInterrupt:
        print("groundup: interrupted", file=sys.stderr)
        return 130
    except UsageError as exc:
        if debug:
            raise
        print(f"groundup {args.command}: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:
        if debug:
            raise
        print(f"groundup {args.command}: {describe_failure(exc)}\n(run with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_FAILED


def run_command(args: argparse.Namespace) -> int:
    """Spec, argument checks, preflight, then the command."""
    cmd: Command = args.cmd
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        raise UsageError(f"{args.spec}: {exc}") from None
    cmd.check(spec, args)
    if cmd.uses_prefect:
        check_prefect_server()
    if cmd.talks_to_aws:
        from groundup.preflight import PreflightError, preflight

        try:
            identity = preflight(spec.region)
        except PreflightError as exc:
            raise UsageError(str(exc)) from None
        print(f"groundup: {identity}", file=sys.stderr)
    return cmd.run(spec, args)


def describe_failure(exc: BaseException) -> str:
    """One paragraph for an error no check caught: what failed, in the user's terms."""
    text = str(exc).strip() or type(exc).__name__
    if "ephemeral" in text.lower() and "prefect" in text.lower():
        return (f"{text}. The temporary Prefect server did not start in time: raise "
                f"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or point PREFECT_API_URL at a running "
                f"server (see {FIRST_RUN_DOC}).")
    if isinstance(exc, PermissionError | IsADirectoryError | NotADirectoryError | FileNotFoundError):
        return f"{exc.strerror or type(exc).__name__}: {exc.filename or text}"
    return f"{type(exc).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())
