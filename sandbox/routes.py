"""VPC routes as routes: each route in moto's route tables whose target is a sandbox node becomes
`<cidr> via <that node's private IP>` in the namespace of every other node the table applies to.

As on AWS, a route applies to the instances of the subnets its table is associated with (or of
every subnet without an explicit association, for the VPC's main table), and traffic is not
forwarded to an instance whose source/destination check is on: such a route is left out and
logged with why. `plan` is pure; `apply` changes the namespaces to match it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from sandbox import netns


@dataclass(frozen=True, order=True)
class Route:
    destination: str
    via: str


@dataclass
class RoutePlan:
    """Per node private IP, the routes it must have; and why some VPC routes are left out."""

    routes: dict[str, set[Route]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)


def _table_for(tables: list[dict], subnet_id: str | None, vpc_id: str | None) -> dict | None:
    for table in tables:
        if any(a.get("SubnetId") == subnet_id for a in table.get("Associations", [])):
            return table
    for table in tables:
        if table.get("VpcId") == vpc_id and any(a.get("Main") for a in table.get("Associations", [])):
            return table
    return None


def _target_instance(route: dict, by_eni: dict[str, dict], by_id: dict[str, dict]) -> dict | None:
    if route.get("InstanceId"):
        return by_id.get(route["InstanceId"])
    if route.get("NetworkInterfaceId"):
        return by_eni.get(route["NetworkInterfaceId"])
    return None


def plan(tables: list[dict], instances: Iterable[dict], node_ips: Iterable[str],
         subnet: IPv4Network) -> RoutePlan:
    """The routes every running node needs, from route tables and instances as EC2 describes them.

    `node_ips` are the private IPs of the running sandbox nodes; `instances` are the instances
    those nodes play (any others are ignored).
    """
    nodes = set(node_ips)
    played = [i for i in instances if i.get("PrivateIpAddress") in nodes]
    by_id = {i["InstanceId"]: i for i in played}
    by_eni = {eni["NetworkInterfaceId"]: i for i in played for eni in i.get("NetworkInterfaces", [])}
    result = RoutePlan(routes={ip: set() for ip in nodes})
    for node in played:
        table = _table_for(tables, node.get("SubnetId"), node.get("VpcId"))
        if table is None:
            continue
        for route in table.get("Routes", []):
            destination = route.get("DestinationCidrBlock")
            target = _target_instance(route, by_eni, by_id)
            if not destination or target is None or target is node:
                continue
            key = f"{table['RouteTableId']} {destination} -> {target['InstanceId']}"
            if target.get("SourceDestCheck", True):
                result.left_out[key] = (
                    f"instance {target['InstanceId']} ({target['PrivateIpAddress']}) has its source/destination "
                    "check on, so EC2 would drop the traffic it forwards (run the instance with "
                    "--no-source-dest-check)")
                continue
            if IPv4Network(destination).overlaps(subnet):
                result.left_out[key] = f"{destination} overlaps the sandbox subnet {subnet}, which is on-link"
                continue
            result.routes[node["PrivateIpAddress"]].add(Route(destination, target["PrivateIpAddress"]))
    for ip, routes in result.routes.items():
        chosen: dict[str, Route] = {}
        for route in sorted(routes):
            if route.destination in chosen:
                result.left_out[f"{route.destination} -> {route.via} on {ip}"] = (
                    f"{route.destination} already goes via {chosen[route.destination].via}")
                continue
            chosen[route.destination] = route
        result.routes[ip] = set(chosen.values())
    return result


@dataclass
class RouteChanges:
    added: list[tuple[str, Route]] = field(default_factory=list)
    removed: list[tuple[str, Route]] = field(default_factory=list)


def apply(wanted: RoutePlan, namespaces: dict[str, str],
          current: Callable[[str], set[tuple[str, str]]] = netns.sandbox_routes,
          add: Callable[[str, str, str], None] = netns.add_route,
          delete: Callable[[str, str, str], None] = netns.delete_route) -> RouteChanges:
    """Make each node's namespace (private IP -> namespace) hold exactly its planned routes."""
    changes = RouteChanges()
    for ip, ns in sorted(namespaces.items()):
        have = {Route(d, v) for d, v in current(ns)}
        want = wanted.routes.get(ip, set())
        for route in sorted(have - want):
            delete(ns, route.destination, route.via)
            changes.removed.append((ip, route))
        for route in sorted(want - have):
            add(ns, route.destination, route.via)
            changes.added.append((ip, route))
    return changes
