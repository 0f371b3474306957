"""`groundup sandbox up|down|status|demo`: the local cloud a new user runs on one Linux machine."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from sandbox import lifecycle
from sandbox.state import state_dir

DEMO_PHASES = ["network", "compute", "pki", "distribute"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groundup sandbox", description=__doc__)
    parser.add_argument("--state", type=Path, default=None,
                        help="state directory (default $GROUNDUP_SANDBOX_STATE or /var/lib/groundup-sandbox)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring the sandbox up (idempotent)")
    up.add_argument("--spec", type=Path, default=lifecycle.DEFAULT_SPEC, help="cluster spec whose nodes to boot")
    up.add_argument("--no-prefect", action="store_true", help="nodes and moto only, no Prefect server or worker")
    down = sub.add_parser("down", help="stop and remove every process, mount, namespace and link")
    down.add_argument("--purge", action="store_true",
                      help="also delete the cached rootfs, the Prefect database and the artifacts")
    status = sub.add_parser("status", help="show what runs")
    status.add_argument("--json", action="store_true")
    demo = sub.add_parser("demo", help="run build-cluster through distribution on the sandbox")
    demo.add_argument("spec", type=Path, nargs="?", default=lifecycle.DEFAULT_SPEC)
    demo.add_argument("--phases", default=",".join(DEMO_PHASES))
    demo.add_argument("--in-process", action="store_true",
                      help="run the flow in this process instead of as a deployment on the sandbox's worker")
    return parser


def run(argv: list[str]) -> int:
    """Entry point of `groundup sandbox ...`; returns the exit code."""
    args = _parser().parse_args(argv)
    state = args.state or state_dir()
    try:
        if args.command == "up":
            return _up(args, state)
        if args.command == "down":
            return _down(args, state)
        if args.command == "status":
            return _status(args, state)
        return _demo(args, state)
    except lifecycle.SandboxError as exc:
        print(f"groundup sandbox {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from groundup.spec import SpecError
        from sandbox.netns import AddressRangeInUse

        if isinstance(exc, (SpecError, AddressRangeInUse)):
            print(f"groundup sandbox {args.command}: {exc}", file=sys.stderr)
            return 2
        raise


def _up(args, state: Path) -> int:
    report = lifecycle.up(args.spec, state, with_prefect=not args.no_prefect)
    info = lifecycle.status(state)
    nodes = info["nodes"]
    print(f"sandbox up in {report.timings['total']:.1f} s "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in report.timings.items() if k != 'total')})")
    print(f"  nodes: {len(nodes)} ({len(report.started_nodes)} booted now), "
          + ", ".join(f"{n['name']}={n['ip']}" for n in nodes))
    print(f"  moto:  {info['moto'].get('endpoint')}")
    if info["prefect"].get("api_url"):
        print(f"  prefect: {info['prefect']['api_url'].removesuffix('/api')} (work pool 'groundup', worker running)")
    print(f"  host keys: {state / 'known_hosts'}")
    print(f"  env:   source {info['env_file']}")
    return 0


def _down(args, state: Path) -> int:
    started = time.monotonic()
    left = lifecycle.down(state, purge=args.purge)
    remaining = {k: v for k, v in left.items() if v}
    if remaining:
        print(f"sandbox down left behind: {remaining}", file=sys.stderr)
        return 1
    print(f"sandbox down in {time.monotonic() - started:.1f} s: no process, mount, namespace or link left")
    return 0


def _status(args, state: Path) -> int:
    info = lifecycle.status(state)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    if not info["cluster"]:
        left = {k: v for k, v in (info["leftovers"] or {}).items() if v}
        print(f"sandbox is down ({state})" + (f"; left behind: {left}" if left else ""))
        return 0 if not left else 1
    print(f"sandbox for '{info['cluster']}' ({state})")
    for node in info["nodes"]:
        state_text = "running" if node["running"] else "STOPPED"
        ssh = "sshd up" if node["sshd"] else "sshd down"
        instance = info["instances"].get(node["ip"], "no instance")
        print(f"  {node['name']:<10} {node['ip']:<15} {state_text:<8} {ssh:<9} {instance}")
    for name in ("moto", "prefect", "worker", "cloudinit"):
        entry = info[name]
        if entry.get("pid") is None:
            continue
        where = entry.get("endpoint") or entry.get("api_url") or ""
        print(f"  {name:<10} pid {entry['pid']:<7} {'running' if entry['running'] else 'STOPPED'} {where}")
    if info["env_file"]:
        print(f"  env file: {info['env_file']}")
    healthy = all(n["running"] and n["sshd"] for n in info["nodes"]) and info["moto"]["running"]
    return 0 if healthy else 1


def _demo(args, state: Path) -> int:
    """Deploy the spec's flows, run build-cluster as a deployment on the sandbox's worker, export kubeconfig."""
    env = lifecycle.read_env_file(state)
    if not env.get("PREFECT_API_URL"):
        raise lifecycle.SandboxError("the sandbox is not up (with Prefect): run `groundup sandbox up` first")
    os.environ.update(env)
    from prefect.deployments import run_deployment

    from deployments.register import register
    from groundup.admin_kubeconfig import export_admin_kubeconfig
    from groundup.spec import load_spec

    spec = load_spec(args.spec)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if args.in_process:
        from flows.build_cluster import build_cluster

        started = time.monotonic()
        final = build_cluster(spec, phases=phases, return_state=True)
        run_id = final.state_details.flow_run_id
    else:
        for name in register(spec):
            print(f"deployment {name}")
        started = time.monotonic()
        flow_run = run_deployment(f"build-cluster/{spec.name}", parameters={"phases": phases}, timeout=None)
        final, run_id = flow_run.state, flow_run.id
    elapsed = time.monotonic() - started
    ui = env["PREFECT_API_URL"].removesuffix("/api")
    print(f"build-cluster/{spec.name} ({', '.join(phases)}): {final.name} in {elapsed:.1f} s")
    print(f"  flow run: {ui}/runs/flow-run/{run_id}")
    if not final.is_completed():
        print(f"  {final.message}", file=sys.stderr)
        return 1
    print(f"  artifacts: {Path(env['GROUNDUP_ARTIFACTS']) / spec.name} (keys and kubeconfigs encrypted)")
    if "pki" in phases:
        print(f"  admin kubeconfig: {export_admin_kubeconfig(spec)} (mode 0600)")
    print(f"  Prefect UI: {ui}")
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
