"""Small rolling statistics for diagnostics and benchmarks (thread-safe)."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np


class RollingStats:
    """Values (e.g. latencies in ms) and their arrival times over the last `window` events."""

    def __init__(self, window: int = 200):
        self._values: deque[float] = deque(maxlen=window)
        self._times: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, value: float, now: float | None = None) -> None:
        with self._lock:
            self._values.append(float(value))
            self._times.append(time.monotonic() if now is None else now)
            self.count += 1

    def rate_hz(self, now: float | None = None, horizon_s: float = 5.0) -> float:
        """Events per second over the last `horizon_s` seconds."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._times if now - t <= horizon_s]
        if len(recent) < 2:
            return 0.0
        # Events older than the horizon are gone, so a stopped stream decays to 0.
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)

    def percentile(self, q: float) -> float:
        with self._lock:
            vals = list(self._values)
        return float(np.percentile(vals, q)) if vals else 0.0

    def mean(self) -> float:
        with self._lock:
            vals = list(self._values)
        return float(np.mean(vals)) if vals else 0.0

    def last(self) -> float:
        """The newest value (0 before any)."""
        with self._lock:
            return self._values[-1] if self._values else 0.0

    def last_time(self) -> float | None:
        with self._lock:
            return self._times[-1] if self._times else None
