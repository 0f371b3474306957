"""What a cluster leaves behind in the sandbox after its teardown: nothing, or a list naming each thing.

Two sides, both read independently of the code under test:

- moto (straight at the sandbox's endpoint, never through a fault proxy): every EC2 resource kind a
  build makes that carries the cluster's tag (instances that are not terminated, VPC, subnets, route
  tables, internet gateways, security groups, key pairs, DHCP options sets), and ELBv2 load
  balancers and target groups tagged with it or named after it;
- this machine: the controller's nodes at the cluster's addresses, their systemd-nspawn processes,
  machines, overlay mounts, network namespaces and veths, host routes into the pod range or via a
  node, HAProxy processes and bridge addresses of the NLB, the NLB's name in a hosts block, and any
  process whose command line holds one of the caller's markers (a build's spec file, say).

    left = wait_clean(spec, state_dir())      # {} when nothing is left
"""

from __future__ import annotations

import json
import subprocess
import time
from ipaddress import IPv4Network
from pathlib import Path

import boto3

from groundup.aws.core import CLUSTER_TAG, tag_filters, tags_dict
from groundup.spec import ClusterSpec
from sandbox import hostsfile, netns, nodes
from sandbox.controller import load_balancer_dir, read_nodes
from sandbox.state import read_record

Leftovers = dict[str, list[str]]


def aws_leftovers(spec: ClusterSpec, endpoint: str) -> Leftovers:
    """Resources in moto that carry the cluster's tag (ELBv2 also: named after it), by kind."""
    session = boto3.session.Session(region_name=spec.region, aws_access_key_id="testing",
                                    aws_secret_access_key="testing")
    ec2 = session.client("ec2", endpoint_url=endpoint)
    elbv2 = session.client("elbv2", endpoint_url=endpoint)
    flt = tag_filters(spec.name)
    live = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped", "shutting-down"]}]
    found: Leftovers = {
        "instances": [f"{i['InstanceId']} {i.get('PrivateIpAddress')} {i['State']['Name']}"
                      for r in ec2.describe_instances(Filters=flt + live)["Reservations"] for i in r["Instances"]],
        "vpcs": [v["VpcId"] for v in ec2.describe_vpcs(Filters=flt)["Vpcs"]],
        "subnets": [s["SubnetId"] for s in ec2.describe_subnets(Filters=flt)["Subnets"]],
        "route_tables": [t["RouteTableId"] for t in ec2.describe_route_tables(Filters=flt)["RouteTables"]],
        "internet_gateways": [g["InternetGatewayId"] for g in ec2.describe_internet_gateways(Filters=flt)["InternetGateways"]],
        "security_groups": [g["GroupId"] for g in ec2.describe_security_groups(Filters=flt)["SecurityGroups"]],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs(Filters=flt)["KeyPairs"]],
        "dhcp_options": [d["DhcpOptionsId"] for d in ec2.describe_dhcp_options(Filters=flt)["DhcpOptions"]],
    }
    for kind, call, key, arn_key in (("load_balancers", "describe_load_balancers", "LoadBalancers", "LoadBalancerArn"),
                                     ("target_groups", "describe_target_groups", "TargetGroups", "TargetGroupArn")):
        items = [item for page in elbv2.get_paginator(call).paginate() for item in page[key]]
        tags: dict[str, dict[str, str]] = {}
        arns = [item[arn_key] for item in items]
        for i in range(0, len(arns), 20):
            for description in elbv2.describe_tags(ResourceArns=arns[i:i + 20])["TagDescriptions"]:
                tags[description["ResourceArn"]] = tags_dict(description.get("Tags"))
        found[kind] = [item[arn_key] for item in items
                       if tags.get(item[arn_key], {}).get(CLUSTER_TAG) == spec.name
                       or item.get("LoadBalancerName", item.get("TargetGroupName")) == spec.name]
    return {kind: items for kind, items in found.items() if items}


def _cmdline(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _host_routes(spec: ClusterSpec) -> list[str]:
    ips = {str(n.private_ip) for n in spec.nodes}
    out = subprocess.run(["ip", "-j", "route", "show"], capture_output=True, text=True).stdout.strip()
    left = []
    for route in json.loads(out or "[]"):
        dst = route.get("dst", "")
        if dst == "default":
            continue
        network = IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
        if route.get("gateway") in ips or network.overlaps(spec.pod_cidr) or str(route.get("protocol")) == netns.ROUTE_PROTO:
            left.append(f"{dst} via {route.get('gateway', '-')} dev {route.get('dev', '-')}")
    return left


def _machines(names: set[str]) -> list[str]:
    try:
        out = subprocess.run(["machinectl", "list", "--no-legend", "--no-pager"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0] in names]


def sandbox_leftovers(spec: ClusterSpec, state: Path, markers: tuple[str, ...] = ()) -> Leftovers:
    """What of the cluster still lives on this machine, by kind."""
    ips = {str(n.private_ip) for n in spec.nodes}
    names = {nodes.node_name(ip) for ip in ips}
    node_dirs = tuple(str((state / "nodes" / name).resolve()) + "/" for name in names)
    run_dir = str(load_balancer_dir(state).resolve()) + "/"
    found: Leftovers = {
        "nodes": [f"{ip} {n.instance_id} {n.state}" for ip, n in sorted(read_nodes(state).items()) if ip in ips],
        "machines": _machines(names),
        "mounts": [m for m in nodes.sandbox_mounts(state) if m.startswith(node_dirs)],
        "namespaces": [ns for ns in netns.sandbox_namespaces() if ns in {netns.namespace_name(n) for n in names}],
        "links": [link for link in netns.sandbox_links() if link in {netns.veth_name(ip) for ip in ips}],
        "host_routes": _host_routes(spec),
    }
    processes, haproxy = [], []
    for pid in _pids():
        argv = _cmdline(pid)
        if not argv:
            continue
        if argv[0].endswith("systemd-nspawn") and any(a.startswith(node_dirs) for a in argv):
            processes.append(f"{pid} systemd-nspawn {next(a for a in argv if a.startswith(node_dirs))}")
        elif argv[0].endswith("haproxy") and any(a.startswith(run_dir) for a in argv):
            haproxy.append(f"{pid} {' '.join(argv)[:160]}")
        elif markers and any(m in a for a in argv for m in markers):
            processes.append(f"{pid} {' '.join(argv)[:160]}")
    found["processes"] = processes
    found["haproxy"] = haproxy
    record_path = load_balancer_dir(state) / "loadbalancers.json"
    if record_path.exists():
        record = json.loads(record_path.read_text() or "{}")
        found["lb_addresses"] = [f"{address} {arn.rsplit('/', 2)[-2]}" for arn, address in record.get("addresses", {}).items()
                                 if arn.rsplit("/", 2)[-2] == spec.name]
    hosts = Path("/etc/hosts")
    entries = hostsfile.read_block(hosts.read_text()) if hosts.exists() else {}
    found["hosts_entries"] = [f"{a} {b}" for a, b in entries.items()
                              if spec.name.lower() in f"{a} {b}".lower()]
    bridge = json.loads(netns.ip("-j", "addr", "show", "dev", netns.BRIDGE, check=False).stdout.strip() or "[]")
    claimed = {a.split()[0] for a in found.get("lb_addresses", [])}
    found["bridge_addresses"] = [f"{a['local']}/{a['prefixlen']}" for link in bridge for a in link.get("addr_info", [])
                                 if a.get("family") == "inet" and a.get("prefixlen") == 32 and a["local"] in claimed]
    return {kind: items for kind, items in found.items() if items}


def leftovers(spec: ClusterSpec, state: Path, markers: tuple[str, ...] = ()) -> Leftovers:
    """Everything of the cluster left in moto and on this machine ({} when nothing)."""
    endpoint = read_record(state)["moto"]["endpoint"]
    return {**aws_leftovers(spec, endpoint), **sandbox_leftovers(spec, state, markers)}


def wait_clean(spec: ClusterSpec, state: Path, timeout_s: float = 30.0, markers: tuple[str, ...] = ()) -> Leftovers:
    """`leftovers` once it is empty, or what is still there after `timeout_s` (the controller
    terminates nodes and stops HAProxy within a few seconds of the API calls)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = leftovers(spec, state, markers)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1.0)


def count(left: Leftovers) -> int:
    return sum(len(items) for items in left.values())
