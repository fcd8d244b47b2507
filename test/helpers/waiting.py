"""Bounded waiting for tests: poll a condition until it holds or a deadline passes, never
a bare sleep standing in for "it has happened by now"."""

import time


def wait_until(predicate, timeout: float = 10.0, every: float = 0.01):
    """predicate()'s first true value within `timeout` s (polled every `every` s), else its
    last (false) value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()
