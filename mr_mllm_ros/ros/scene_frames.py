"""scene_node's frames: image and detection messages paired by stamp (core.runtime.pairing), the
newest pair decoded once for the frame thread and the MLLM thread, and any recent pair
decoded on demand for a question about that stamp.

Thread-safety: the executor adds messages, the frame thread takes the newest pair, the
MLLM thread reads `latest()` and `lookup()` (the pairer locks itself, `_latest` is locked).

Freshness (ask_scene's max_age_s): each image's arrival time (monotonic) is kept beside
it, so a question can tell how old the newest frame with detections is (`newest_age`),
how old the newest image at all is, and when the frame it was answered about arrived.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from ..core.runtime.pairing import StampPairer
from ..core.types import DetectionSet, Frame
from . import conversions as conv


class SceneFrames:
    def __init__(self, capacity: int, max_pixels: int):
        self._pairer: StampPairer = StampPairer(capacity)
        self._max_pixels = max_pixels
        self._lock = threading.Lock()
        self._latest: tuple[Frame, DetectionSet] | None = None  # newest decoded pair
        self._taken = -1  # stamp of the newest pair handed to the frame thread
        # image stamp -> arrival (monotonic s), for more images than the pairer keeps
        self._capacity = 4 * capacity
        self._arrived: OrderedDict[int, float] = OrderedDict()
        self._last_image_s: float | None = None
        self._latest_arrived: float | None = None

    def add_image(self, msg) -> bool:
        """True when this completes a pair (wake the frame thread)."""
        stamp, now = conv.stamp_to_ns(msg.header.stamp), time.monotonic()
        with self._lock:
            if stamp not in self._arrived:  # a re-sent image is not a newer one
                self._arrived[stamp] = now
                while len(self._arrived) > self._capacity:
                    self._arrived.popitem(last=False)
            self._last_image_s = now
        return self._pairer.add_frame(stamp, msg)

    def add_detections(self, msg) -> bool:
        return self._pairer.add_detections(conv.stamp_to_ns(msg.header.stamp), msg)

    def take_newest(self) -> tuple[Frame, DetectionSet] | None:
        """The newest pair not taken before, decoded (and kept as `latest()`); None when
        there is none. Raises MrMllmError for an undecodable image."""
        newest = self._pairer.latest()
        if newest is None or newest[0] <= self._taken:
            return None
        stamp, image_msg, det_msg = newest
        self._taken = stamp
        pair = self._decode(image_msg, det_msg)
        with self._lock:
            self._latest = pair
            self._latest_arrived = self._arrival(stamp)
        return pair

    def latest(self) -> tuple[Frame, DetectionSet] | None:
        with self._lock:
            return self._latest

    def lookup(self, stamp_ns: int) -> tuple[Frame, DetectionSet] | str:
        """The pair with this stamp (0: the newest decoded), or why there is none. Only a
        pair other than the newest is decoded here (the newest is decoded once)."""
        latest = self.latest()
        if stamp_ns == 0:
            return latest if latest is not None else 'no frame received yet'
        if latest is not None and latest[0].stamp_ns == stamp_ns:
            return latest
        pair = self._pairer.get(stamp_ns)
        if pair is None:
            stamps = self._pairer.stamps()
            held = f' (held: {stamps[0]}..{stamps[-1]} ns)' if stamps else ''
            return f'no frame with stamp {stamp_ns} ns{held}'
        return self._decode(*pair)

    def _arrival(self, stamp_ns: int) -> float | None:
        """(lock held) When the image arrived; one whose time was already dropped is older
        than every image kept, so the oldest time kept bounds its age from below."""
        arrived = self._arrived.get(stamp_ns)
        if arrived is None and self._arrived:
            arrived = next(iter(self._arrived.values()))
        return arrived

    def received_at(self, stamp_ns: int) -> float | None:
        """When the image with this stamp arrived (monotonic s); None before any image."""
        with self._lock:
            return self._arrival(stamp_ns)

    def newest_age(self, now_s: float) -> float | None:
        """Seconds since the newest decoded pair's image arrived (the frame a question
        about 'now' is answered on); None before the first pair."""
        with self._lock:
            arrived = self._latest_arrived if self._latest is not None else None
        return now_s - arrived if arrived is not None else None

    def newest_image_age(self, now_s: float) -> float | None:
        """Seconds since any image arrived (with or without detections)."""
        with self._lock:
            return now_s - self._last_image_s if self._last_image_s is not None else None

    def clear(self) -> None:
        with self._lock:
            self._latest = self._latest_arrived = self._last_image_s = None
            self._arrived.clear()
        self._pairer.clear()

    def _decode(self, image_msg, det_msg) -> tuple[Frame, DetectionSet]:
        frame = conv.frame_from_msg(image_msg, max_pixels=self._max_pixels)
        return frame, conv.detection_set_from_msg(det_msg)
