"""The sandbox's cloud-init: what EC2 and cloud-init do for an instance, done for sandbox nodes.

On AWS, cloud-init installs the key pair's public key for the login user and prints the
instance's SSH host keys to the console. Here an agent started by `sandbox up` polls the moto
server every second and, for each pending or running instance whose private IP is a sandbox node:

- writes the key pair's public key (moto knows it from ImportKeyPair) to the node's
  `/root/.ssh/authorized_keys`, and removes it again once no instance claims the node;
- writes the node's console output (a cloud-init style `BEGIN SSH HOST KEY KEYS` block with the
  node's real host key), which the sandbox's moto serves from GetConsoleOutput;
- writes the instance's user-data and id under `/var/lib/cloud/` on the node, as cloud-init does.

Run as `python -m sandbox.cloudinit --state DIR`; stopped by `sandbox down`.
"""

from __future__ import annotations

import base64
import json
import logging
import signal
import sys
import time
from pathlib import Path

from sandbox.state import atomic_write, console_dir, instances_path, read_record

log = logging.getLogger("groundup.sandbox.cloudinit")


def console_text(hostname: str, host_keys: list[str]) -> str:
    """Console output as cloud-init prints it on an Ubuntu instance (the parts the flows read)."""
    lines = [
        f"[    0.000000] Linux version 6.1.0 (groundup sandbox node {hostname}, systemd-nspawn)",
        "[    2.104711] cloud-init[512]: Cloud-init v. 24.4 running 'init' (groundup sandbox)",
        "<14>Jan 15 00:00:03 ec2: ",
        "<14>Jan 15 00:00:03 ec2: #############################################################",
        "<14>Jan 15 00:00:03 ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----",
    ]
    for key in host_keys:
        lines.append(f"<14>Jan 15 00:00:03 ec2: 256 {_fingerprint(key)} root@{hostname} ({_kind(key)})")
    lines += [
        "<14>Jan 15 00:00:03 ec2: -----END SSH HOST KEY FINGERPRINTS-----",
        "<14>Jan 15 00:00:03 ec2: #############################################################",
        "-----BEGIN SSH HOST KEY KEYS-----",
        *[f"{key} root@{hostname}" for key in host_keys],
        "-----END SSH HOST KEY KEYS-----",
        "[    3.318000] cloud-init[601]: Cloud-init v. 24.4 finished. Datasource DataSourceEc2Local.",
    ]
    return "\r\n".join(lines) + "\r\n"


def _fingerprint(key: str) -> str:
    import hashlib

    blob = base64.b64decode(key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _kind(key: str) -> str:
    kind = key.split()[0]
    return {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA"}.get(kind, "ECDSA")


class CloudInit:
    """One sandbox's cloud-init, driven by the instances moto reports."""

    def __init__(self, state: Path, ec2=None) -> None:
        self.state = state
        record = read_record(state)
        self.nodes_by_ip: dict[str, dict] = {n["private_ip"]: n for n in record.get("nodes", [])}
        if ec2 is None:
            import boto3

            ec2 = boto3.client(
                "ec2",
                endpoint_url=record["moto"]["endpoint"],
                region_name=record["region"],
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
        self.ec2 = ec2
        self._public_keys: dict[str, str] = {}
        self._seen_user_data: set[str] = set()
        self._instances: dict[str, str] = {}

    def sync(self) -> dict[str, str]:
        """Bring every node in line with the instances moto reports; returns private IP -> id."""
        claims: dict[str, dict] = {}
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
        )
        for page in pages:
            for reservation in page["Reservations"]:
                for instance in reservation["Instances"]:
                    ip = instance.get("PrivateIpAddress")
                    if ip in self.nodes_by_ip:
                        current = claims.get(ip)
                        if current is None or instance["LaunchTime"] > current["LaunchTime"]:
                            claims[ip] = instance
        for ip, node in self.nodes_by_ip.items():
            instance = claims.get(ip)
            root = Path(node["root"])
            if instance is None:
                (root / "root/.ssh/authorized_keys").unlink(missing_ok=True)
                continue
            self._install_public_key(root, instance.get("KeyName"))
            self._write_console(instance["InstanceId"], node)
            self._write_instance_data(root, instance["InstanceId"])
        instances = {ip: claims[ip]["InstanceId"] for ip in sorted(claims)}
        if instances != self._instances:
            atomic_write(instances_path(self.state), json.dumps(instances, indent=1).encode())
            self._instances = instances
            log.info("instances on sandbox nodes: %s", instances)
        return instances

    def _public_key(self, key_name: str) -> str | None:
        if key_name not in self._public_keys:
            pairs = self.ec2.describe_key_pairs(KeyNames=[key_name], IncludePublicKey=True)["KeyPairs"]
            public = (pairs[0].get("PublicKey") or "").strip() if pairs else ""
            if not public:
                return None
            self._public_keys[key_name] = public
        return self._public_keys[key_name]

    def _install_public_key(self, root: Path, key_name: str | None) -> None:
        target = root / "root/.ssh/authorized_keys"
        public = self._public_key(key_name) if key_name else None
        if public is None:
            target.unlink(missing_ok=True)
            return
        content = (public + "\n").encode()
        if not target.exists() or target.read_bytes() != content:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(target, content, mode=0o600)
            log.info("installed key pair %s on %s", key_name, root.parent.name)

    def _write_console(self, instance_id: str, node: dict) -> None:
        path = console_dir(self.state) / instance_id
        if not path.exists():
            atomic_write(path, console_text(node["hostname"], [node["host_key"]]).encode())

    def _write_instance_data(self, root: Path, instance_id: str) -> None:
        if instance_id in self._seen_user_data:
            return
        attribute = self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        encoded = (attribute.get("UserData") or {}).get("Value") or ""
        user_data = base64.b64decode(encoded) if encoded else b""
        cloud = root / "var/lib/cloud"
        atomic_write(cloud / "instance/user-data.txt", user_data, mode=0o600)
        atomic_write(cloud / "data/instance-id", (instance_id + "\n").encode())
        self._seen_user_data.add(instance_id)


def run(state: Path, interval: float = 1.0) -> None:
    """Poll moto until SIGTERM."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    agent = CloudInit(state)
    while not stopping:
        try:
            agent.sync()
        except Exception as exc:  # moto restarting, a node directory going away: try again
            log.warning("sync failed: %s: %s", type(exc).__name__, exc)
        time.sleep(interval)


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    state = Path(argv[argv.index("--state") + 1])
    run(state)


if __name__ == "__main__":
    main(sys.argv[1:])
