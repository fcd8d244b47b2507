"""Core types -> the package's messages: the ONE field mapping, for two message families.

The nodes publish rclpy messages (ros.conversions), the replay writes rosbags messages
(replay.result_messages, no rclpy). Both build the same messages through the functions
below, which take a `MessageFactory`: it makes a message of a type by name and turns
arrays into what that family stores. Every field is passed (rosbags message classes
have no defaults). No rclpy import here, so the replay can use it without ROS.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from ..core.types import Alert, Detection, DetectionSet, GroundedPhrase, SceneDescription, Source

PACKAGE = 'mr_mllm_interfaces'
DETECTION_ARRAY = f'{PACKAGE}/msg/DetectionArray'
SCENE_DESCRIPTION = f'{PACKAGE}/msg/SceneDescription'
CORNER_CASE_ALERT = f'{PACKAGE}/msg/CornerCaseAlert'
#: Detection.SOURCE_DETECTOR / SOURCE_MLLM / SOURCE_LOOKER
SOURCE_CODES = {Source.DETECTOR: 0, Source.MLLM: 1, Source.LOOKER: 2}
NS = 1_000_000_000


class MessageFactory(Protocol):
    def __call__(self, msgtype: str, **fields: Any) -> Any:
        """A message of `msgtype` ('pkg/msg/Name') with these fields."""

    def int32s(self, values: Sequence[int]) -> Any:
        """An int32[] field value."""

    def uint8s(self, data: bytes) -> Any:
        """A uint8[] field value."""

    def float32s(self, values: Sequence[float]) -> Any:
        """A float32[] field value."""


def time_msg(make: MessageFactory, ns: int):
    return make('builtin_interfaces/msg/Time', sec=int(ns // NS), nanosec=int(ns % NS))


def header_msg(make: MessageFactory, stamp_ns: int, frame_id: str):
    return make('std_msgs/msg/Header', stamp=time_msg(make, stamp_ns), frame_id=frame_id)


def timings_msg(make: MessageFactory, timings_ms) -> list:
    return [make(f'{PACKAGE}/msg/StageTiming', stage=str(k), duration_ms=float(v))
            for k, v in timings_ms.items()]


def detection_msg(make: MessageFactory, d: Detection):
    cx, cy = d.box.center
    # float(): rclpy fills float64 fields from Python ints incorrectly (garbage bits)
    box = make(f'{PACKAGE}/msg/BoundingBox2D', center_x=float(cx), center_y=float(cy),
               size_x=float(d.box.width), size_y=float(d.box.height))
    return make(f'{PACKAGE}/msg/Detection', class_id=int(d.class_id), class_name=d.class_name,
                score=float(d.score), bbox=box, track_id=int(d.track_id),
                source=SOURCE_CODES[d.source], verified=bool(d.verified),
                original_class_name=d.class_name if d.original_class_name is None
                else d.original_class_name,
                original_score=float(d.score if d.original_score is None
                                     else d.original_score),
                **position_fields(make, d.position, d.position_spread),
                **looks_fields(make, d.looks_like), posture=d.posture,
                posture_score=float(d.posture_score))


def looks_fields(make: MessageFactory, looks_like) -> dict:
    """looks_like (string[]) and looks_like_scores (float32[]): the looker's labels."""
    return {'looks_like': [str(n) for n, _ in looks_like],
            'looks_like_scores': make.float32s([float(p) for _, p in looks_like])}


def position_fields(make: MessageFactory, position, spread: float = 0.0) -> dict:
    """position (geometry_msgs/Point), position_spread, position_valid of a Detection."""
    x, y, z = position if position is not None else (0.0, 0.0, 0.0)
    return {'position': make('geometry_msgs/msg/Point', x=float(x), y=float(y), z=float(z)),
            'position_spread': float(spread), 'position_valid': position is not None}


def phrases_msg(make: MessageFactory, phrases: Sequence[GroundedPhrase]) -> list:
    return [make(f'{PACKAGE}/msg/GroundedPhrase', text=p.text, start=int(p.start),
                 end=int(p.end), detection_indices=make.int32s(p.indices)) for p in phrases]


def detection_array_msg(make: MessageFactory, ds: DetectionSet):
    return make(DETECTION_ARRAY, header=header_msg(make, ds.stamp_ns, ds.frame_id),
                detections=[detection_msg(make, d) for d in ds.detections],
                image_width=int(ds.image_width), image_height=int(ds.image_height),
                model_name=ds.model_name, timings=timings_msg(make, ds.timings_ms),
                **looks_fields(make, ds.looks_like))


def scene_description_msg(make: MessageFactory, sd: SceneDescription):
    gt, ds = sd.grounded_text, sd.detections
    return make(SCENE_DESCRIPTION, header=header_msg(make, ds.stamp_ns, ds.frame_id),
                text=gt.text, raw_text=gt.raw_text, phrases=phrases_msg(make, gt.phrases),
                detections=[detection_msg(make, d) for d in ds.detections],
                grounded=bool(gt.grounded), detector_model=sd.detector_model,
                mllm_model=sd.mllm_model, fusion_adapter=sd.fusion_adapter,
                prompt_tokens=int(sd.prompt_tokens),
                generated_tokens=int(sd.generated_tokens),
                timings=timings_msg(make, sd.timings_ms))


def compressed_image_msg(make: MessageFactory, data: bytes, fmt: str, stamp_ns: int,
                         frame_id: str):
    return make('sensor_msgs/msg/CompressedImage', header=header_msg(make, stamp_ns, frame_id),
                format=fmt if data else '', data=make.uint8s(data))


def alert_msg(make: MessageFactory, a: Alert):
    return make(CORNER_CASE_ALERT, header=header_msg(make, a.stamp_ns, a.frame_id),
                severity=int(a.severity), code=a.code, rule=a.rule, raised_by=a.raised_by,
                message=a.message, grounding=phrases_msg(make, a.phrases),
                detections=[detection_msg(make, d) for d in a.detections],
                evidence_image=compressed_image_msg(make, a.evidence_jpeg, 'jpeg',
                                                    a.stamp_ns, a.frame_id),
                window_stamps=[time_msg(make, s) for s in a.window_stamps_ns],
                rationale=a.rationale,
                values=[make('diagnostic_msgs/msg/KeyValue', key=str(k), value=str(v))
                        for k, v in a.values])
