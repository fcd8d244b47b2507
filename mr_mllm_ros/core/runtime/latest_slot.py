"""Latest-value slots: the intake policy of every node.

A camera callback only swaps the newest message into a slot (O(1), never blocks on
inference); the worker takes whatever is newest when it is free. Under overload the
older frames are overwritten and counted as dropped, so latency stays bounded and no
queue grows (the anti-pattern is inference inside a depth-10 reliable callback queue).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, Hashable, TypeVar

T = TypeVar('T')


class LatestSlots(Generic[T]):
    """One slot per key (camera); `take` serves keys round-robin so one fast camera
    cannot starve the others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: OrderedDict[Hashable, T] = OrderedDict()
        self.received = 0
        self.dropped = 0

    def put(self, key: Hashable, item: T) -> bool:
        """Store `item` as the newest for `key`; True when it overwrote an unserved one."""
        with self._lock:
            self.received += 1
            overwrote = key in self._slots
            if overwrote:
                self.dropped += 1
                self._slots[key] = item  # keeps the key's place in the round-robin order
            else:
                self._slots[key] = item
            return overwrote

    def take(self) -> tuple[Hashable, T] | None:
        """The pending item of the key waiting longest, or None."""
        with self._lock:
            if not self._slots:
                return None
            return self._slots.popitem(last=False)

    def pending(self) -> int:
        with self._lock:
            return len(self._slots)

    def clear(self) -> None:
        with self._lock:
            self._slots.clear()
