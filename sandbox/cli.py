"""`groundup sandbox up|down|status|demo`: the local cloud a new user runs on one Linux machine."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from ipaddress import IPv4Network
from pathlib import Path

from groundup.versions import DEFAULT_KUBERNETES_VERSION
from sandbox import lifecycle, netns
from sandbox.state import state_dir

DEFAULT_SPEC = Path(__file__).resolve().parent.parent / "clusters" / "sandbox.yaml"

DEMO_PHASES = ["network", "compute", "pki", "distribute", "bootstrap", "smoke"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="groundup sandbox", description=__doc__)
    parser.add_argument("--state", type=Path, default=None,
                        help="state directory (default $GROUNDUP_SANDBOX_STATE or /var/lib/groundup-sandbox)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring the sandbox up (idempotent); nodes boot as instances launch in moto")
    up.add_argument("--subnet", type=IPv4Network, default=netns.DEFAULT_SUBNET,
                    help=f"the sandbox subnet: instances launched in it become nodes; the bridge takes its "
                         f"first address (default {netns.DEFAULT_SUBNET})")
    up.add_argument("--region", action="append", dest="regions", default=None,
                    help=f"a region whose instances the sandbox plays (repeatable; default "
                         f"{', '.join(lifecycle.DEFAULT_REGIONS)})")
    up.add_argument("--max-nodes", type=int, default=None,
                    help="at most this many nodes (default: what the machine's memory holds)")
    up.add_argument("--no-prefect", action="store_true", help="no Prefect server or worker")
    up.add_argument("--kubernetes", action="append", default=None, metavar="VERSION",
                    help="a Kubernetes release the mirror holds, with its default components (repeatable; "
                    "default: groundup's default release). Built from the Go modules unless cached")
    down = sub.add_parser("down", help="stop and remove every process, mount, namespace, link and hosts entry")
    down.add_argument("--purge", action="store_true",
                      help="also delete the cached rootfs, the mirror, the Prefect database and the artifacts")
    status = sub.add_parser("status", help="show what runs")
    status.add_argument("--json", action="store_true")
    demo = sub.add_parser("demo", help="run build-cluster through distribution on the sandbox")
    demo.add_argument("spec", type=Path, nargs="?", default=DEFAULT_SPEC)
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
    report = lifecycle.up(state, subnet=args.subnet, regions=tuple(args.regions or lifecycle.DEFAULT_REGIONS),
                          with_prefect=not args.no_prefect, max_nodes=args.max_nodes,
                          kubernetes_versions=tuple(args.kubernetes or (DEFAULT_KUBERNETES_VERSION,)))
    info = lifecycle.status(state)
    print(f"sandbox up in {report.timings['total']:.1f} s "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in report.timings.items() if k != 'total')})")
    record = lifecycle.read_record(state)
    print(f"  subnet:  {info['subnet']} on bridge {netns.BRIDGE}: instances launched there "
          f"({', '.join(record['regions'])}) boot as nodes, at most {record['max_nodes']}")
    print(f"  moto:    {info['moto'].get('endpoint')}")
    print(f"  mirror:  {info['mirror'].get('url')}")
    if info["prefect"].get("api_url"):
        print(f"  prefect: {info['prefect']['api_url'].removesuffix('/api')} (work pool 'groundup', worker running)")
    print(f"  env:     source {info['env_file']}")
    return 0


def _down(args, state: Path) -> int:
    started = time.monotonic()
    left = lifecycle.down(state, purge=args.purge)
    remaining = {k: v for k, v in left.items() if v}
    if remaining:
        print(f"sandbox down left behind: {remaining}", file=sys.stderr)
        return 1
    print(f"sandbox down in {time.monotonic() - started:.1f} s: no process, mount, namespace, link or hosts entry left")
    return 0


def _status(args, state: Path) -> int:
    info = lifecycle.status(state)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    if not info["up"]:
        left = {k: v for k, v in (info["leftovers"] or {}).items() if v}
        print(f"sandbox is down ({state})" + (f"; left behind: {left}" if left else ""))
        return 0 if not left else 1
    print(f"sandbox on {info['subnet']} ({state})")
    nodes = {n["instance_id"]: n for n in info["nodes"]}
    print("instances and nodes:")
    for instance in info["instances"]:
        node = nodes.pop(instance["instance_id"], None)
        check = "src/dst check on" if instance["source_dest_check"] else "src/dst check off"
        where = (f"node {node['name']} {node['state']}{', sshd up' if node['sshd'] else ''}"
                 + (f", booted in {node['boot_seconds']} s" if node["boot_seconds"] else "")) if node else "no node"
        print(f"  {instance['instance_id']:<20} {instance['name'] or '-':<24} {instance['state']:<13} "
              f"{instance['ip'] or '-':<15} {check:<17} {where}")
    for node in nodes.values():
        print(f"  {node['instance_id']:<20} {'(gone from moto)':<24} {'':<13} {node['ip']:<15} {'':<17} "
              f"node {node['name']} {node['state']}")
    print("routes (VPC routes played in the nodes' namespaces):")
    any_route = False
    for ip, routes in info["routes"].items():
        for route in routes:
            any_route = True
            print(f"  on {ip}: {route}")
    if not any_route:
        print("  none")
    print("load balancers (HAProxy on the bridge):")
    for lb in info["load_balancers"]:
        print(f"  {lb['name']:<24} {lb.get('dns_name')} -> {lb.get('address') or '-'} {lb.get('state')}")
        for skipped in lb.get("skipped", []):
            print(f"    not served: {skipped}")
        for listener in lb.get("listeners", []):
            targets = ", ".join(f"{t['id']}:{t['port']} {t['health']}" for t in listener["targets"]) or "no targets"
            print(f"    {listener['protocol']} {listener['port']}: {targets}")
    if not info["load_balancers"]:
        print("  none")
    mirror = info.get("mirror") or {}
    print(f"mirror {mirror.get('url')} ({'running' if mirror.get('running') else 'STOPPED'}):")
    contents = mirror.get("contents") or {}
    if "error" in contents:
        print(f"  {contents['error']}")
    for name, versions in contents.get("artifacts", {}).items():
        sources = "; ".join(sorted({contents["sources"].get(f"{name} {v}", "") for v in versions} - {""}))
        print(f"  {name:<24} {', '.join(versions):<10} {sources}")
    if contents.get("missing"):
        print(f"  MISSING files: {', '.join(contents['missing'])}")
    for name in ("moto", "prefect", "worker", "controller"):
        entry = info[name]
        if entry.get("pid") is None:
            continue
        where = entry.get("endpoint") or entry.get("api_url") or ""
        print(f"{name:<10} pid {entry['pid']:<7} {'running' if entry['running'] else 'STOPPED'} {where}")
    if info["env_file"]:
        print(f"env file: {info['env_file']}")
    healthy = info["moto"]["running"] and info["controller"]["running"] and all(
        n["sshd"] for n in info["nodes"] if n["state"] == "running")
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
    _check_spec_fits(spec, lifecycle.read_record(state))
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if args.in_process:
        from flows.build_cluster import build_cluster

        started = time.monotonic()
        final = build_cluster(spec, phases=phases, return_state=True)
        run_id = final.state_details.flow_run_id
    else:
        for name in register(spec, nightly=None):
            print(f"deployment {name}")
        started = time.monotonic()
        flow_run = run_deployment(f"build-cluster/{spec.name}", parameters={"phases": phases}, timeout=None)
        final, run_id = flow_run.state, flow_run.id
    elapsed = time.monotonic() - started
    ui = env["PREFECT_API_URL"].removesuffix("/api")
    print(f"build-cluster/{spec.name} ({', '.join(phases)}): {final.name} in {elapsed:.1f} s")
    print(f"  flow run: {ui}/runs/flow-run/{run_id}")
    checks = _smoke_checks(final)
    if checks:
        from groundup.smoke import report_table

        print(report_table(checks))
    elif "smoke" in phases:
        print(_smoke_report(run_id, spec.name))
    if not final.is_completed():
        print(f"  {final.message}", file=sys.stderr)
        return 1
    print(f"  artifacts: {Path(env['GROUNDUP_ARTIFACTS']) / spec.name} (keys and kubeconfigs encrypted)")
    if "pki" in phases:
        print(f"  admin kubeconfig: {export_admin_kubeconfig(spec)} (mode 0600)")
    print(f"  Prefect UI: {ui}")
    return 0


def _smoke_checks(final) -> list:
    """The smoke checks of a finished build-cluster run (passed or failed), when smoke ran."""
    from groundup.smoke import Check

    try:
        outcome = final.result(raise_on_failure=False)
    except Exception:  # the result is not readable from here: the run's page has the report
        return []
    if isinstance(outcome, BaseException):
        return list(getattr(outcome, "all_checks", []) or [])
    return [Check.from_dict(c) for c in (outcome or {}).get("smoke", [])]


def _smoke_report(run_id, cluster: str) -> str:
    """The smoke report the run published (its markdown artifact), read back from the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"smoke-{cluster}".lower()])),
                                      flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return str(found[0].data) if found else "  (no smoke report was published: see the run's page)"


def _check_spec_fits(spec, record: dict) -> None:
    """The spec's nodes must land where the sandbox plays instances."""
    subnet = IPv4Network(record["subnet"])
    if spec.region not in record.get("regions", []):
        raise lifecycle.SandboxError(
            f"the spec's region {spec.region} is not one the sandbox plays ({', '.join(record.get('regions', []))}); "
            f"run `groundup sandbox up --region {spec.region}`")
    outside = [f"{n.short_name}={n.private_ip}" for n in spec.nodes if n.private_ip not in subnet]
    if outside:
        raise lifecycle.SandboxError(
            f"nodes outside the sandbox subnet {subnet}: {', '.join(outside)}; set the spec's subnet_cidr inside it "
            f"or run `groundup sandbox up --subnet {spec.subnet_cidr}`")


def main() -> None:
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
