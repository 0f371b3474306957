"""One user of the sandbox at a time: the test suite, `make bench`, `make chaos` and CI take this lock.

The sandbox has one moto, one Prefect server and one set of nodes; two test sessions sharing it tear
each other's clusters (and, at the end, the sandbox itself) down. The lock is an advisory `flock` on a
file, so `flock /tmp/groundup-sandbox.lock COMMAND` takes it from a shell, and a process whose
ancestor already holds it (CI's `.ci/run`, or a user's `flock ... make test`) goes straight on.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK = Path("/tmp/groundup-sandbox.lock")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _ancestors() -> list[int]:
    found, pid = [], os.getpid()
    while pid > 1:
        found.append(pid)
        try:
            pid = _parent(pid)
        except (OSError, ValueError, IndexError):
            break
    return found


def _holders(path: Path) -> list[int]:
    """Pids that hold a flock on `path`, from /proc/locks."""
    try:
        inode = path.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            pids.append(int(fields[4]))
    return pids


def held_by_ancestor(path: Path = LOCK) -> bool:
    """True when this process or one of its ancestors holds the lock (or runs `flock PATH ...`)."""
    mine = _ancestors()
    if set(mine) & set(_holders(path)):
        return True
    for pid in mine[1:]:
        try:
            if str(path).encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                return True
        except OSError:
            continue
    return False


def describe(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:160]
    except OSError:
        return "?"


@contextmanager
def sandbox_lock(path: Path = LOCK, say=None) -> Iterator[float]:
    """Hold the sandbox lock for the block (at once if an ancestor holds it); yields seconds waited."""
    say = say or (lambda message: print(message, file=sys.stderr, flush=True))
    started = time.monotonic()
    if held_by_ancestor(path):
        yield 0.0
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holders = ", ".join(f"pid {pid} ({describe(pid)})" for pid in _holders(path)) or "another process"
            say(f"waiting for the sandbox lock {path}, held by {holders}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.monotonic() - started
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
