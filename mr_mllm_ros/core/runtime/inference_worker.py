"""One long-lived thread per node that runs all of its model inference.

Why not the ROS executor's thread pool: torch (libgomp) gives every thread that enters a
parallel region its own OpenMP team, and glibc gives every allocating thread its own
malloc arena, which keeps the freed KV caches and activations for reuse. With inference
spread over scene_node's 12 executor threads, the 10,000-frame soak grew by 11 threads
and ~500 MiB as, one by one, each pool thread ran the MLLM (docs/RELIABILITY.md). One
thread means one team and one arena, whatever the executor does - the same reason
llama.cpp-based nodes run their model on a thread of their own.

Work comes in two kinds: a coalescing `tick()` ("there is something new; look at the
latest state when you are free" - many ticks before the worker wakes run `on_tick` once)
and queued jobs (`submit`, bounded by the caller's limit: full -> False, so a service can
answer "busy" at once). The worker goes round: the jobs waiting when the round starts, in
arrival order, then a pending tick. So questions that came in together are answered
before the next periodic description (a person is waiting on them), and a stream of
questions still lets a description through once per round.

The thread lives as long as the node, across lifecycle cycles: callbacks look at the
node's state and do nothing while it has no model, and a deactivate only `drain()`s the
queue. (Starting a fresh thread per activation made the 20-cycle test's RSS noisy.)
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from typing import Callable, Generic, TypeVar

J = TypeVar('J')

#: Longest the worker sleeps without a wake-up: bounds how late it notices `stop`.
_IDLE_WAIT_S = 0.2


class InferenceWorker(Generic[J]):
    def __init__(self, name: str, on_tick: Callable[[], None],
                 on_job: Callable[[J], None] | None = None,
                 on_error: Callable[[BaseException], None] | None = None):
        self.name = name
        self._on_tick, self._on_job, self._on_error = on_tick, on_job, on_error
        self._jobs: deque[J] = deque()
        self._lock = threading.Lock()  # the job queue: submit/drain vs. the worker
        self._busy = threading.Lock()  # held while a callback runs; see paused()
        self._wake = threading.Event()
        self._tick_wanted = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        """Start the thread (no-op while it runs)."""
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> list[J]:
        """End the thread after the work in hand (an inference in flight is not
        interrupted; wait at most `timeout_s` for it) and return the queued jobs nobody
        will run, so the caller can answer them."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None
        return self.drain()

    def drain(self) -> list[J]:
        """Take the queued jobs out (they will not run); the thread keeps going."""
        with self._lock:
            left = list(self._jobs)
            self._jobs.clear()
        self._tick_wanted.clear()
        return left

    @contextmanager
    def paused(self):
        """Wait for the callback in flight, and run none while inside (a lifecycle
        transition tearing down what the callbacks use: publishers, the model)."""
        with self._busy:
            yield

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def native_id(self) -> int | None:
        """The thread's id for the OS (None before start): its CPU priority can be set."""
        return self._thread.native_id if self._thread is not None else None

    # --------------------------------------------------------------------- input
    def tick(self) -> None:
        """Ask for one `on_tick` run (coalesced with any not yet started)."""
        self._tick_wanted.set()
        self._wake.set()

    def submit(self, job: J, max_pending: int | None = None) -> bool:
        """Queue a job; False when `max_pending` jobs are already waiting."""
        with self._lock:
            if max_pending is not None and len(self._jobs) >= max_pending:
                return False
            self._jobs.append(job)
        self._wake.set()
        return True

    def withdraw(self, job: J) -> bool:
        """Take a queued job back out (a cancelled question frees its place at once);
        False when it is not queued (already running, done or never queued)."""
        with self._lock:
            try:
                self._jobs.remove(job)
            except ValueError:
                return False
            return True

    def pending(self) -> int:
        with self._lock:
            return len(self._jobs)

    # ---------------------------------------------------------------------- loop
    def _next_job(self) -> tuple[bool, J | None]:
        with self._lock:
            return (True, self._jobs.popleft()) if self._jobs else (False, None)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(_IDLE_WAIT_S)
            # Clear before looking at the inputs: a tick or job that arrives after this
            # line sets it again, so no wake-up is lost.
            self._wake.clear()
            while not self._stop.is_set():
                ran = False
                for _ in range(self.pending()):  # this round's jobs
                    got, job = self._next_job()
                    if not got or self._stop.is_set():
                        break
                    ran = True
                    self._run(self._on_job, job)
                if self._tick_wanted.is_set() and not self._stop.is_set():
                    self._tick_wanted.clear()
                    ran = True
                    self._run(self._on_tick)
                if not ran:
                    break

    def _run(self, fn, *args) -> None:
        try:
            with self._busy:
                fn(*args)
        except Exception as e:  # a bug in one call must not end the node's only worker
            if self._on_error is not None:
                self._on_error(e)
