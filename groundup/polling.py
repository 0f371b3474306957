"""A bounded wait: look again until the answer is the one wanted or the time is up. No Prefect."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(read: Callable[[], T], done: Callable[[T], bool], timeout: float, interval: float = 1.0) -> T:
    """Call `read` until `done(answer)` holds or `timeout` seconds have passed; the last answer either way,
    so the caller judges (and names) what it saw instead of hanging."""
    deadline = time.monotonic() + timeout
    while True:
        answer = read()
        if done(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(interval)
