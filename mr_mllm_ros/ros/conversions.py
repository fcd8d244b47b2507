"""Core types <-> ROS messages. Pure functions: no node, no rclpy.init needed."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from mr_mllm_interfaces.msg import (BoundingBox2D, CornerCaseAlert, Detection as DetectionMsg,
                                    DetectionArray, GroundedPhrase as GroundedPhraseMsg,
                                    SceneDescription as SceneDescriptionMsg, StageTiming)

from ..core import images
from ..core.types import (Alert, Box, Detection, DetectionSet, Frame, GroundedPhrase,
                          GroundedText, SceneDescription, Source)

_SOURCE_TO_MSG = {Source.DETECTOR: DetectionMsg.SOURCE_DETECTOR,
                  Source.MLLM: DetectionMsg.SOURCE_MLLM}
_SOURCE_FROM_MSG = {v: k for k, v in _SOURCE_TO_MSG.items()}


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
        images.check_compressed(msg.format, msg.data, max_pixels=max_pixels)
    else:
        images.check_raw(msg.encoding, msg.height, msg.width, msg.step, len(msg.data),
                         max_pixels=max_pixels)


def frame_from_image(msg: Image, *, camera: str = '', max_pixels: int | None = None) -> Frame:
    """sensor_msgs/Image -> Frame (RGB8). Raises ImageConversionError on a malformed image.
    msg.data is an array.array in rclpy; core.images reads it without copying."""
    array = images.raw_to_rgb8(msg.encoding, msg.height, msg.width, msg.step,
                               msg.is_bigendian, msg.data, max_pixels=max_pixels)
    return Frame(array, stamp_to_ns(msg.header.stamp), msg.header.frame_id, camera)


def frame_from_compressed(msg: CompressedImage, *, camera: str = '',
                          max_pixels: int | None = None) -> Frame:
    """sensor_msgs/CompressedImage -> Frame (RGB8; depth PNGs stretched, core.images)."""
    array = images.compressed_to_rgb8(msg.format, msg.data, max_pixels=max_pixels)
    return Frame(array, stamp_to_ns(msg.header.stamp), msg.header.frame_id, camera)


def image_msg(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Image:
    raw = images.image_to_raw(array, encoding)
    return Image(header=header_of(stamp_ns, frame_id), height=raw.height, width=raw.width,
                 encoding=raw.encoding, is_bigendian=int(raw.is_bigendian), step=raw.step,
                 data=raw.data)


def compressed_msg(rgb: np.ndarray, fmt: str, stamp_ns: int, frame_id: str) -> CompressedImage:
    return CompressedImage(header=header_of(stamp_ns, frame_id), format=fmt,
                           data=images.encode_compressed(rgb, fmt))


# ------------------------------------------------------------------------ detections

def detection_to_msg(d: Detection) -> DetectionMsg:
    cx, cy = d.box.center
    return DetectionMsg(
        class_id=int(d.class_id), class_name=d.class_name, score=float(d.score),
        # float(): rclpy fills float64 fields from Python ints incorrectly (garbage bits)
        bbox=BoundingBox2D(center_x=float(cx), center_y=float(cy), size_x=float(d.box.width),
                           size_y=float(d.box.height)),
        track_id=int(d.track_id), source=_SOURCE_TO_MSG[d.source], verified=bool(d.verified),
        original_class_name=d.class_name if d.original_class_name is None
        else d.original_class_name,
        original_score=float(d.score if d.original_score is None else d.original_score))


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
        original_score=float(m.original_score) if changed_score else None)


def timings_to_msg(timings_ms) -> list[StageTiming]:
    return [StageTiming(stage=k, duration_ms=float(v)) for k, v in timings_ms.items()]


def detection_array_msg(ds: DetectionSet) -> DetectionArray:
    return DetectionArray(header=header_of(ds.stamp_ns, ds.frame_id),
                          detections=[detection_to_msg(d) for d in ds.detections],
                          image_width=ds.image_width, image_height=ds.image_height,
                          model_name=ds.model_name, timings=timings_to_msg(ds.timings_ms))


def detection_set_from_msg(m: DetectionArray) -> DetectionSet:
    return DetectionSet(detections=tuple(detection_from_msg(d) for d in m.detections),
                        image_width=m.image_width, image_height=m.image_height,
                        stamp_ns=stamp_to_ns(m.header.stamp), frame_id=m.header.frame_id,
                        model_name=m.model_name,
                        timings_ms={t.stage: t.duration_ms for t in m.timings})


# -------------------------------------------------------------------------- grounding

def phrases_to_msg(phrases: Sequence[GroundedPhrase]) -> list[GroundedPhraseMsg]:
    return [GroundedPhraseMsg(text=p.text, start=p.start, end=p.end,
                              detection_indices=list(p.indices)) for p in phrases]


def phrases_from_msg(msgs: Sequence[GroundedPhraseMsg]) -> tuple[GroundedPhrase, ...]:
    return tuple(GroundedPhrase(m.text, m.start, m.end, tuple(m.detection_indices))
                 for m in msgs)


def scene_description_msg(sd: SceneDescription) -> SceneDescriptionMsg:
    gt = sd.grounded_text
    ds = sd.detections
    return SceneDescriptionMsg(
        header=header_of(ds.stamp_ns, ds.frame_id), text=gt.text, raw_text=gt.raw_text,
        phrases=phrases_to_msg(gt.phrases),
        detections=[detection_to_msg(d) for d in ds.detections], grounded=gt.grounded,
        detector_model=sd.detector_model, mllm_model=sd.mllm_model,
        fusion_adapter=sd.fusion_adapter, prompt_tokens=sd.prompt_tokens,
        generated_tokens=sd.generated_tokens, timings=timings_to_msg(sd.timings_ms))


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
    return CornerCaseAlert(header=header_of(a.stamp_ns, a.frame_id), severity=int(a.severity),
                           code=a.code, rule=a.rule, raised_by=a.raised_by, message=a.message,
                           grounding=phrases_to_msg(a.phrases),
                           detections=[detection_to_msg(d) for d in a.detections])
