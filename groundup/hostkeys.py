"""Where a node's SSH host keys come from, and their pins in the artifact store.

One path, on AWS and in the sandbox:
1. the pin in the store (`ssh/host-keys/<short_name>`), if it was taken from the same instance;
2. otherwise the instance's console output: the cloud-init `-----BEGIN SSH HOST KEY KEYS-----`
   block (the sandbox's moto serves what the sandbox's cloud-init printed there), pinned.
A pin taken from another instance is replaced (a terminated and relaunched instance has new keys,
so a rebuild reads them again instead of meeting "host key changed"); a pinned key the same
instance no longer presents is refused by `groundup.ssh`. Nothing here imports Prefect.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
END = "-----END SSH HOST KEY KEYS-----"
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "ssh-rsa", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
_KEY = re.compile(r"(?<![\w-])(" + "|".join(re.escape(t) for t in KEY_TYPES) + r")\s+([A-Za-z0-9+/]+={0,2})")
PIN_DIR = "ssh/host-keys"


class HostKeysUnavailable(RuntimeError):
    """No source has the node's host keys (yet)."""


def parse_console_host_keys(output: str) -> list[str]:
    """Host keys (`type base64`) from the last complete BEGIN/END SSH HOST KEY KEYS block.

    Console lines may carry prefixes (timestamps, `ec2:`) and CRLF endings; the fingerprint block
    cloud-init also prints is ignored. A block cut off before its END line is not used.
    """
    lines = output.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in lines:
        if BEGIN in line:
            current = []
        elif END in line:
            if current is not None:
                blocks.append(current)
            current = None
        elif current is not None:
            match = _KEY.search(line)
            if match:
                current.append(f"{match.group(1)} {match.group(2)}")
    for block in reversed(blocks):
        if block:
            return list(dict.fromkeys(block))
    return []


@dataclass(frozen=True)
class HostKeyPin:
    """The host keys pinned for one node, and where they were read."""

    node: str
    instance_id: str | None
    keys: tuple[str, ...]
    source: str

    def to_json(self) -> bytes:
        data = asdict(self)
        data["keys"] = list(self.keys)
        return json.dumps(data, indent=1).encode()

    @classmethod
    def from_json(cls, blob: bytes) -> HostKeyPin:
        data = json.loads(blob)
        return cls(node=data["node"], instance_id=data.get("instance_id"),
                   keys=tuple(data["keys"]), source=data.get("source", "unknown"))


def pin_path(short_name: str) -> str:
    return f"{PIN_DIR}/{short_name}"


def load_pin(store, short_name: str) -> HostKeyPin | None:
    try:
        blob = store.read(pin_path(short_name))
    except FileNotFoundError:
        return None
    return HostKeyPin.from_json(blob)


def save_pin(store, pin: HostKeyPin) -> None:
    store.write(pin_path(pin.node), pin.to_json())


CONSOLE_TAIL_LINES = 3
CONSOLE_TAIL_CHARS = 200


def console_tail(text: str) -> str:
    """The last few non-empty lines of a console output, printable characters only and each cut short,
    for an error message."""
    printable = ("".join(c for c in line if c.isprintable()).strip() for line in text.splitlines())
    lines = [line[:CONSOLE_TAIL_CHARS] for line in printable if line]
    if not lines:
        return "the console output is empty (the instance has not printed anything yet)"
    return "the console output ends: " + " | ".join(lines[-CONSOLE_TAIL_LINES:])


STEADY_POLL_S = 15.0
"""How long the console output is read every second before the wait between reads doubles."""


def resolve_host_keys(store, short_name: str, address: str, instance_id: str | None,
                      console_output: Callable[[str], str] | None = None, *,
                      timeout: float = 120.0, sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> HostKeyPin:
    """The node's pinned host keys, reading and pinning them first when needed.

    `console_output(instance_id)` returns the decoded EC2 console output; it is polled until the
    host-key block appears (cloud-init prints it late in the first boot) or `timeout` passes.
    """
    pin = load_pin(store, short_name)
    if pin is not None and pin.keys and (instance_id is None or pin.instance_id in (None, instance_id)):
        return pin
    started = clock()
    deadline = started + timeout
    delay = 1.0
    text = ""
    while True:
        keys: list[str] = []
        if console_output is not None and instance_id:
            text = console_output(instance_id) or ""
            keys = parse_console_host_keys(text)
        if keys:
            new = HostKeyPin(node=short_name, instance_id=instance_id, keys=tuple(keys), source="console-output")
            save_pin(store, new)
            return new
        if clock() + delay > deadline:
            raise HostKeysUnavailable(
                f"no host keys for {short_name} ({address}, instance {instance_id}): the console output "
                f"has no '{BEGIN}' block after {timeout:.0f} s; {console_tail(text)}. "
                "Wait for cloud-init to finish and retry."
            )
        sleep(delay)
        # Every second while a boot may be about to finish (a doubling wait found keys printed at 3.1 s only
        # at 7 s), then backing off to 10 s for a slow first boot.
        delay = 1.0 if clock() - started < STEADY_POLL_S else min(delay * 2, 10.0)
