"""The bounded wait every check that waits shares."""

from __future__ import annotations

import time

from groundup.polling import poll


def test_poll_returns_the_first_answer_wanted():
    answers = iter([1, 2, 3, 4])
    assert poll(lambda: next(answers), lambda a: a == 3, timeout=5, interval=0) == 3


def test_poll_gives_up_after_its_timeout_with_the_last_answer():
    started = time.monotonic()
    assert poll(lambda: "not yet", lambda a: False, timeout=0.2, interval=0.05) == "not yet"
    assert 0.2 <= time.monotonic() - started < 2
