"""Core types <-> ROS messages. Pure functions: no node, no rclpy.init needed.

Messages of this package are built by ros.message_mapping (the one field mapping, shared
with the replay's rosbags messages) through an rclpy message factory."""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from mr_mllm_interfaces.msg import (CornerCaseAlert, Detection as DetectionMsg,
                                    DetectionArray, GroundedPhrase as GroundedPhraseMsg,
                                    SceneDescription as SceneDescriptionMsg)

from ..core import image_codecs
from ..core.types import (Alert, Box, Detection, DetectionSet, Frame, GroundedPhrase,
                          GroundedText, SceneDescription, Severity, Source)
from . import message_mapping as mapping
from .decoded_frames import DecodedFrames

_SOURCE_FROM_MSG = {v: k for k, v in mapping.SOURCE_CODES.items()}


# ------------------------------------------------------------------------------ time

def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def header_of(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


# ---------------------------------------------------------------------------- images

def check_image_msg(msg: Image | CompressedImage, max_pixels: int | None = None) -> None:
    """O(1) structural validation for intake callbacks (no pixel copies); raises
    ImageConversionError naming the problem."""
    if isinstance(msg, CompressedImage):
        image_codecs.check_compressed(msg.format, msg.data, max_pixels=max_pixels)
    else:
        image_codecs.check_raw(msg.encoding, msg.height, msg.width, msg.step, len(msg.data),
                               max_pixels=max_pixels)


_shared_frames: DecodedFrames | None = None


def share_decoded_frames(frames: DecodedFrames | None) -> None:
    """Nodes of one process share the frames frame_from_msg decodes (ros/decoded_frames.py;
    nodes/combined.py turns it on); None turns it off."""
    global _shared_frames
    _shared_frames = frames


def frame_from_msg(msg: Image | CompressedImage, *, camera: str = '',
                   max_pixels: int | None = None) -> Frame:
    """An Image or CompressedImage message -> Frame (RGB8): the one decoder of camera
    messages. Raises ImageConversionError on a malformed image."""
    def decode() -> Frame:
        return frame_from_compressed(msg, camera=camera, max_pixels=max_pixels) \
            if isinstance(msg, CompressedImage) \
            else frame_from_image(msg, camera=camera, max_pixels=max_pixels)

    shared = _shared_frames
    if shared is None:
        return decode()
    compressed = isinstance(msg, CompressedImage)
    key = (compressed, stamp_to_ns(msg.header.stamp), msg.header.frame_id,
           msg.format if compressed else (msg.encoding, msg.height, msg.width, msg.step),
           len(msg.data), max_pixels)
    return shared.frame(msg, key, camera, decode)


def frame_from_image(msg: Image, *, camera: str = '', max_pixels: int | None = None) -> Frame:
    """sensor_msgs/Image -> Frame (RGB8). Raises ImageConversionError on a malformed image.
    msg.data is an array.array in rclpy; core.image_codecs reads it without copying."""
    array = image_codecs.raw_to_rgb8(msg.encoding, msg.height, msg.width, msg.step,
                                     msg.is_bigendian, msg.data, max_pixels=max_pixels)
    return Frame(array, stamp_to_ns(msg.header.stamp), msg.header.frame_id, camera)


def frame_from_compressed(msg: CompressedImage, *, camera: str = '',
                          max_pixels: int | None = None) -> Frame:
    """sensor_msgs/CompressedImage -> Frame (RGB8; depth PNGs stretched, core.image_codecs)."""
    array = image_codecs.compressed_to_rgb8(msg.format, msg.data, max_pixels=max_pixels)
    return Frame(array, stamp_to_ns(msg.header.stamp), msg.header.frame_id, camera)


def image_msg(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Image:
    raw = image_codecs.image_to_raw(array, encoding)
    return Image(header=header_of(stamp_ns, frame_id), height=raw.height, width=raw.width,
                 encoding=raw.encoding, is_bigendian=int(raw.is_bigendian), step=raw.step,
                 data=raw.data)


def compressed_msg(rgb: np.ndarray, fmt: str, stamp_ns: int, frame_id: str) -> CompressedImage:
    return CompressedImage(header=header_of(stamp_ns, frame_id), format=fmt,
                           data=image_codecs.encode_compressed(rgb, fmt))


# ------------------------------------------------------------------------ detections

@lru_cache(maxsize=None)
def _msg_class(msgtype: str) -> type:
    pkg, _, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{pkg}.msg'), name)


class _RclpyMessages:
    """ros.message_mapping's MessageFactory for rclpy message classes."""

    def __call__(self, msgtype: str, **fields: Any) -> Any:
        return _msg_class(msgtype)(**fields)

    def int32s(self, values: Sequence[int]) -> list[int]:
        return [int(v) for v in values]

    def uint8s(self, data: bytes) -> bytes:
        return bytes(data)

    def float32s(self, values: Sequence[float]) -> list[float]:
        return [float(v) for v in values]


MESSAGES = _RclpyMessages()


def detection_to_msg(d: Detection) -> DetectionMsg:
    return mapping.detection_msg(MESSAGES, d)


def detection_from_msg(m: DetectionMsg) -> Detection:
    b = m.bbox
    changed_name = m.original_class_name and m.original_class_name != m.class_name
    changed_score = abs(m.original_score - m.score) > 1e-6
    return Detection(
        class_id=m.class_id, class_name=m.class_name, score=float(m.score),
        box=Box.from_center_size(b.center_x, b.center_y, b.size_x, b.size_y),
        track_id=m.track_id, source=_SOURCE_FROM_MSG.get(m.source, Source.DETECTOR),
        verified=m.verified,
        original_class_name=m.original_class_name if changed_name else None,
        original_score=float(m.original_score) if changed_score else None,
        position=(m.position.x, m.position.y, m.position.z) if m.position_valid else None,
        position_spread=float(m.position_spread) if m.position_valid else 0.0,
        looks_like=_looks_from_msg(m), posture=m.posture,
        posture_score=float(m.posture_score))


def _looks_from_msg(m) -> tuple[tuple[str, float], ...]:
    """The looker's (label, probability) pairs of a Detection or DetectionArray message."""
    return tuple((str(n), round(float(p), 4))
                 for n, p in zip(m.looks_like, m.looks_like_scores))


def detection_array_msg(ds: DetectionSet) -> DetectionArray:
    return mapping.detection_array_msg(MESSAGES, ds)


def detection_set_from_msg(m: DetectionArray) -> DetectionSet:
    return DetectionSet(detections=tuple(detection_from_msg(d) for d in m.detections),
                        image_width=m.image_width, image_height=m.image_height,
                        stamp_ns=stamp_to_ns(m.header.stamp), frame_id=m.header.frame_id,
                        model_name=m.model_name,
                        timings_ms={t.stage: t.duration_ms for t in m.timings},
                        looks_like=_looks_from_msg(m))


# -------------------------------------------------------------------------- grounding

def phrases_to_msg(phrases: Sequence[GroundedPhrase]) -> list[GroundedPhraseMsg]:
    return mapping.phrases_msg(MESSAGES, phrases)


def phrases_from_msg(msgs: Sequence[GroundedPhraseMsg]) -> tuple[GroundedPhrase, ...]:
    return tuple(GroundedPhrase(m.text, m.start, m.end, tuple(m.detection_indices))
                 for m in msgs)


def scene_description_msg(sd: SceneDescription) -> SceneDescriptionMsg:
    return mapping.scene_description_msg(MESSAGES, sd)


def scene_description_from_msg(m: SceneDescriptionMsg) -> SceneDescription:
    ds = DetectionSet(detections=tuple(detection_from_msg(d) for d in m.detections),
                      image_width=0, image_height=0, stamp_ns=stamp_to_ns(m.header.stamp),
                      frame_id=m.header.frame_id, model_name=m.detector_model)
    gt = GroundedText(text=m.text, raw_text=m.raw_text, phrases=phrases_from_msg(m.phrases),
                      grounded=m.grounded)
    return SceneDescription(gt, ds, m.detector_model, m.mllm_model, m.fusion_adapter,
                            m.prompt_tokens, m.generated_tokens,
                            {t.stage: t.duration_ms for t in m.timings})


def alert_msg(a: Alert) -> CornerCaseAlert:
    """The alert with its proof: evidence JPEG, window stamps, rationale, values."""
    return mapping.alert_msg(MESSAGES, a)


def alert_from_msg(m: CornerCaseAlert) -> Alert:
    return Alert(severity=Severity(m.severity), code=m.code, rule=m.rule,
                 raised_by=m.raised_by, message=m.message, stamp_ns=stamp_to_ns(m.header.stamp),
                 frame_id=m.header.frame_id,
                 detections=tuple(detection_from_msg(d) for d in m.detections),
                 phrases=phrases_from_msg(m.grounding),
                 window_stamps_ns=tuple(stamp_to_ns(t) for t in m.window_stamps),
                 values=tuple((kv.key, kv.value) for kv in m.values), rationale=m.rationale,
                 evidence_jpeg=bytes(m.evidence_image.data))
