"""The sandbox's cloud-init: what EC2 and cloud-init do for an instance, done for a sandbox node.

On AWS, cloud-init installs the key pair's public key for the login user, keeps the instance's
user-data and id under `/var/lib/cloud/`, and prints the instance's SSH host keys to the console.
The sandbox's controller (sandbox.controller) does the same for each node it boots:

- `seed` (before the node boots): the key pair's public key (moto knows it from ImportKeyPair)
  in `/root/.ssh/authorized_keys`, the user-data and the instance id;
- `write_console` (once the node's sshd answers): the console output, with a cloud-init style
  `BEGIN SSH HOST KEY KEYS` block holding the node's real host key, which the sandbox's moto
  serves from GetConsoleOutput (sandbox.moto_console).
"""

from __future__ import annotations

import base64
import hashlib
import textwrap
from pathlib import Path

from sandbox.state import atomic_write, console_dir


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
    blob = base64.b64decode(key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _kind(key: str) -> str:
    kind = key.split()[0]
    return {"ssh-ed25519": "ED25519", "ssh-rsa": "RSA"}.get(kind, "ECDSA")


def public_key(ec2, key_name: str | None) -> str | None:
    """The key pair's public key as moto holds it; None without a key pair."""
    if not key_name:
        return None
    pairs = ec2.describe_key_pairs(KeyNames=[key_name], IncludePublicKey=True)["KeyPairs"]
    public = (pairs[0].get("PublicKey") or "").strip() if pairs else ""
    return public or None


def user_data(ec2, instance_id: str) -> bytes:
    attribute = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    encoded = (attribute.get("UserData") or {}).get("Value") or ""
    return base64.b64decode(encoded) if encoded else b""


def seed(root: Path, instance_id: str, authorized_key: str | None, data: bytes) -> None:
    """What cloud-init writes on an instance's disk before anyone logs in."""
    target = root / "root/.ssh/authorized_keys"
    if authorized_key is None:
        target.unlink(missing_ok=True)
    else:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(target, (authorized_key + "\n").encode(), mode=0o600)
    cloud = root / "var/lib/cloud"
    atomic_write(cloud / "instance/user-data.txt", data, mode=0o600)
    atomic_write(cloud / "data/instance-id", (instance_id + "\n").encode())


def write_console(state: Path, instance_id: str, hostname: str, host_keys: list[str]) -> Path:
    """The instance's console output, as moto will serve it."""
    path = console_dir(state) / instance_id
    atomic_write(path, console_text(hostname, host_keys).encode())
    return path


def unplayed_console_text(instance_id: str, reason: str) -> str:
    """What the console of an instance no node plays says: that, and why (in lines short enough to be
    quoted whole where a console's last lines are shown)."""
    lines = [f"no node runs instance {instance_id}", *textwrap.wrap(reason, 120)]
    return "".join(f"[    0.000000] groundup sandbox: {line}\r\n" for line in lines)


def write_unplayed_console(state: Path, instance_id: str, reason: str) -> bool:
    """Tell through the instance's console output why no node plays it (as EC2 shows a stuck boot); returns
    whether it wrote (not when the console already says so)."""
    path = console_dir(state) / instance_id
    text = unplayed_console_text(instance_id, reason).encode()
    if path.is_file() and path.read_bytes() == text:
        return False
    atomic_write(path, text)
    return True
