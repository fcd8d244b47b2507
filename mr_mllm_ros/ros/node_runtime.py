"""What every mr_mllm_ros node shares: offline environment, lifecycle autostart,
malformed-input bookkeeping, a single-threaded, signal-safe spin, and an end when the
parent process dies.

Why a SingleThreadedExecutor: rclpy's MultiThreadedExecutor (Kilted wheels) stalls. A
model-free echo of a VGA image with a 40 ms callback took 45-53 ms per round trip with a
single-threaded echo and 47-2925 ms with a multi-threaded one; perception_node's
closed-loop overhead went from p95 35-43 ms / max 73-131 ms to p95 14-17 / max 20-21 with
only this switched (benchmarks/bench_executor.py, docs/BENCHMARKS.md#executor). Nothing
in our nodes needs a second executor thread: callbacks are O(1) (they store a message and
wake a thread of the node's own), model calls run on the node's inference thread, and the
one callback that has to wait (ask_scene) is a coroutine that awaits its answer without
holding the executor."""

from __future__ import annotations

import ctypes
import gc
import sys
import threading
import time
from typing import Callable, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from ..core.errors import reason_key
from ..core.runtime.cpu_threads import apply_inference_env
from ..core.runtime.offline import apply_offline_env
from ..core.runtime.parent_watch import end_with_parent

class ErrorCounter:
    """Counts rejected inputs by reason and rate-limits their log lines: the first of each
    reason is logged at once, later ones at most once per `every_s` with a count, so a
    flood of bad messages cannot flood the log (or slow the node down)."""

    def __init__(self, logger, every_s: float = 5.0):
        self._logger = logger
        self._every_s = every_s
        self._lock = threading.Lock()
        self.by_reason: dict[str, int] = {}
        self._last_log: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def add(self, what: str, message: str) -> None:
        key = reason_key(message)
        now = time.monotonic()
        with self._lock:
            self.by_reason[key] = self.by_reason.get(key, 0) + 1
            last = self._last_log.get(key)
            if last is not None and now - last < self._every_s:
                self._unlogged[key] = self._unlogged.get(key, 0) + 1
                return
            suppressed = self._unlogged.pop(key, 0)
            self._last_log[key] = now
        more = f' (+{suppressed} more like it)' if suppressed else ''
        self._logger.warning(f'rejected {what}: {message}{more}')

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.by_reason.values())


def freeze_heap() -> None:
    """Once the model is loaded (activate): collect, then move every object alive now into
    Python's permanent generation (gc.freeze). A full collection otherwise walks the tens
    of thousands of objects that torch, OpenCV and the model bring (~5-50 ms measured on
    this machine, in whichever thread triggers it: a frame's callback or the inference
    thread), a pause at random frames; frozen objects are skipped. release_memory()
    unfreezes them again before a cleanup frees the model."""
    gc.collect()
    gc.freeze()


def release_memory() -> None:
    """After a model is freed (lifecycle cleanup): collect reference cycles and hand freed
    heap pages back to the OS. glibc keeps freed memory in per-thread arenas, so with a
    multi-threaded executor repeated load/free cycles otherwise ratchet RSS upwards."""
    gc.unfreeze()  # the freed model's objects must be collectable again
    gc.collect()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def autostart(node: LifecycleNode) -> None:
    """configure + activate, as a lifecycle manager would; a failed configure leaves the
    node alive and unconfigured (fix the cause, then `change_state configure` again)."""
    if node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
        node.trigger_activate()


def run_node(make_node: Callable[[], LifecycleNode] | Sequence[Callable[[], LifecycleNode]],
             args=None) -> int:
    """Create and spin node(s) in one process until shutdown (Ctrl-C / SIGTERM / the
    parent's death); exit 0. Several factories = several nodes sharing one executor (and
    one model runtime)."""
    apply_offline_env()
    apply_inference_env()  # before torch loads libgomp (in configure)
    rclpy.init(args=args if args is not None else sys.argv)
    end_with_parent()  # after init: rclpy's SIGTERM handler makes it a clean shutdown
    factories = list(make_node) if isinstance(make_node, Sequence) else [make_node]
    nodes: list[LifecycleNode] = []
    try:
        nodes = [f() for f in factories]
        executor = SingleThreadedExecutor()
        for node in nodes:
            executor.add_node(node)
            if node.get_parameter('autostart').value:
                # Transitions run beside the spinning executor so the timers and services
                # that configure creates attach to a live node.
                threading.Thread(target=autostart, args=(node,), daemon=True).start()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for node in nodes:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
