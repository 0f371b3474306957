"""The sandbox's controller: what EC2 does with the state moto holds, done on this machine.

Started by `sandbox up`, it polls moto about once a second and makes the machine match it:

- an instance with a private IP in the sandbox subnet that is pending or running has a node
  (sandbox.nodes) at that IP: own namespace, overlay disk, fresh host key, the key pair and
  user-data seeded as cloud-init would (sandbox.cloudinit), console output once sshd answers;
- stopping/stopped stops the node and keeps its disk; starting boots it again;
- shutting-down/terminated (or an instance moto no longer knows) stops the node and discards its
  disk and network; a later instance at that IP gets a new disk and new host keys;
- a node whose system shuts itself down stops its instance in moto, as EC2 does by default;
- VPC routes to nodes become routes in the other nodes' namespaces (sandbox.routes);
- network load balancers become HAProxy (sandbox.loadbalancer, when present).

Run as `python -m sandbox.controller --state DIR`; `sandbox down` stops it before the nodes.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from sandbox import cloudinit, hostsfile, netns, nodes, rootfs, routes
from sandbox.state import atomic_write, pid_alive, read_record

log = logging.getLogger("groundup.sandbox.controller")

LIVE = ("pending", "running")
KEPT = ("stopping", "stopped")
MB_PER_NODE = 400
"""An idle node takes about 12 MiB; a master running etcd and the real control plane some hundreds more
(kube-apiserver alone is the largest), a worker with containerd, kubelet and kube-proxy about 150 MiB."""
MAX_NODES = 250
HOST_HOSTS = Path("/etc/hosts")


def nodes_path(state: Path) -> Path:
    return state / "nodes.json"


def read_nodes(state: Path) -> dict[str, nodes.NodeRecord]:
    """The controller's record of its nodes, by private IP."""
    try:
        data = json.loads(nodes_path(state).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {ip: nodes.NodeRecord.from_dict(entry) for ip, entry in data.items()}


def machine_capacity(meminfo: Path = Path("/proc/meminfo")) -> int:
    """How many nodes this machine holds: about MB_PER_NODE of available memory each, at most MAX_NODES."""
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return max(1, min(MAX_NODES, int(line.split()[1]) // 1024 // MB_PER_NODE))
    return MAX_NODES


def unusable_address(ip: str, subnet: IPv4Network, reserved: set[str] = frozenset()) -> str | None:
    """Why an address in the subnet cannot be a node (AWS reserves it, or a load balancer has it); None when it can."""
    address = IPv4Address(ip)
    if ip in reserved:
        return f"{ip} is kept for the sandbox's load balancers (HAProxy); launch the instance at another address"
    first = int(subnet.network_address)
    if int(address) - first in (0, 1, 2, 3):
        return (f"{ip} is one of the subnet's first four addresses (AWS reserves them; "
                f"{netns.bridge_address(subnet)} is the sandbox bridge)")
    if address == subnet.broadcast_address:
        return f"{ip} is the subnet's broadcast address"
    return None


def claims(instances: list[dict], subnet: IPv4Network,
           reserved: set[str] = frozenset()) -> tuple[dict[str, dict], dict[str, str]]:
    """Per private IP in the subnet, the instance a node there plays; and the instances no node plays, with why.

    In one subnet EC2 never has two live instances at one address, so two claims on an address come from
    two VPCs with the same CIDR (two clusters). The sandbox has one network for every VPC: the instance
    launched first keeps its node (disk and all), the later one runs nowhere and is told why."""
    chosen: dict[str, dict] = {}
    ignored: dict[str, str] = {}
    for instance in sorted(instances, key=lambda i: (i["LaunchTime"], i["InstanceId"])):
        ip = instance.get("PrivateIpAddress")
        state = instance["State"]["Name"]
        if not ip or IPv4Address(ip) not in subnet or state not in LIVE + KEPT:
            continue
        reason = unusable_address(ip, subnet, reserved)
        if reason:
            ignored[instance["InstanceId"]] = reason
            continue
        current = chosen.get(ip)
        if current is None:
            chosen[ip] = instance
            continue
        ignored[instance["InstanceId"]] = (
            f"{ip} is taken by {current['InstanceId']} (VPC {current.get('VpcId', '?')}, launched earlier, "
            f"{current['State']['Name']}); the sandbox has one network for every VPC: tear that cluster down, "
            f"then build this one again")
    return chosen, ignored


@dataclass(frozen=True)
class Action:
    kind: str  # boot, start, stop, terminate
    ip: str


def plan_nodes(wanted: dict[str, dict], have: dict[str, nodes.NodeRecord],
               capacity: int) -> tuple[list[Action], dict[str, str]]:
    """What to do so the nodes match the instances; and the instances left waiting, with why."""
    actions: list[Action] = []
    waiting: dict[str, str] = {}
    busy = {ip for ip, n in have.items() if n.state in ("stopping", "terminating")}
    kept = 0
    for ip, node in sorted(have.items()):
        if ip in busy:
            kept += 1
            continue
        instance = wanted.get(ip)
        if instance is None or instance["InstanceId"] != node.instance_id:
            actions.append(Action("terminate", ip))
            busy.add(ip)
            continue
        kept += 1
        state = instance["State"]["Name"]
        if state in KEPT and node.state in ("booting", "running"):
            actions.append(Action("stop", ip))
        elif state in LIVE and node.state == "stopped":
            actions.append(Action("start", ip))
    for ip, instance in sorted(wanted.items()):
        if ip in have and ip not in busy or instance["State"]["Name"] not in LIVE:
            continue
        if ip in busy:
            waiting[instance["InstanceId"]] = f"the previous node at {ip} is still shutting down"
        elif kept >= capacity:
            waiting[instance["InstanceId"]] = (f"this machine holds {capacity} nodes and all are taken; "
                                               "terminate an instance to make room")
        else:
            actions.append(Action("boot", ip))
            kept += 1
    return actions, waiting


class Controller:
    """One sandbox's controller; `tick` reconciles once."""

    def __init__(self, state: Path, ec2_clients: dict | None = None,
                 load_balancers: Callable[[list[dict]], None] | None = None) -> None:
        self.state = state
        record = read_record(state)
        self.subnet = IPv4Network(record["subnet"])
        self.capacity = int(record.get("max_nodes") or machine_capacity())
        self.base = rootfs.base_dir(state)
        if ec2_clients is None:
            import boto3

            ec2_clients = {
                region: boto3.client("ec2", endpoint_url=record["moto"]["endpoint"], region_name=region,
                                     aws_access_key_id="testing", aws_secret_access_key="testing")
                for region in record["regions"]
            }
        self.ec2 = ec2_clients
        self.load_balancers = load_balancers
        self.copy_hosts_block = True
        self.reserved = set(load_balancer_pool(self.subnet))
        self.lock = threading.Lock()
        self.nodes = self._adopt(read_nodes(state))
        self._said: set[str] = set()
        self._saved = ""

    def _adopt(self, found: dict[str, nodes.NodeRecord]) -> dict[str, nodes.NodeRecord]:
        """Nodes a previous controller started: kept while their process runs."""
        running = set(nodes.nspawn_pids(self.state))
        for node in found.values():
            if node.state in ("booting", "running", "stopping") and node.pid not in running:
                node.state, node.pid = "stopped", None
            elif node.state == "terminating":
                node.state = "stopped"
            if node.state == "booting":
                self._watch_boot(node)
        return found

    def say(self, message: str, *args) -> None:
        """Log a message once while it stays true."""
        text = message % args if args else message
        if text not in self._said:
            self._said.add(text)
            log.info(text)

    def describe(self) -> list[dict]:
        """The instances a node may play (`claims` looks at no other state). Asking moto for the terminated
        ones too cost ~245 ms of its CPU a tick while it held a hundred of them, 6 ms without."""
        instances = []
        for region, ec2 in self.ec2.items():
            pages = ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-state-name", "Values": list(LIVE + KEPT)}])
            for page in pages:
                for reservation in page["Reservations"]:
                    for instance in reservation["Instances"]:
                        instances.append({**instance, "Region": region})
        return instances

    def tick(self) -> None:
        instances = self.describe()
        wanted, ignored = claims(instances, self.subnet, self.reserved)
        for instance_id, reason in ignored.items():
            self.say("instance %s has no node: %s", instance_id, reason)
            cloudinit.write_unplayed_console(self.state, instance_id, reason)
        self._notice_shutdowns(wanted)
        with self.lock:
            actions, waiting = plan_nodes(wanted, self.nodes, self.capacity)
        for instance_id, reason in waiting.items():
            self.say("instance %s waits for a node: %s", instance_id, reason)
            cloudinit.write_unplayed_console(self.state, instance_id, f"waits for a node: {reason}")
        for action in actions:
            getattr(self, "_" + action.kind)(action.ip, wanted.get(action.ip))
        self._routes(instances)
        if self.load_balancers is not None:
            self.load_balancers(instances)
        if self.copy_hosts_block:
            self._hosts_blocks()
        self.save()

    def _notice_shutdowns(self, wanted: dict[str, dict]) -> None:
        with self.lock:
            exited = [n for n in self.nodes.values() if n.state in ("booting", "running") and not pid_alive(n.pid)]
            rebooting = [n for n in exited if nodes.rebooted(n.pid)]
            for node in exited:
                node.state, node.pid = "stopped", None
        for node in rebooting:
            log.info("node %s (%s) rebooted itself: booting it again, instance %s stays running as on EC2",
                     node.name, node.private_ip, node.instance_id)
        for node in (n for n in exited if n not in rebooting):
            instance = wanted.get(node.private_ip)
            log.info("node %s (%s) shut down by itself: stopping instance %s as EC2 does",
                     node.name, node.private_ip, node.instance_id)
            if instance is not None and instance["InstanceId"] == node.instance_id:
                self.ec2[node.region].stop_instances(InstanceIds=[node.instance_id])
                instance["State"] = {"Name": "stopping"}

    def _boot(self, ip: str, instance: dict) -> None:
        name = nodes.node_name(ip)
        seen = time.time()
        namespace = netns.ensure_node_network(name, ip, self.subnet)
        netns.forget_neighbour(ip, self._other_namespaces(ip))
        merged = nodes.prepare_overlay(self.state, self.base, name)
        host_key = nodes.ensure_identity(merged, name, ip)
        ec2 = self.ec2[instance["Region"]]
        cloudinit.seed(merged, instance["InstanceId"], cloudinit.public_key(ec2, instance.get("KeyName")),
                       cloudinit.user_data(ec2, instance["InstanceId"]))
        node = nodes.NodeRecord(name=name, private_ip=ip, instance_id=instance["InstanceId"],
                                region=instance["Region"], namespace=namespace, root=str(merged),
                                host_key=host_key, seen_at=seen)
        node.pid = nodes.boot(self.state, node)
        with self.lock:
            self.nodes[ip] = node
        log.info("instance %s (%s): node %s booting, pid %s", node.instance_id, ip, name, node.pid)
        self._watch_boot(node)

    def _start(self, ip: str, instance: dict) -> None:
        with self.lock:
            node = self.nodes[ip]
            node.state, node.seen_at, node.ready_at = "booting", time.time(), None
        netns.ensure_node_network(node.name, ip, self.subnet)
        nodes.prepare_overlay(self.state, self.base, node.name)
        node.pid = nodes.boot(self.state, node)
        log.info("instance %s (%s) started: node %s booting, disk kept", node.instance_id, ip, node.name)
        self._watch_boot(node)

    def _watch_boot(self, node: nodes.NodeRecord) -> None:
        def watch() -> None:
            pid = node.pid
            try:
                nodes.wait_for_ssh(node.private_ip, pid=pid, timeout=180)
            except (RuntimeError, TimeoutError) as exc:
                log.warning("node %s: %s", node.name, exc)
                return
            cloudinit.write_console(self.state, node.instance_id, node.name, [node.host_key])
            with self.lock:
                if node.pid == pid and node.state == "booting":
                    node.state, node.ready_at = "running", time.time()
            log.info("node %s (%s, %s): sshd answers %.2f s after the instance was seen",
                     node.name, node.private_ip, node.instance_id, time.time() - node.seen_at)

        threading.Thread(target=watch, name=f"boot-{node.name}", daemon=True).start()

    def _stop(self, ip: str, instance: dict | None) -> None:
        with self.lock:
            node = self.nodes[ip]
            node.state = "stopping"

        def stop() -> None:
            nodes.stop(node.pid)
            nodes.remove_node_cgroups(node.name)
            with self.lock:
                node.state, node.pid, node.ready_at = "stopped", None, None
            log.info("instance %s (%s) stopped: node %s down, disk kept", node.instance_id, ip, node.name)

        threading.Thread(target=stop, name=f"stop-{node.name}", daemon=True).start()

    def _terminate(self, ip: str, instance: dict | None) -> None:
        with self.lock:
            node = self.nodes[ip]
            node.state = "terminating"

        def terminate() -> None:
            nodes.stop(node.pid)
            nodes.remove_node_cgroups(node.name)
            nodes.discard_disk(self.state, node.name)
            netns.remove_node_network(node.name, ip)
            netns.forget_neighbour(ip, self._other_namespaces(ip))
            with self.lock:
                if self.nodes.get(ip) is node:
                    del self.nodes[ip]
            log.info("instance %s (%s) terminated: node %s down, disk and network discarded",
                     node.instance_id, ip, node.name)

        threading.Thread(target=terminate, name=f"terminate-{node.name}", daemon=True).start()

    def _other_namespaces(self, ip: str) -> list[str]:
        with self.lock:
            return [n.namespace for other, n in self.nodes.items() if other != ip and netns.namespace_exists(n.namespace)]

    def _routes(self, instances: list[dict]) -> None:
        with self.lock:
            running = {ip: n for ip, n in self.nodes.items() if n.state in ("booting", "running")}
        played = [i for i in instances if (n := running.get(i.get("PrivateIpAddress", ""))) is not None
                  and n.instance_id == i["InstanceId"]]
        tables = []
        for region in {i["Region"] for i in played}:
            tables += self.ec2[region].describe_route_tables()["RouteTables"]
        wanted = routes.plan(tables, played, running, self.subnet)
        for key, reason in wanted.left_out.items():
            self.say("route %s left out: %s", key, reason)
        namespaces = {ip: n.namespace for ip, n in running.items() if netns.namespace_exists(n.namespace)}
        changes = routes.apply(wanted, namespaces)
        for ip, route in changes.added:
            log.info("route %s via %s added on %s", route.destination, route.via, ip)
        for ip, route in changes.removed:
            log.info("route %s via %s removed on %s", route.destination, route.via, ip)

    def hosts_files(self) -> list[Path]:
        """The /etc/hosts of every node with a disk."""
        with self.lock:
            roots = [Path(n.root) for n in self.nodes.values() if n.state in ("booting", "running", "stopped")]
        return [root / "etc/hosts" for root in roots if (root / "etc").is_dir()]

    def _hosts_blocks(self) -> None:
        """Every node's /etc/hosts carries the host's load-balancer block (NLB names), nothing else of it."""
        entries = hostsfile.read_block(HOST_HOSTS.read_text()) if HOST_HOSTS.exists() else {}
        with self.lock:
            roots = [Path(n.root) for n in self.nodes.values() if n.state in ("booting", "running")]
        for root in roots:
            target = root / "etc/hosts"
            if not target.parent.is_dir():
                continue
            if entries:
                hostsfile.write_block(target, entries)
            elif hostsfile.has_block(target):
                hostsfile.remove_from(target)

    def save(self) -> None:
        with self.lock:
            data = json.dumps({ip: n.to_dict() for ip, n in sorted(self.nodes.items())}, indent=1)
            known = [n for n in self.nodes.values() if n.state in ("booting", "running", "stopped")]
        if data != self._saved:
            atomic_write(nodes_path(self.state), data.encode())
            nodes.write_known_hosts(self.state, known)
            self._saved = data


def load_balancer_dir(state: Path) -> Path:
    return state / "loadbalancers"


def load_balancer_status_path(state: Path) -> Path:
    return state / "loadbalancers.status.json"


def load_balancer_pool(subnet: IPv4Network) -> list[str]:
    """The bridge addresses the load balancers take (none when sandbox.loadbalancer is missing)."""
    try:
        from sandbox import loadbalancer
    except ImportError:
        return []
    return loadbalancer.sandbox_address_pool(str(subnet))


def node_hosts_files(state: Path) -> list[Path]:
    """The /etc/hosts of every node that has a disk."""
    return [Path(n.root) / "etc/hosts" for n in read_nodes(state).values()
            if n.state != "terminating" and (Path(n.root) / "etc").is_dir()]


def open_load_balancers(state: Path, subnet: IPv4Network, hosts_files: Callable[[], list[Path]] | None = None):
    """sandbox.loadbalancer's `LoadBalancers` for this sandbox (adopting what runs); None without the module."""
    try:
        from sandbox import loadbalancer
    except ImportError:
        return None
    bridge = loadbalancer.BridgeAddresses(netns.BRIDGE)
    return loadbalancer.LoadBalancers(
        load_balancer_dir(state), load_balancer_pool(subnet),
        hosts_files or (lambda: [HOST_HOSTS, *node_hosts_files(state)]),
        logging.getLogger("groundup.sandbox.loadbalancer"),
        claim_address=bridge.claim, release_address=bridge.release)


def _load_balancer_hook(state: Path, controller: Controller) -> Callable[[list[dict]], None] | None:
    """Each tick: HAProxy and the hosts blocks match moto's NLBs (first region), status saved for `status`."""
    balancers = open_load_balancers(
        state, controller.subnet,
        lambda: [HOST_HOSTS, *controller.hosts_files()])
    if balancers is None:
        log.info("sandbox.loadbalancer is not there: network load balancers are not played")
        return None
    import boto3

    record = read_record(state)
    region = record["regions"][0]
    elbv2 = boto3.client("elbv2", endpoint_url=record["moto"]["endpoint"], region_name=region,
                         aws_access_key_id="testing", aws_secret_access_key="testing")
    controller.copy_hosts_block = False

    def sync(instances: list[dict]) -> None:
        status = balancers.sync(elbv2)
        text = json.dumps(status, indent=1, default=str)
        path = load_balancer_status_path(state)
        if not path.exists() or path.read_text() != text:
            atomic_write(path, text.encode())

    return sync


def run(state: Path, interval: float = 1.0) -> None:
    """Reconcile every `interval` seconds until SIGTERM."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    controller = Controller(state)
    controller.load_balancers = _load_balancer_hook(state, controller)
    log.info("controller up: subnet %s, regions %s, at most %d nodes",
             controller.subnet, ", ".join(controller.ec2), controller.capacity)
    while not stopping.is_set():
        try:
            controller.tick()
        except Exception as exc:  # moto restarting, a node directory going away: try again
            log.warning("reconcile failed: %s: %s", type(exc).__name__, exc)
        stopping.wait(interval)


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s.%(msecs)03d %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    run(Path(argv[argv.index("--state") + 1]))


if __name__ == "__main__":
    main(sys.argv[1:])
