"""scene_node's frames: image and detection messages paired by stamp (core.runtime.pairing), the
newest pair decoded once for the frame thread and the MLLM thread, and any recent pair
decoded on demand for a question about that stamp.

Thread-safety: the executor adds messages, the frame thread takes the newest pair, the
MLLM thread reads `latest()` and `lookup()` (the pairer locks itself, `_latest` is locked).
"""

from __future__ import annotations

import threading

from sensor_msgs.msg import CompressedImage

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

    def add_image(self, msg) -> bool:
        """True when this completes a pair (wake the frame thread)."""
        return self._pairer.add_frame(conv.stamp_to_ns(msg.header.stamp), msg)

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
        return pair

    def latest(self) -> tuple[Frame, DetectionSet] | None:
        with self._lock:
            return self._latest

    def lookup(self, stamp_ns: int) -> tuple[Frame, DetectionSet] | str:
        """The pair with this stamp (0: the newest decoded), or why there is none."""
        if stamp_ns == 0:
            latest = self.latest()
            return latest if latest is not None else 'no frame received yet'
        pair = self._pairer.get(stamp_ns)
        if pair is None:
            stamps = self._pairer.stamps()
            held = f' (held: {stamps[0]}..{stamps[-1]} ns)' if stamps else ''
            return f'no frame with stamp {stamp_ns} ns{held}'
        return self._decode(*pair)

    def clear(self) -> None:
        with self._lock:
            self._latest = None
        self._pairer.clear()

    def _decode(self, image_msg, det_msg) -> tuple[Frame, DetectionSet]:
        frame = conv.frame_from_compressed(image_msg, max_pixels=self._max_pixels) \
            if isinstance(image_msg, CompressedImage) \
            else conv.frame_from_image(image_msg, max_pixels=self._max_pixels)
        return frame, conv.detection_set_from_msg(det_msg)
