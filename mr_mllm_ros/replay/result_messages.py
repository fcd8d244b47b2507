"""The project's result messages built and serialized with rosbags (no rclpy).

The .msg files of mr_mllm_interfaces are registered with the rosbags Kilted typestore
(`get_types_from_msg`), so a bag written here carries the same message definitions and
RIHS01 type hashes that ROS 2 Kilted computes, and its CDR bytes equal rclpy's
`serialize_message` of the message ros.conversions builds from the same core objects (a
test compares them byte for byte). The builders below mirror ros.conversions field by
field; keep the two in step.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..core.errors import BagError
from ..core.types import Alert, Detection, DetectionSet, GroundedPhrase, SceneDescription, Source

PACKAGE = 'mr_mllm_interfaces'
DETECTION_ARRAY = f'{PACKAGE}/msg/DetectionArray'
SCENE_DESCRIPTION = f'{PACKAGE}/msg/SceneDescription'
CORNER_CASE_ALERT = f'{PACKAGE}/msg/CornerCaseAlert'
_SOURCE = {Source.DETECTOR: 0, Source.MLLM: 1}  # Detection.SOURCE_DETECTOR / SOURCE_MLLM
NS = 1_000_000_000


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


def _t(name: str):
    return result_typestore().types[name]


def _header(stamp_ns: int, frame_id: str):
    stamp = _t('builtin_interfaces/msg/Time')(sec=int(stamp_ns // NS),
                                              nanosec=int(stamp_ns % NS))
    return _t('std_msgs/msg/Header')(stamp=stamp, frame_id=frame_id)


def _timings(timings_ms) -> list:
    cls = _t(f'{PACKAGE}/msg/StageTiming')
    return [cls(stage=str(k), duration_ms=float(v)) for k, v in timings_ms.items()]


def detection_msg(d: Detection):
    cx, cy = d.box.center
    box = _t(f'{PACKAGE}/msg/BoundingBox2D')(center_x=float(cx), center_y=float(cy),
                                             size_x=float(d.box.width),
                                             size_y=float(d.box.height))
    return _t(f'{PACKAGE}/msg/Detection')(
        class_id=int(d.class_id), class_name=d.class_name, score=float(d.score), bbox=box,
        track_id=int(d.track_id), source=_SOURCE[d.source], verified=bool(d.verified),
        original_class_name=d.class_name if d.original_class_name is None
        else d.original_class_name,
        original_score=float(d.score if d.original_score is None else d.original_score))


def phrases_msg(phrases: Sequence[GroundedPhrase]) -> list:
    cls = _t(f'{PACKAGE}/msg/GroundedPhrase')
    return [cls(text=p.text, start=int(p.start), end=int(p.end),
                detection_indices=np.asarray(p.indices, dtype=np.int32)) for p in phrases]


def detection_array_msg(ds: DetectionSet):
    return _t(DETECTION_ARRAY)(header=_header(ds.stamp_ns, ds.frame_id),
                               detections=[detection_msg(d) for d in ds.detections],
                               image_width=int(ds.image_width),
                               image_height=int(ds.image_height),
                               model_name=ds.model_name, timings=_timings(ds.timings_ms))


def scene_description_msg(sd: SceneDescription):
    gt, ds = sd.grounded_text, sd.detections
    return _t(SCENE_DESCRIPTION)(
        header=_header(ds.stamp_ns, ds.frame_id), text=gt.text, raw_text=gt.raw_text,
        phrases=phrases_msg(gt.phrases), detections=[detection_msg(d) for d in ds.detections],
        grounded=bool(gt.grounded), detector_model=sd.detector_model,
        mllm_model=sd.mllm_model, fusion_adapter=sd.fusion_adapter,
        prompt_tokens=int(sd.prompt_tokens), generated_tokens=int(sd.generated_tokens),
        timings=_timings(sd.timings_ms))


def alert_msg(a: Alert):
    return _t(CORNER_CASE_ALERT)(header=_header(a.stamp_ns, a.frame_id),
                                 severity=int(a.severity), code=a.code, rule=a.rule,
                                 raised_by=a.raised_by, message=a.message,
                                 grounding=phrases_msg(a.phrases),
                                 detections=[detection_msg(d) for d in a.detections])


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
