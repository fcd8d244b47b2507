"""The project's result messages built and serialized with rosbags (no rclpy).

The .msg files of mr_mllm_interfaces are registered with the rosbags Kilted typestore
(`get_types_from_msg`), so a bag written here carries the same message definitions and
RIHS01 type hashes that ROS 2 Kilted computes, and its CDR bytes equal rclpy's
`serialize_message` of the message ros.conversions builds from the same core objects (a
test compares them byte for byte): both build them with ros.message_mapping, the one
field mapping, here through a rosbags message factory.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np

from ..core.errors import BagError
from ..core.types import Alert, DetectionSet, SceneDescription
from ..ros import message_mapping as mapping
from ..ros.marker_mapping import MARKER_ARRAY, markers_msg
from ..ros.message_mapping import (CORNER_CASE_ALERT, DETECTION_ARRAY, PACKAGE,  # noqa: F401
                                   SCENE_DESCRIPTION)


def msg_dirs() -> list[Path]:
    """Where the interface .msg files may be: this checkout, then installed share/ dirs."""
    dirs = [Path(__file__).resolve().parents[2] / PACKAGE / 'msg']
    prefixes = [sys.prefix] + [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(
        os.pathsep) if p]
    dirs += [Path(p) / 'share' / PACKAGE / 'msg' for p in prefixes]
    return dirs


def _msg_dir() -> Path:
    for d in msg_dirs():
        if (d / 'DetectionArray.msg').is_file():
            return d
    raise BagError(f'cannot find the {PACKAGE} .msg files (looked in '
                   f'{", ".join(str(d) for d in msg_dirs())})')


@lru_cache(maxsize=1)
def result_typestore():
    """rosbags Kilted typestore + this project's messages (one per process, read-only)."""
    from rosbags.typesys import Stores, get_typestore, get_types_from_msg
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(_msg_dir().glob('*.msg')):
        types.update(get_types_from_msg(path.read_text(encoding='utf-8'),
                                        f'{PACKAGE}/msg/{path.stem}'))
    store.register(types)
    return store


class _RosbagsMessages:
    """ros.message_mapping's MessageFactory for the rosbags typestore's classes."""

    def __call__(self, msgtype: str, **fields):
        return result_typestore().types[msgtype](**fields)

    def int32s(self, values) -> np.ndarray:
        return np.asarray(values, dtype=np.int32)

    def float32s(self, values) -> np.ndarray:
        return np.asarray(values, dtype=np.float32)

    def uint8s(self, data: bytes) -> np.ndarray:
        return np.frombuffer(bytes(data), dtype=np.uint8)


MESSAGES = _RosbagsMessages()


def detection_array_msg(ds: DetectionSet):
    return mapping.detection_array_msg(MESSAGES, ds)


def scene_description_msg(sd: SceneDescription):
    return mapping.scene_description_msg(MESSAGES, sd)


def alert_msg(a: Alert):
    return mapping.alert_msg(MESSAGES, a)


def marker_messages(ds: DetectionSet) -> list:
    """[('markers', MarkerArray)] when a detection of `ds` has a position, else []."""
    if not any(d.position is not None for d in ds):
        return []
    return [('markers', markers_msg(MESSAGES, ds))]


#: Result topic name -> its message type in the result bags.
RESULT_MSGTYPES = {'detections': DETECTION_ARRAY, 'detections_refined': DETECTION_ARRAY,
                   'scene_description': SCENE_DESCRIPTION, 'alerts': CORNER_CASE_ALERT,
                   'markers': MARKER_ARRAY}


def serialize(msg) -> bytes:
    """CDR (little endian, as rclpy writes it) of a message built above."""
    return bytes(result_typestore().serialize_cdr(msg, msg.__msgtype__))


def connection_args(msgtype: str) -> dict:
    """msgdef + RIHS01 hash for rosbags `Writer.add_connection` (embedded in the bag so
    ROS 2 tools and rosbags read it without the package installed)."""
    store = result_typestore()
    msgdef, _ = store.generate_msgdef(msgtype, ros_version=2)
    return {'msgdef': msgdef, 'rihs01': store.hash_rihs01(msgtype)}


def registered_types() -> Iterable[str]:
    return [t for t in result_typestore().types if t.startswith(f'{PACKAGE}/')]
