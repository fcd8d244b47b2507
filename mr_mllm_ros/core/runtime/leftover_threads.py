"""Threads that outlived their owner's bounded close (a ROS executor thread that did not
return within its join timeout), so a command-line process can exit without them.

Why: such a thread may still sit inside a middleware wait when the interpreter exits,
and the middleware's own teardown at exit can then wait for it for good (a `mr-mllm ask`
ended by SIGTERM on a 3x-oversubscribed machine did not exit within 30 s). A CLI process
whose work is done flushes its output and leaves with os._exit instead."""

from __future__ import annotations

import os
import sys
import threading

_names: list[str] = []
_lock = threading.Lock()


def note(name: str) -> None:
    """Record a thread that was left running."""
    with _lock:
        _names.append(name)


def names() -> list[str]:
    with _lock:
        return list(_names)


def exit_process(code: int) -> None:
    """End a command-line process with `code`: sys.exit, or, when a thread was left
    behind, os._exit after flushing stdout and stderr (nothing at exit waits for it)."""
    if names():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
