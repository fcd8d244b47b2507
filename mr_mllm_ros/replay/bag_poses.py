"""The robot's poses recorded in a bag (nav_msgs/Odometry), for the replay's memory of
places: positions of a bag with odometry are stored in the odometry frame, through the
pose at each frame's stamp and the camera's mounting (memory.camera_mount), as memory_node
does live. Found with no flag: the bag's Odometry topic (the first by name when several)."""

from __future__ import annotations

import logging
from pathlib import Path

from ..core.errors import MrMllmError
from ..core.geometry import Pose, PoseBuffer
from .bag_images import typestore
from .bag_reader import ReadLog, iter_raw, open_bag

log = logging.getLogger(__name__)

ODOMETRY = 'nav_msgs/msg/Odometry'
MAX_POSES = 2_000_000  # per bag (a day at 20 Hz); beyond, the oldest are dropped


def odometry_topic(bag: str | Path) -> str | None:
    try:
        info = open_bag(bag)
    except MrMllmError:
        return None
    topics = sorted(t for t, ti in info.topics.items() if ti.msgtype == ODOMETRY)
    return topics[0] if topics else None


def bag_poses(bag: str | Path, max_gap_ns: int) -> PoseBuffer | None:
    """The bag's odometry as a PoseBuffer (frame_id: its header frame), None without."""
    topic = odometry_topic(bag)
    if topic is None:
        return None
    poses = PoseBuffer(MAX_POSES, max_gap_ns)
    store = typestore()
    for raw in iter_raw(open_bag(bag), [topic], readlog=ReadLog()):
        try:
            m = store.deserialize_cdr(raw.data, ODOMETRY)
            p, q = m.pose.pose.position, m.pose.pose.orientation
            pose = Pose.of((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
        except Exception as e:  # noqa: BLE001 - a corrupt or zero pose: skip it, go on
            log.warning('%s: odometry message skipped (%s)', topic, e)
            continue
        poses.add(int(m.header.stamp.sec) * 1_000_000_000 + int(m.header.stamp.nanosec), pose,
                  m.header.frame_id)
    return poses if len(poses) else None
