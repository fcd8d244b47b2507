"""Pair each frame with its detections by stamp (both carry the image header), in small
bounded buffers - the job message_filters' exact-time synchronizer does on a full ROS
install. ROS-free and thread-safe; the items are whatever the caller stores (the scene
node stores raw messages and decodes only the pairs it uses)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

F = TypeVar('F')
D = TypeVar('D')


class StampPairer(Generic[F, D]):
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._frames: OrderedDict[int, F] = OrderedDict()
        self._dets: OrderedDict[int, D] = OrderedDict()
        self._lock = threading.Lock()
        self._newest_pair: int | None = None
        self.unpaired_dropped = 0  # items evicted before their partner arrived

    def _put(self, store: OrderedDict, other: OrderedDict, stamp: int, item) -> bool:
        with self._lock:
            store[stamp] = item
            store.move_to_end(stamp)
            while len(store) > self.capacity:
                old, _ = store.popitem(last=False)
                if old not in other:
                    self.unpaired_dropped += 1
            paired = stamp in other
            if paired and (self._newest_pair is None or stamp >= self._newest_pair):
                self._newest_pair = stamp
            return paired

    def add_frame(self, stamp: int, frame: F) -> bool:
        """Store a frame; True when its detections are already here (a new pair)."""
        return self._put(self._frames, self._dets, stamp, frame)

    def add_detections(self, stamp: int, detections: D) -> bool:
        return self._put(self._dets, self._frames, stamp, detections)

    def get(self, stamp: int) -> tuple[F, D] | None:
        with self._lock:
            if stamp in self._frames and stamp in self._dets:
                return self._frames[stamp], self._dets[stamp]
            return None

    def latest(self) -> tuple[int, F, D] | None:
        """The newest complete pair (by stamp)."""
        with self._lock:
            s = self._newest_pair
            if s is None or s not in self._frames or s not in self._dets:
                return None
            return s, self._frames[s], self._dets[s]

    def stamps(self) -> list[int]:
        with self._lock:
            return sorted(s for s in self._frames if s in self._dets)

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._dets.clear()
            self._newest_pair = None


T = TypeVar('T')


class NearestStamp(Generic[T]):
    """The last `capacity` items of one stream (depth images), looked up by the stamp
    nearest to another stream's (a colour image's) within a tolerance: RGB-D drivers stamp
    depth and colour separately (RealSense), so an exact match is not guaranteed.
    Thread-safe; `add` is O(1) amortised."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[int, T] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, stamp: int, item: T) -> None:
        with self._lock:
            self._items[stamp] = item
            self._items.move_to_end(stamp)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def nearest(self, stamp: int, tolerance_ns: int) -> tuple[int, T] | None:
        """(stamp, item) nearest to `stamp` within tolerance_ns, else None."""
        with self._lock:
            if not self._items:
                return None
            best = min(self._items, key=lambda s: abs(s - stamp))
            if abs(best - stamp) > tolerance_ns:
                return None
            return best, self._items[best]

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
