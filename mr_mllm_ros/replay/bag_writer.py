"""The package's one bag writer: `open_writer` opens every rosbags rosbag2 writer (sqlite3
or mcap; `mr-mllm record`, the replay's result bags, the bags written here) and
`open_mcap_writer` the plain MCAP files (Foxglove clips). Image messages into a bag with
no ROS needed: image sequences become recordings (`mr-mllm eval` data sets, benchmarks)
and the test bags; messages carry this package's message definitions
(replay.result_messages' typestore), so the bags read back like recorded ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..core import image_codecs
from ..core.errors import ImageConversionError
from ..core.images import rgb_to_encoding

NS = 1_000_000_000


def open_writer(path: str | os.PathLike, storage: str = 'sqlite3'):
    """An open rosbags Writer of a new rosbag2 bag at `path` (metadata version 9) in
    `storage` (sqlite3 or mcap); the caller closes it."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    writer = Writer(Path(path), version=9, storage_plugin=plugin)
    writer.open()
    return writer


def open_mcap_writer(stream, library: str):
    """A started mcap Writer on the binary `stream` (a plain MCAP file, not a rosbag2)."""
    from mcap.writer import Writer
    writer = Writer(stream)
    writer.start(profile='', library=library)
    return writer


def image_message(rgb: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = 'camera',
                  pad: int = 0):
    """A rosbags sensor_msgs Image (raw `encoding`) or CompressedImage (`jpeg`/`png`) of an
    (H, W, 3) RGB image; `pad`: extra bytes at the end of each row (step > width).
    An encoding core.images.rgb_to_encoding cannot write is labelled `encoding` over
    rgb8 bytes (for testing readers)."""
    from .result_messages import result_typestore
    ts = result_typestore()
    header = ts.types['std_msgs/msg/Header'](
        stamp=ts.types['builtin_interfaces/msg/Time'](sec=stamp_ns // NS,
                                                      nanosec=stamp_ns % NS),
        frame_id=frame_id)
    if encoding in ('jpeg', 'png'):
        return ts.types['sensor_msgs/msg/CompressedImage'](
            header=header, format=encoding,
            data=np.frombuffer(image_codecs.encode_compressed(rgb, encoding), np.uint8))
    try:
        raw = image_codecs.image_to_raw(rgb_to_encoding(rgb, encoding), encoding)
    except ImageConversionError:
        raw = image_codecs.image_to_raw(rgb, 'rgb8')
    step = raw.step + pad
    data = np.zeros(step * raw.height, np.uint8).reshape(raw.height, step)
    data[:, :raw.step] = np.frombuffer(raw.data, np.uint8).reshape(raw.height, raw.step)
    return ts.types['sensor_msgs/msg/Image'](
        header=header, height=raw.height, width=raw.width, encoding=encoding,
        is_bigendian=0, step=step, data=data.reshape(-1))


def write_bag(path: str | os.PathLike, topics: Mapping[str, Sequence[Any]],
              storage: str = 'sqlite3', start_ns: int = NS, period_s: float = 0.1,
              stagger_s: float = 0.01) -> Path:
    """topics: name -> rosbags messages. Message i of the k-th topic (sorted by name) is
    logged at start_ns + i * period_s + k * stagger_s, so topics interleave in time."""
    from .result_messages import result_typestore
    ts = result_typestore()
    w = open_writer(path, storage)
    try:
        for k, (topic, msgs) in enumerate(sorted(topics.items())):
            if not msgs:
                continue
            conn = w.add_connection(topic, msgs[0].__msgtype__, typestore=ts)
            for i, m in enumerate(msgs):
                t = start_ns + round((i * period_s + k * stagger_s) * NS)
                w.write(conn, t, ts.serialize_cdr(m, m.__msgtype__))
    finally:
        w.close()
    return Path(path)


def _header(ts, stamp_ns: int, frame_id: str):
    return ts.types['std_msgs/msg/Header'](
        stamp=ts.types['builtin_interfaces/msg/Time'](sec=stamp_ns // NS, nanosec=stamp_ns % NS),
        frame_id=frame_id)


def depth_message(depth_m: np.ndarray, encoding: str, stamp_ns: int,
                  frame_id: str = 'camera', compressed: bool = False):
    """A rosbags depth message of metres (NaN = none): Image in 16UC1 (mm) or 32FC1 (m),
    or with `compressed` its compressed_depth_image_transport CompressedImage."""
    from ..core import depth_images
    from .result_messages import result_typestore
    ts = result_typestore()
    header = _header(ts, stamp_ns, frame_id)
    if compressed:
        fmt, data = depth_images.encode_compressed_depth(depth_m, encoding)
        return ts.types['sensor_msgs/msg/CompressedImage'](
            header=header, format=fmt, data=np.frombuffer(data, np.uint8))
    raw = depth_images.depth_to_raw(depth_m, encoding)
    return ts.types['sensor_msgs/msg/Image'](
        header=header, height=raw.height, width=raw.width, encoding=raw.encoding,
        is_bigendian=0, step=raw.step, data=np.frombuffer(raw.data, np.uint8))


def camera_info_message(k, stamp_ns: int, frame_id: str = 'camera'):
    """A rosbags sensor_msgs/CameraInfo of core.geometry.CameraIntrinsics `k` (no
    distortion, as for a rectified or aligned image)."""
    from .result_messages import result_typestore
    ts = result_typestore()
    t = ts.types
    kk = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
    return t['sensor_msgs/msg/CameraInfo'](
        header=_header(ts, stamp_ns, frame_id), height=k.height, width=k.width,
        distortion_model='plumb_bob', d=np.zeros(5), k=np.array(kk),
        r=np.array([1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]),
        p=np.array([k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
        binning_x=0, binning_y=0,
        roi=t['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                  do_rectify=False))


def odometry_message(pose, stamp_ns: int, frame_id: str = 'odom',
                     child_frame_id: str = 'base_link'):
    """A rosbags nav_msgs/Odometry of core.geometry.Pose `pose` (zero twist, no
    covariance)."""
    from .result_messages import result_typestore
    t = result_typestore().types
    vec = t['geometry_msgs/msg/Vector3']
    point, quat = t['geometry_msgs/msg/Point'], t['geometry_msgs/msg/Quaternion']
    return t['nav_msgs/msg/Odometry'](
        header=_header(result_typestore(), stamp_ns, frame_id), child_frame_id=child_frame_id,
        pose=t['geometry_msgs/msg/PoseWithCovariance'](
            pose=t['geometry_msgs/msg/Pose'](position=point(*pose.translation),
                                             orientation=quat(*pose.rotation)),
            covariance=np.zeros(36)),
        twist=t['geometry_msgs/msg/TwistWithCovariance'](
            twist=t['geometry_msgs/msg/Twist'](linear=vec(0.0, 0.0, 0.0),
                                               angular=vec(0.0, 0.0, 0.0)),
            covariance=np.zeros(36)))
