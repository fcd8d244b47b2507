"""Depth for a replayed camera: the aligned depth and camera_info topics that RGB-D
drivers record beside the colour image (core.geometry.rgbd_topics finds them by name, no
flag), read in the same log-time pass as the colour frames and paired by nearest stamp.

A colour frame waits (at most LOOKAHEAD later colour frames) until a depth stamped at or
after it has been read, so a depth logged just after its frame still pairs; every pairing
depends on the bag's messages alone (Ray workers and the serial run agree). A depth or
camera_info that cannot serve is the frame's `depth` problem in results.jsonl; the frame
is processed without positions.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Iterable, Iterator

from ..core import depth_images
from ..core.config import DepthConfig
from ..core.errors import MrMllmError
from ..core.geometry import DepthFrame, intrinsics_from_camera_info
from ..core.geometry.rgbd_topics import BagDepth
from ..core.runtime.pairing import NearestStamp
from .bag_images import BadCdr, parse_image_cdr, typestore
from .bag_records import COMPRESSED_IMAGE, RawMessage

CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
LOOKAHEAD = 4  # colour frames that may wait for their depth


@dataclass(frozen=True)
class PairedDepth:
    """What a colour frame got: a DepthFrame, or why not (`problem`)."""

    depth: DepthFrame | None
    topic: str
    stamp_ns: int | None = None
    problem: str = ''

    def record(self) -> dict:
        """The results.jsonl entry."""
        out = {'topic': self.topic}
        if self.stamp_ns is not None:
            out['stamp_ns'] = self.stamp_ns
        if self.problem:
            out['problem'] = self.problem
        return out


def decode_depth(raw: RawMessage, max_pixels: int | None):
    """(stamp ns, (H, W) float32 metres) of a depth Image / CompressedImage message."""
    try:
        f = parse_image_cdr(raw.data, raw.msgtype)
    except BadCdr:
        raise MrMllmError(f'cannot deserialize the depth message on {raw.topic}') from None
    if raw.msgtype == COMPRESSED_IMAGE:
        return f.stamp_ns, depth_images.depth_from_compressed(f.encoding, f.data,
                                                              max_pixels=max_pixels)
    return f.stamp_ns, depth_images.depth_from_raw(f.encoding, f.height, f.width, f.step,
                                                   f.is_bigendian, f.data,
                                                   max_pixels=max_pixels)


def _intrinsics(raw: RawMessage):
    try:
        msg = typestore().deserialize_cdr(raw.data, CAMERA_INFO)
    except Exception as e:  # noqa: BLE001 - corrupt CDR: a problem of this frame, go on
        raise MrMllmError(f'cannot deserialize camera_info on {raw.topic} ({e})') from None
    return intrinsics_from_camera_info(list(msg.k), int(msg.width), int(msg.height))


class DepthPairing:
    """Pairs the colour messages of one camera with its depth (one replay unit)."""

    def __init__(self, topics: BagDepth, settings: DepthConfig, max_pixels: int | None):
        self.topics = topics
        self.settings = settings
        self.max_pixels = max_pixels
        self._depths: NearestStamp = NearestStamp(settings.pair_buffer_size)
        self._info: RawMessage | None = None
        self._newest_depth_ns: int | None = None

    @property
    def input_topics(self) -> tuple[str, str]:
        return self.topics.depth, self.topics.camera_info

    def take(self, stamp_ns: int | None) -> PairedDepth:
        """The depth of the colour frame stamped `stamp_ns` (call it when `pair` yields
        that frame: decoded only for the frames processed)."""
        if stamp_ns is None:
            return PairedDepth(None, self.topics.depth, problem='colour frame without header')
        found = self._depths.nearest(stamp_ns, int(self.settings.max_stamp_difference_s * 1e9))
        if found is None:
            return PairedDepth(None, self.topics.depth, problem='no depth within '
                               f'{self.settings.max_stamp_difference_s:g} s of the frame')
        if self._info is None:
            return PairedDepth(None, self.topics.depth, problem='no camera_info yet')
        try:
            depth_stamp, depth_m = decode_depth(found[1], self.max_pixels)
            k = _intrinsics(self._info)
        except MrMllmError as e:
            return PairedDepth(None, self.topics.depth, found[0], str(e))
        return PairedDepth(DepthFrame(depth_m, k, depth_stamp), self.topics.depth, depth_stamp)

    def pair(self, raws: Iterable[RawMessage], header_of) -> Iterator[RawMessage]:
        """The colour messages of `raws` in log order, each yielded once the depth that
        may pair with it has been read (then call `take`). `header_of(data)`: (stamp,
        frame_id) of a message from its bytes."""
        pending: deque = deque()  # (raw, stamp)
        for raw in raws:
            if raw.topic == self.topics.camera_info:
                self._info = raw
            elif raw.topic == self.topics.depth:
                head = header_of(raw.data)
                if head is not None:
                    self._depths.add(head[0], raw)
                    self._newest_depth_ns = head[0] if self._newest_depth_ns is None \
                        else max(self._newest_depth_ns, head[0])
            else:
                head = header_of(raw.data)
                pending.append((raw, head[0] if head else None))
            while pending and (len(pending) > LOOKAHEAD or (
                    pending[0][1] is not None and self._newest_depth_ns is not None
                    and self._newest_depth_ns >= pending[0][1])):
                yield pending.popleft()[0]
        while pending:
            yield pending.popleft()[0]
