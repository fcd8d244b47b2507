"""RGB-D test bags of the Middlebury motorcycle (real colour, ground-truth depth,
published calibration; core.assets.rgbd_sample), in RGB-D drivers' topic layouts."""

from __future__ import annotations

from pathlib import Path

from mr_mllm_ros.core.assets.rgbd_sample import motorcycle_rgbd
from mr_mllm_ros.core.geometry import LAYOUTS
from mr_mllm_ros.replay.bag_writer import (camera_info_message, depth_message, image_message,
                                           odometry_message, write_bag)

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
FRAME = 'camera_color_optical_frame'


def motorcycle_bag(path: Path, storage: str, layout: str = 'realsense', namespace: str = '/cam',
                   encoding: str = '16UC1', compressed: bool = False, frames: int = 3,
                   depth_offset_ns: int = 3_000_000, period_s: float = 0.1,
                   odometry=None) -> dict:
    """The motorcycle `frames` times (stamps period_s apart; the depth stamped
    depth_offset_ns after its colour image, as drivers do); `odometry`: a robot Pose to
    record on /odom at every frame's stamp. Returns the topic names."""
    s = motorcycle_rgbd()
    t = LAYOUTS[layout]
    image, depth, info = (f'{namespace}/{t.image}', f'{namespace}/{t.depth}',
                          f'{namespace}/{t.camera_info}')
    if compressed:
        depth += '/compressedDepth'
    stamps = [T0 + round(i * period_s * NS) for i in range(frames)]
    extra = {} if odometry is None else {
        '/odom': [odometry_message(odometry, st) for st in stamps]}
    write_bag(path, {
        **extra,
        image: [image_message(s.rgb, 'rgb8', st, FRAME) for st in stamps],
        depth: [depth_message(s.depth_m, encoding, st + depth_offset_ns, FRAME, compressed)
                for st in stamps],
        info: [camera_info_message(s.intrinsics, st, FRAME) for st in stamps],
    }, storage, start_ns=T0, period_s=period_s)
    return {'image': image, 'depth': depth, 'camera_info': info}
