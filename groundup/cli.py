"""`groundup`: build, plan, tear down and reach a cluster from the command line.

Honours boto3's standard AWS settings (AWS_ENDPOINT_URL, AWS_PROFILE, ...), so the same
commands run against AWS or the sandbox's moto server.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from groundup.spec import ClusterSpec, SpecError, load_spec

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _phases(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def cmd_validate(spec: ClusterSpec, args: argparse.Namespace) -> int:
    print(f"{args.spec}: valid ({len(spec.masters)} masters, {len(spec.workers)} workers in {spec.region})")
    return 0


def cmd_plan(spec: ClusterSpec, args: argparse.Namespace) -> int:
    from groundup.plan import existing_store, plan, render_plan

    print(render_plan(plan(spec, existing_store(spec))))
    return 0


def cmd_build(spec: ClusterSpec, args: argparse.Namespace) -> int:
    from flows.build_cluster import build_cluster

    summary = build_cluster(spec=spec, phases=args.phases)
    print(f"cluster {spec.name}: {', '.join(summary['phases'])} done; "
          f"API endpoint https://{summary['network']['load_balancer_dns']}:6443")
    return 0


def cmd_teardown(spec: ClusterSpec, args: argparse.Namespace) -> int:
    from flows.teardown_cluster import teardown_cluster

    deleted = teardown_cluster(spec=spec)
    print(f"cluster {spec.name}: deleted {deleted or 'nothing (no resources found)'}")
    return 0


def cmd_kubeconfig(spec: ClusterSpec, args: argparse.Namespace) -> int:
    from groundup.admin_kubeconfig import export_admin_kubeconfig

    path = export_admin_kubeconfig(spec, Path(args.output) if args.output else None)
    print(f"admin kubeconfig written to {path} (mode 0600); use: export KUBECONFIG={path}")
    return 0


def cmd_deploy(spec: ClusterSpec, args: argparse.Namespace) -> int:
    from deployments.register import register

    for name in register(spec, work_pool=args.pool, nightly=args.nightly):
        print(f"deployment {name}: run it with  prefect deployment run '{name}'")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="groundup", description="Kubernetes from the ground up on AWS, as Prefect flows")
    sub = top.add_subparsers(dest="command", required=True)

    def with_spec(name: str, help_: str, fn) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("spec", help="cluster spec YAML, e.g. clusters/seed.yaml")
        p.set_defaults(fn=fn)
        return p

    with_spec("validate", "check a spec without touching AWS", cmd_validate)
    with_spec("plan", "show what build would create or change, changing nothing", cmd_plan)
    build = with_spec("build", "run the build-cluster flow", cmd_build)
    build.add_argument("--phases", type=_phases, default=None,
                       help="comma-separated subset of: network,compute,pki,distribute (default: all)")
    with_spec("teardown", "run the teardown-cluster flow", cmd_teardown)
    kube = with_spec("kubeconfig", "write the admin kubeconfig (default ~/.kube/<cluster>.kubeconfig)", cmd_kubeconfig)
    kube.add_argument("-o", "--output", help="where to write it")
    deploy = with_spec("deploy", "create the cluster's Prefect deployments on a process work pool", cmd_deploy)
    deploy.add_argument("--pool", default="groundup", help="work pool name (default: groundup)")
    deploy.add_argument("--nightly", metavar="CRON", help="also deploy rebuild-and-test on this cron schedule, e.g. '0 2 * * *'")
    sandbox = sub.add_parser("sandbox", help="the local sandbox: up | down | status | demo", add_help=False)
    sandbox.add_argument("rest", nargs=argparse.REMAINDER)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sandbox":
        from sandbox.cli import run

        return run(argv[1:])
    args = parser().parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except FileNotFoundError:
        print(f"groundup: no such spec file: {args.spec}", file=sys.stderr)
        return 2
    except SpecError as exc:
        print(f"groundup: {args.spec}: {exc}", file=sys.stderr)
        return 2
    return args.fn(spec, args)


if __name__ == "__main__":
    sys.exit(main())
