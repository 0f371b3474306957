"""The sandbox's network: one host bridge on the sandbox subnet and one namespace per node.

Each node's namespace holds `eth0` (the peer of a host veth plugged into the bridge) with the
node's private IP and no default route, so nothing a node sends can leave the machine. The VPC
routes the sandbox plays (sandbox.routes) are added in the nodes' namespaces with the routing
protocol number `ROUTE_PROTO`, so they are told apart from the kernel's and the bootstrap's.
"""

from __future__ import annotations

import json
import subprocess
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

BRIDGE = "gu-br0"
PREFIX = "gu-"
NETNS_DIR = Path("/run/netns")
DEFAULT_SUBNET = IPv4Network("10.240.0.0/24")
ROUTE_PROTO = "71"


class AddressRangeInUse(RuntimeError):
    """The sandbox subnet overlaps an address or route the host already has."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _json(*args: str) -> list[dict]:
    out = ip("-j", *args).stdout.strip()
    return json.loads(out) if out else []


def namespace_name(node_name: str) -> str:
    return PREFIX + node_name


def veth_name(address: IPv4Address | str) -> str:
    """The host end of a node's veth, from its address (interface names are at most 15 characters)."""
    return "v" + PREFIX + f"{int(IPv4Address(str(address))):08x}"


def bridge_address(subnet: IPv4Network) -> IPv4Address:
    """The host's address on the bridge: the subnet's first, where the VPC router sits on AWS."""
    return subnet.network_address + 1


def link_exists(name: str) -> bool:
    return ip("link", "show", "dev", name, check=False).returncode == 0


def namespace_exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def check_range_free(subnet: IPv4Network, bridge: str = BRIDGE) -> None:
    """Refuse a subnet that any host interface (other than our bridge) or route already uses."""
    for link in _json("addr", "show"):
        if link.get("ifname") == bridge:
            continue
        for addr in link.get("addr_info", []):
            if addr.get("family") != "inet":
                continue
            net = IPv4Interface(f"{addr['local']}/{addr['prefixlen']}").network
            if net.overlaps(subnet):
                raise AddressRangeInUse(
                    f"{subnet} is already in use on this host: {link['ifname']} has {addr['local']}/"
                    f"{addr['prefixlen']}. Pick another sandbox subnet (`groundup sandbox up --subnet CIDR`), or remove that address."
                )
    for route in _json("route", "show"):
        dst = route.get("dst")
        if not dst or dst == "default" or route.get("dev") == bridge:
            continue
        net = IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
        if net.overlaps(subnet):
            raise AddressRangeInUse(
                f"{subnet} is already routed on this host ({dst} dev {route.get('dev')}). "
                "Pick another sandbox subnet (`groundup sandbox up --subnet CIDR`), or remove that route."
            )


def ensure_bridge(subnet: IPv4Network, bridge: str = BRIDGE) -> IPv4Address:
    """The host bridge with the subnet's first address; returns that address."""
    address = bridge_address(subnet)
    if not link_exists(bridge):
        ip("link", "add", bridge, "type", "bridge")
    current = {a["local"] for link in _json("addr", "show", "dev", bridge) for a in link.get("addr_info", [])}
    if str(address) not in current:
        ip("addr", "add", f"{address}/{subnet.prefixlen}", "dev", bridge)
    ip("link", "set", bridge, "up")
    return address


def ensure_node_network(node_name: str, address: IPv4Address | str, subnet: IPv4Network,
                        bridge: str = BRIDGE) -> str:
    """A namespace whose eth0 has the node's address on the bridge; returns the namespace name."""
    ns = namespace_name(node_name)
    veth = veth_name(address)
    if not namespace_exists(ns):
        ip("netns", "add", ns)
    if not link_exists(veth):
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("link", "set", veth, "master", bridge, "up")
    current = {a["local"] for link in _json("-n", ns, "addr", "show", "dev", "eth0")
               for a in link.get("addr_info", [])}
    if str(address) not in current:
        ip("-n", ns, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", "eth0")
    ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", ns, "link", "set", "eth0", "up")
    return ns


def remove_node_network(node_name: str, address: IPv4Address | str) -> None:
    """Delete the node's veth and namespace (with every route in it)."""
    veth = veth_name(address)
    if link_exists(veth):
        ip("link", "del", veth, check=False)
    if namespace_exists(namespace_name(node_name)):
        ip("netns", "del", namespace_name(node_name), check=False)


def forget_neighbour(address: str, namespaces: list[str], bridge: str = BRIDGE) -> None:
    """Drop the host's and the nodes' ARP entries for an address whose node was replaced, so the new
    node's MAC is learnt at once instead of after the kernel's reachable time (15-45 s)."""
    ip("neigh", "flush", "to", address, "dev", bridge, check=False)
    for ns in namespaces:
        ip("-n", ns, "neigh", "flush", "to", address, check=False)


def sandbox_routes(ns: str) -> set[tuple[str, str]]:
    """The VPC routes the sandbox put in a namespace: (destination CIDR, gateway)."""
    routes = set()
    for route in _json("-n", ns, "route", "show", "proto", ROUTE_PROTO):
        dst = route.get("dst", "")
        routes.add((str(IPv4Network(dst if "/" in dst else f"{dst}/32")), route.get("gateway", "")))
    return routes


def add_route(ns: str, destination: str, via: str) -> None:
    ip("-n", ns, "route", "replace", destination, "via", via, "dev", "eth0", "proto", ROUTE_PROTO)


def delete_route(ns: str, destination: str, via: str) -> None:
    ip("-n", ns, "route", "del", destination, "via", via, "proto", ROUTE_PROTO, check=False)


def sandbox_namespaces() -> list[str]:
    """Every namespace the sandbox made (by its name prefix)."""
    if not NETNS_DIR.exists():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(PREFIX))


def sandbox_links() -> list[str]:
    """Every host interface the sandbox made: its bridge and veths."""
    names = [link["ifname"] for link in _json("link", "show")]
    return sorted(n for n in names if n == BRIDGE or n.startswith("v" + PREFIX))


def remove_everything(bridge: str = BRIDGE) -> None:
    """Delete every sandbox veth, namespace and the bridge, whatever the record says."""
    for link in sandbox_links():
        if link != bridge:
            ip("link", "del", link, check=False)
    for ns in sandbox_namespaces():
        ip("netns", "del", ns, check=False)
    if link_exists(bridge):
        ip("link", "del", bridge, check=False)
