"""The sandbox's marked block in a hosts file: the load balancers' DNS names and their addresses.

The block is the only part of the file the sandbox writes; every other line stays as it was:

    # BEGIN groundup-sandbox load balancers
    10.240.0.250 k8s-cluster-from-ground-up-1.us-east-2.elb.amazonaws.com
    # END groundup-sandbox load balancers

`read_block`, `replace_block` and `remove_block` are pure (text in, text out); `write_block` and
`remove_from` apply them to a file atomically and only when its content changes.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from groundup import files

BEGIN = "# BEGIN groundup-sandbox load balancers"
END = "# END groundup-sandbox load balancers"
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


class HostsBlockError(ValueError):
    """A hosts file's marked block is broken; the message says which line to fix."""


def _entries(entries: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(name, address) pairs, checked, sorted by name."""
    pairs = list(entries.items()) if isinstance(entries, Mapping) else list(entries)
    for name, address in pairs:
        if not _HOSTNAME.match(name):
            raise ValueError(f"{name!r} is not a host name that can go into a hosts file")
        ipaddress.ip_address(address)
    return sorted(pairs)


def render_block(entries: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """The marked block for `entries` (DNS name -> address), empty when there are none."""
    pairs = _entries(entries)
    if not pairs:
        return ""
    return "\n".join([BEGIN, *(f"{address} {name}" for name, address in pairs), END]) + "\n"


def _spans(lines: list[str]) -> list[tuple[int, int]]:
    """(begin, end) line indexes of every marked block, end inclusive."""
    spans, begin = [], None
    for index, line in enumerate(lines):
        if line.strip() == BEGIN:
            if begin is not None:
                raise HostsBlockError(f"line {begin + 1}: {BEGIN!r} has no {END!r} before the next BEGIN; "
                                      "delete the broken block by hand")
            begin = index
        elif line.strip() == END:
            if begin is None:
                raise HostsBlockError(f"line {index + 1}: {END!r} without a BEGIN above it; delete that line by hand")
            spans.append((begin, index))
            begin = None
    if begin is not None:
        raise HostsBlockError(f"line {begin + 1}: {BEGIN!r} has no {END!r}; delete the broken block by hand")
    return spans


def read_block(text: str) -> dict[str, str]:
    """The DNS name -> address entries of the marked block(s) in `text`."""
    lines = text.splitlines()
    entries = {}
    for begin, end in _spans(lines):
        for line in lines[begin + 1:end]:
            fields = line.split("#", 1)[0].split()
            for name in fields[1:]:
                entries[name] = fields[0]
    return entries


def remove_block(text: str) -> str:
    """`text` without the marked block(s); every other line unchanged."""
    lines = text.splitlines(keepends=True)
    drop = {i for begin, end in _spans([line.rstrip("\n") for line in lines]) for i in range(begin, end + 1)}
    return "".join(line for i, line in enumerate(lines) if i not in drop)


def replace_block(text: str, entries: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """`text` with exactly one marked block holding `entries` (none when empty), where the first one was
    or else at the end."""
    block = render_block(entries)
    lines = text.splitlines(keepends=True)
    spans = _spans([line.rstrip("\n") for line in lines])
    if not spans:
        if not block:
            return text
        if text and not text.endswith("\n"):
            text += "\n"
        return text + block
    first = spans[0][0]
    head = "".join(lines[:first])
    return head + block + remove_block("".join(lines[first:]))


def write_block(path: Path, entries: Mapping[str, str] | Iterable[tuple[str, str]]) -> bool:
    """Make `path`'s marked block hold `entries`; True when the file changed. A missing file is
    created (mode 0644) when its directory exists."""
    try:
        old = path.read_text()
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        old, mode = "", 0o644
    new = replace_block(old, entries)
    if new == old:
        return False
    _write(path, new, mode)
    return True


def remove_from(path: Path) -> bool:
    """Remove the marked block from `path`; True when the file changed (False when it does not exist)."""
    try:
        old = path.read_text()
    except FileNotFoundError:
        return False
    new = remove_block(old)
    if new == old:
        return False
    _write(path, new, path.stat().st_mode & 0o7777)
    return True


def has_block(path: Path) -> bool:
    """Whether `path` holds a marked block (False when it does not exist)."""
    try:
        return any(line.strip() == BEGIN for line in path.read_text().splitlines())
    except FileNotFoundError:
        return False


def _write(path: Path, text: str, mode: int) -> None:
    """Atomic rename; in place where the file is a mount point (a bind-mounted /etc/hosts cannot be
    renamed over)."""
    try:
        files.atomic_write(path, text.encode(), mode=mode, durable=False)
    except OSError as error:
        if error.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM):
            raise
        with open(path, "r+") as handle:
            handle.write(text)
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())
