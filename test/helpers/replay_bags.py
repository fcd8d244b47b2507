"""Test bags for the replay tests, written with rosbags (no ROS needed).

Synthetic 64x48 frames are flat, saturated colours (a slightly different shade each):
the frame_blurred rule of `RULES` fires on every one of them (deterministic alerts), and
the colour is easy to find again in a screenshot of the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from mr_mllm_ros.core.assets.sample_images import SAMPLES, load_sample
from mr_mllm_ros.replay.bag_writer import image_message
from mr_mllm_ros.replay.bag_writer import write_bag as bag_writer

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


def image_msg(rgb: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = 'cam',
              pad: int = 0):
    return image_message(rgb, encoding, stamp_ns, frame_id, pad)


def write_bag(path: Path, storage: str, topics: dict[str, list], period_s: float = 0.5):
    """topics: name -> [message, ...]; messages of all topics interleave in time."""
    return bag_writer(path, topics, storage, start_ns=T0, period_s=period_s)


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
