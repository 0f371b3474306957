"""The sandbox lock: one holder at a time, and a child of the holder goes straight on."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sandbox.lock import held_by_ancestor, sandbox_lock

REPO = Path(__file__).resolve().parents[2]
CHILD = "import sys; from pathlib import Path; from sandbox.lock import held_by_ancestor; " \
        "print(held_by_ancestor(Path(sys.argv[1])))"


def test_a_holder_that_is_not_an_ancestor_is_waited_for_and_named(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    holder = subprocess.Popen(["flock", str(lock), "sleep", "1.5"])
    deadline = time.monotonic() + 5
    while str(holder.pid) not in Path("/proc/locks").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    messages: list[str] = []
    with sandbox_lock(lock, say=messages.append) as waited:
        assert holder.poll() is not None
    assert waited > 0.5
    assert messages == [f"waiting for the sandbox lock {lock}, held by pid {holder.pid} (flock {lock} sleep 1.5)"]


def test_a_child_of_flock_is_told_its_ancestor_holds_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    run = subprocess.run(["flock", str(lock), sys.executable, "-c", CHILD, str(lock)], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "True"
    alone = subprocess.run([sys.executable, "-c", CHILD, str(lock)], cwd=REPO, capture_output=True, text=True,
                           check=True)
    assert alone.stdout.strip() == "False"


def test_this_process_holding_it_counts(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    with sandbox_lock(lock):
        assert held_by_ancestor(lock)
    assert not held_by_ancestor(lock)
