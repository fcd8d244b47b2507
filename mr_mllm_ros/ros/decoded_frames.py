"""Images decoded once per process where nodes share one: in the one-process mode
(nodes/combined.py, `mr-mllm up --one-process`) perception_node and scene_node subscribe to
the same image topic. rclpy hands each subscription its own copy of the message, so without
this each node would decode the same JPEG (or swap the same bgr8 image) again: scene_node
decodes a frame once perception_node's detections for it arrive, i.e. after
perception_node decoded it.

The nodes stay unaware of each other: both call conversions.frame_from_msg as in separate
processes; only the combined entry point turns sharing on (`conversions.share_decoded_frames`).
A frame is found again by its message's stamp, frame_id, format/encoding and size, and only
when the message bytes are the same (a stamp alone is not unique: test publishers and
replays re-use stamps). Comparing bytes costs ~0.01 ms for a 60 kB JPEG and ~0.35 ms for a
3 MB raw image, against 3 ms (JPEG 512x512) and 10 ms (bgr8 1024x1024) to decode them again.

Shared frames are read-only (flags.writeable False), so one node cannot change the other's
pixels; rgb8 frames are read-only views on their message in every mode anyway, and those are
not kept (decoding them copies nothing).

Thread-safety: perception_node's worker thread and scene_node's frame / MLLM threads call
`frame()` concurrently; the table is locked, decoding is not (two threads that miss at once
both decode, and the later one is kept).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from ..core.types import Frame

#: Frames kept. perception_node works on the newest image only (one slot per camera) and
#: scene_node decodes the frame whose detections just arrived, so the frame it asks for is
#: one of the last two perception_node decoded; 4 leaves room for a second camera topic.
CAPACITY = 4


class DecodedFrames:
    def __init__(self, capacity: int = CAPACITY):
        self._capacity = capacity
        self._lock = threading.Lock()
        # key -> (the message's bytes, the frame decoded from them)
        self._frames: OrderedDict[tuple, tuple[Any, Frame]] = OrderedDict()
        self.hits = self.misses = 0

    def frame(self, msg, key: tuple, camera: str,
              decode: Callable[[], Frame]) -> Frame:
        """The frame of `msg` (an image message whose header, format/encoding and size
        `key` names): decoded here by `decode()`, or the one decoded before from the same
        bytes, with `camera` set."""
        with self._lock:
            kept = self._frames.get(key)
        if kept is not None and _same_bytes(kept[0], msg.data):
            with self._lock:
                self.hits += 1
            found = kept[1]
            return found if found.camera == camera else dataclasses.replace(found, camera=camera)
        frame = decode()
        with self._lock:
            self.misses += 1
        if np.may_share_memory(frame.image, np.frombuffer(msg.data, np.uint8)):
            return frame  # a view on the message: decoding it again copies nothing
        frame.image.flags.writeable = False
        with self._lock:
            self._frames[key] = (msg.data, frame)
            self._frames.move_to_end(key)
            while len(self._frames) > self._capacity:
                self._frames.popitem(last=False)
        return frame


def _same_bytes(a, b) -> bool:
    if a is b:
        return True
    x, y = np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)
    return x.shape == y.shape and bool(np.array_equal(x, y))
