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


def client_output(proc, timeout: float) -> tuple[str, str]:
    """(stdout, stderr) of a client process that must end by itself within `timeout` s;
    a client that does not is killed and the test fails with its stderr's tail."""
    import subprocess
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f'a client did not exit within {timeout:.0f} s (hung); its '
                             f'stderr: {err[-3000:]}') from None
