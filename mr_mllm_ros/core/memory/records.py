"""What the scene memory stores and answers with: plain frozen records, and their
construction from the pipeline's own types (one camera per record)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..types import Alert, DetectionSet, SceneDescription


@dataclass(frozen=True)
class Evidence:
    """One detected object in one frame, as an answer cites it (MemoryEvidence.msg).
    Box in pixels."""

    stamp_ns: int
    camera: str
    track_id: int
    class_name: str
    score: float
    box: tuple[float, float, float, float]
    thumbnail: str = ''
    #: Where it was (m) in `position_frame`: the odometry frame with a pose source, else
    #: the camera's optical frame; None = no position (no depth).
    position: tuple[float, float, float] | None = None
    position_frame: str = ''
    #: True: position_frame is a world (odometry) frame; False: the camera's own frame.
    position_world: bool = False


@dataclass(frozen=True)
class Observation(Evidence):
    """What the memory stores of one detected object: the evidence plus the size of its
    frame (image_w x image_h; region questions are asked in fractions of it)."""

    image_w: int = field(default=0, kw_only=True)
    image_h: int = field(default=0, kw_only=True)


@dataclass(frozen=True)
class CameraRecord:
    """Something one camera's pipeline produced for the frame stamped `stamp_ns`."""

    stamp_ns: int
    camera: str


@dataclass(frozen=True)
class FrameSeen(CameraRecord):
    """A processed frame (with or without objects): what makes "never observed" honest."""


@dataclass(frozen=True)
class DescriptionRecord(CameraRecord):
    text: str
    mllm_model: str
    #: [{'text': phrase, 'objects': [{'class_name', 'track_id', 'score', 'box'}]}]
    grounding: tuple = ()


@dataclass(frozen=True)
class AlertRecord(CameraRecord):
    severity: str
    code: str
    rule: str
    message: str
    #: [{'class_name', 'track_id', 'score', 'box'}]
    objects: tuple = ()


@dataclass(frozen=True)
class MemoryAnswer:
    kind: str
    answer: str
    evidence: tuple[Evidence, ...] = ()
    watched_from_ns: int = 0
    watched_to_ns: int = 0
    success: bool = True
    error: str = ''
    #: The facts behind `answer`, machine-readable (kind-specific; JSON-ready).
    facts: dict = field(default_factory=dict)


def _object(d) -> dict:
    return {'class_name': d.class_name, 'track_id': int(d.track_id), 'score': float(d.score),
            'box': [float(v) for v in d.box.corners()]}


def observations_of(ds: DetectionSet, camera: str, to_world=None,
                    world_frame: str = '') -> list[Observation]:
    """`to_world`: the camera's pose in a world (odometry) frame at the frame's stamp
    (core.geometry.Pose, odom_T_optical), named `world_frame`; None = positions stay in
    the camera's optical frame (ds.frame_id)."""
    out = []
    for d in ds:
        position, frame = d.position, ''
        if position is not None:
            position, frame = (to_world.apply(position), world_frame) if to_world is not None \
                else (position, ds.frame_id or camera)
            position = tuple(round(float(c), 4) for c in position)
        out.append(Observation(int(ds.stamp_ns), camera, int(d.track_id), d.class_name,
                               float(d.score), tuple(float(v) for v in d.box.corners()),
                               '', position, frame, position is not None and to_world is not None,
                               image_w=int(ds.image_width), image_h=int(ds.image_height)))
    return out


def description_record(sd: SceneDescription, camera: str) -> DescriptionRecord:
    dets = sd.detections.detections
    grounding = tuple({'text': p.text, 'objects': [_object(dets[i]) for i in p.indices
                                                   if 0 <= i < len(dets)]}
                      for p in sd.grounded_text.phrases)
    return DescriptionRecord(int(sd.detections.stamp_ns), camera, sd.text, sd.mllm_model,
                             grounding)


def alert_record(a: Alert, camera: str) -> AlertRecord:
    return AlertRecord(int(a.stamp_ns), camera, a.severity.name, a.code, a.rule, a.message,
                       tuple(_object(d) for d in a.detections))


def to_json(value) -> str:
    return json.dumps(value, separators=(',', ':'), ensure_ascii=False)
