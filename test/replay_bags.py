"""Test bags for the replay tests, written with rosbags (no ROS needed).

Synthetic 64x48 frames are flat, saturated colours (a slightly different shade each):
the frame_blurred rule of `RULES` fires on every one of them (deterministic alerts), and
the colour is easy to find again in a screenshot of the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from mr_mllm_ros.core import images
from mr_mllm_ros.core.sample_images import SAMPLES, load_sample

W, H = 64, 48
MAGENTA = (255, 0, 255)
NS = 1_000_000_000
T0 = 1_700_000_000 * NS

# Deterministic alerts: a flat frame is "blurred"; a person anywhere is a hazard.
RULES = {'rules': [
    {'name': 'flat_frame', 'type': 'frame_blurred', 'severity': 'INFO',
     'debounce': {'n': 1, 'm': 1}, 'cooldown_s': 0.0, 'min_laplacian_var': 25.0},
    {'name': 'person_anywhere', 'type': 'hazard_in_region', 'severity': 'CRITICAL',
     'debounce': {'n': 1, 'm': 1}, 'cooldown_s': 0.0, 'classes': ['person'],
     'region': [[0, 0], [1, 0], [1, 1], [0, 1]], 'min_score': 0.3,
     'anchor': 'any_overlap'},
]}


def write_config(tmp: Path, **mllm) -> Path:
    """A user config: offline detector, no MLLM (unless `mllm` says otherwise), the rules
    above."""
    rules = tmp / 'rules.yaml'
    rules.write_text(yaml.safe_dump(RULES))
    cfg = tmp / 'replay_config.yaml'
    cfg.write_text(yaml.safe_dump({'mllm': {'backend': 'none', **mllm},
                                   'alerts': {'rules_file': str(rules)}}))
    return cfg


def colour_frame(i: int, colour=MAGENTA) -> np.ndarray:
    rgb = np.empty((H, W, 3), np.uint8)
    rgb[:] = colour
    rgb[..., 2] = max(0, colour[2] - 3 * i)
    return rgb


def _typestore():
    from mr_mllm_ros.replay.result_messages import result_typestore
    return result_typestore()


def image_msg(rgb: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = 'cam',
              pad: int = 0):
    ts = _typestore()
    header = ts.types['std_msgs/msg/Header'](
        stamp=ts.types['builtin_interfaces/msg/Time'](sec=stamp_ns // NS,
                                                      nanosec=stamp_ns % NS),
        frame_id=frame_id)
    if encoding in ('jpeg', 'png'):
        return ts.types['sensor_msgs/msg/CompressedImage'](
            header=header, format=encoding,
            data=np.frombuffer(images.encode_compressed(rgb, encoding), np.uint8))
    if encoding == 'mono8':
        arr = np.ascontiguousarray(rgb[..., 0])
    elif encoding == 'bgr8':
        arr = np.ascontiguousarray(rgb[..., ::-1])
    elif encoding == 'bgra8':
        arr = np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)])
    else:
        arr = rgb
    raw = images.image_to_raw(arr, encoding) if encoding in images.SUPPORTED_ENCODINGS \
        else images.image_to_raw(rgb, 'rgb8')
    step = raw.step + pad
    data = np.zeros(step * raw.height, np.uint8).reshape(raw.height, step)
    data[:, :raw.step] = np.frombuffer(raw.data, np.uint8).reshape(raw.height, raw.step)
    return ts.types['sensor_msgs/msg/Image'](
        header=header, height=raw.height, width=raw.width, encoding=encoding,
        is_bigendian=0, step=step, data=data.reshape(-1))


def write_bag(path: Path, storage: str, topics: dict[str, list], period_s: float = 0.5):
    """topics: name -> [message, ...]; messages of all topics interleave in time."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    ts = _typestore()
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        for k, (topic, msgs) in enumerate(sorted(topics.items())):
            if not msgs:
                continue
            conn = w.add_connection(topic, msgs[0].__msgtype__, typestore=ts)
            for i, m in enumerate(msgs):
                t = T0 + round((i * period_s + k * 0.01) * NS)
                w.write(conn, t, ts.serialize_cdr(m, m.__msgtype__))
    return path


ENCODING_TOPICS = {  # topic -> (encoding, row padding)
    '/rgb/image': ('rgb8', 0),
    '/bgr/image': ('bgr8', 0),
    '/mono/image': ('mono8', 0),
    '/bgra/image': ('bgra8', 12),
    '/jpeg/image/compressed': ('jpeg', 0),
    '/png/image/compressed': ('png', 0),
}


def encodings_bag(path: Path, storage: str, frames: int = 3, photos: bool = True) -> dict:
    """Every encoding the replay must read, `frames` each, plus the shipped photos on
    /photos/image. Returns topic -> list of the RGB images written."""
    topics, truth = {}, {}
    for topic, (enc, pad) in ENCODING_TOPICS.items():
        colours = [colour_frame(i) for i in range(frames)]
        if enc == 'mono8':
            colours = [np.repeat(c[..., :1], 3, axis=2) for c in colours]
        truth[topic] = colours
        topics[topic] = [image_msg(c, enc, T0 + i * NS // 2, 'cam', pad)
                         for i, c in enumerate(colours)]
    if photos:
        names = list(SAMPLES)
        truth['/photos/image'] = [load_sample(n) for n in names]
        topics['/photos/image'] = [image_msg(rgb, 'rgb8', T0 + i * NS // 2, n)
                                   for i, (n, rgb) in enumerate(zip(names,
                                                                    truth['/photos/image']))]
    write_bag(path, storage, topics)
    return truth
