"""What the bag reader hands out: bag and topic metadata, raw messages, decoded image
messages, and the log of what could not be read (shared by bag_reader, the salvage
readers and bag_images)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

from ..core.types import Frame

log = logging.getLogger(__name__)

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
STORAGE_SUFFIXES = {'.db3': 'sqlite3', '.mcap': 'mcap'}
NS = 1_000_000_000


@dataclass
class ReadLog:
    """What could not be read, and why. `problems` are storage-level (whole regions of a
    file); per-message decode failures are counted by the caller from BagMessage.error."""

    problems: list[str] = field(default_factory=list)
    messages_read: int = 0

    def problem(self, text: str) -> None:
        if text not in self.problems:
            log.warning('%s', text)
            self.problems.append(text)


@dataclass
class TopicInfo:
    name: str
    msgtype: str
    count: int | None  # None: unknown (salvaged file whose index is lost)


@dataclass
class BagInfo:
    """What a bag holds, from rosbags' metadata or, for a damaged bag, a salvage scan."""

    path: str      # resolved path, the bag's identity in every output
    storage: str   # 'sqlite3' | 'mcap'
    files: list[str]
    topics: dict[str, TopicInfo]
    start_ns: int | None
    end_ns: int | None  # exclusive
    message_count: int | None
    reader: str  # 'rosbags' | 'salvage'
    compression_mode: str | None = None  # rosbag2 'message' compression: zstd per message
    problems: list[str] = field(default_factory=list)

    def image_topics(self, wanted: Iterable[str] | None = None) -> list[str]:
        """Camera topics: Image/CompressedImage topics, less the depth images of RGB-D
        layouts (core.geometry.rgbd_topics: they are read with their colour camera)."""
        from ..core.geometry.rgbd_topics import depth_topics
        depth = depth_topics(self.topics)
        names = sorted(t for t, info in self.topics.items()
                       if info.msgtype in IMAGE_TYPES and t not in depth)
        if wanted is None:
            return names
        wanted = {norm_topic(t) for t in wanted}
        return [t for t in names if t in wanted]


class RawMessage(NamedTuple):  # a tuple: cheapest to make, once per message
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


@dataclass(frozen=True)
class BagMessage:
    """One image message: a decoded frame, or the reason it could not be decoded."""

    topic: str
    msgtype: str
    log_time_ns: int
    stamp_ns: int | None   # None when even the header could not be read
    frame_id: str
    encoding: str          # Image.encoding or CompressedImage.format
    width: int
    height: int
    frame: Frame | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.frame is not None


def norm_topic(topic: str) -> str:
    return '/' + topic.strip('/')
