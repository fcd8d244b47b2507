"""Core results -> Foxglove messages (foxglove-sdk schemas): the one mapping used by the
replay's MCAP and by the live viewer (`mr-mllm view`).

Per camera namespace NS the topics are:
  NS/image              foxglove.CompressedImage  the frame (JPEG)
  NS/annotations        foxglove.ImageAnnotations boxes (class, score, track id), the
                                                  grounded phrases on their boxes, alerts
                                                  (their boxes in red, a banner line each)
  NS/scene_description  JSON                      the description (text, phrases, model)
  NS/alerts             JSON                      alerts with rationale, values, window
  NS/alerts/evidence    foxglove.CompressedImage  each alert's evidence image
  NS/alerts/log         foxglove.Log              one line per alert (Log panel)
  NS/scene              foxglove.SceneUpdate      positioned objects in 3D (with depth;
                                                  viz.scene_3d), in the optical frame
Images and their annotations carry the same timestamp (the image header stamp), which is
how Foxglove's Image panel pairs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Sequence

from foxglove import Channel, Context, Schema
from foxglove.channels import (CompressedImageChannel, ImageAnnotationsChannel, LogChannel,
                               SceneUpdateChannel)
from foxglove.messages import (Color, CompressedImage, ImageAnnotations, KeyValuePair, Log,
                               LogLevel, Point2, PointsAnnotation, PointsAnnotationType,
                               TextAnnotation, Timestamp)

from ..core.images import class_color
from ..core.types import Alert, DetectionSet, GroundedPhrase, SceneDescription, Severity

NS = 1_000_000_000
ALERT_RGB = (255, 0, 0)  # the highlight colour of core.images.draw_detections
WHITE = Color(r=1.0, g=1.0, b=1.0, a=1.0)
LOG_LEVELS = {Severity.INFO: LogLevel.Info, Severity.WARN: LogLevel.Warning,
              Severity.CRITICAL: LogLevel.Error}
FONT_SIZE = 14.0


@dataclass(frozen=True)
class CameraTopics:
    ns: str
    image: str
    annotations: str
    description: str
    alerts: str
    evidence: str
    alert_log: str
    scene: str


def camera_topics(namespace: str) -> CameraTopics:
    ns = '/' + namespace.strip('/') if namespace.strip('/') else ''
    return CameraTopics(ns, f'{ns}/image', f'{ns}/annotations', f'{ns}/scene_description',
                        f'{ns}/alerts', f'{ns}/alerts/evidence', f'{ns}/alerts/log',
                        f'{ns}/scene')


def timestamp(ns: int) -> Timestamp:
    return Timestamp(sec=int(ns // NS), nsec=int(ns % NS))


def _color(rgb: tuple[int, int, int], alpha: float = 1.0) -> Color:
    return Color(r=rgb[0] / 255, g=rgb[1] / 255, b=rgb[2] / 255, a=alpha)


def compressed_image(data: bytes, stamp_ns: int, frame_id: str, fmt: str = 'jpeg'):
    return CompressedImage(timestamp=timestamp(stamp_ns), frame_id=frame_id, data=bytes(data),
                           format=fmt)


def image_annotations(ds: DetectionSet, stamp_ns: int,
                      phrases: Sequence[GroundedPhrase] = (),
                      alerts: Sequence[Alert] = ()) -> ImageAnnotations:
    """Boxes of `ds` (label: class score #track), the grounded `phrases` (indices into `ds`)
    as text under their boxes, the objects of `alerts` in red and one banner line per
    alert at the top left."""
    t = timestamp(stamp_ns)
    flagged = {d for a in alerts for d in a.detections}
    points, texts = [], []
    for i, d in enumerate(ds):
        hot = d in flagged
        rgb = ALERT_RGB if hot else class_color(d.class_name)
        b = d.box
        points.append(PointsAnnotation(
            timestamp=t, type=PointsAnnotationType.LineLoop,
            points=[Point2(x=b.x1, y=b.y1), Point2(x=b.x2, y=b.y1), Point2(x=b.x2, y=b.y2),
                    Point2(x=b.x1, y=b.y2)],
            outline_color=_color(rgb), thickness=4.0 if hot else 2.0,
            metadata=[KeyValuePair(key='object', value=f'obj{i}')]))
        label = f'obj{i} {d.class_name} {d.score:.2f}'
        if d.track_id >= 0:
            label += f' #{d.track_id}'
        texts.append(TextAnnotation(timestamp=t, position=Point2(x=b.x1, y=b.y1), text=label,
                                    font_size=FONT_SIZE, text_color=WHITE,
                                    background_color=_color(rgb, 0.8)))
    for p in phrases:
        for i in p.indices:
            if 0 <= i < len(ds):
                b = ds[i].box
                texts.append(TextAnnotation(
                    timestamp=t, position=Point2(x=b.x1, y=b.y2), text=f'"{p.text}"',
                    font_size=FONT_SIZE, text_color=_color((0, 0, 0)),
                    background_color=_color((255, 233, 168), 0.9)))
    for k, a in enumerate(alerts):
        texts.append(TextAnnotation(
            timestamp=t, position=Point2(x=4.0, y=4.0 + k * (FONT_SIZE + 6)),
            text=f'ALERT {a.severity.name} {a.rule}: {a.message}', font_size=FONT_SIZE,
            text_color=WHITE, background_color=_color(ALERT_RGB, 0.85)))
    return ImageAnnotations(points=points, texts=texts)


def description_record(sd: SceneDescription) -> dict:
    gt = sd.grounded_text
    return {'text': gt.text, 'grounded': bool(gt.grounded), 'mllm_model': sd.mllm_model,
            'detector_model': sd.detector_model,
            'phrases': [{'text': p.text, 'objects': [f'obj{i}' for i in p.indices]}
                        for p in gt.phrases],
            'stamp_ns': int(sd.detections.stamp_ns)}


def alert_record(a: Alert) -> dict:
    return {'severity': a.severity.name, 'rule': a.rule, 'code': a.code,
            'raised_by': a.raised_by, 'message': a.message, 'rationale': a.rationale,
            'values': dict(a.values), 'window_stamps_ns': list(a.window_stamps_ns),
            'objects': [f'obj{i} {d.class_name} {d.score:.2f}'
                        for i, d in enumerate(a.detections)],
            'stamp_ns': int(a.stamp_ns), 'frame_id': a.frame_id}


def alert_log(a: Alert, name: str) -> Log:
    return Log(timestamp=timestamp(a.stamp_ns), level=LOG_LEVELS[a.severity], name=name,
               message=f'{a.rule}: {a.message} | {a.rationale}')


def _json_schema(name: str, properties: dict) -> Schema:
    body = {'type': 'object', 'title': name, 'properties': properties}
    return Schema(name=name, encoding='jsonschema', data=json.dumps(body).encode())


DESCRIPTION_SCHEMA = _json_schema('mr_mllm.SceneDescription', {
    'text': {'type': 'string'}, 'grounded': {'type': 'boolean'},
    'mllm_model': {'type': 'string'}, 'detector_model': {'type': 'string'},
    'phrases': {'type': 'array'}, 'stamp_ns': {'type': 'integer'}})
ALERT_SCHEMA = _json_schema('mr_mllm.CornerCaseAlert', {
    'severity': {'type': 'string'}, 'rule': {'type': 'string'}, 'code': {'type': 'string'},
    'raised_by': {'type': 'string'}, 'message': {'type': 'string'},
    'rationale': {'type': 'string'}, 'values': {'type': 'object'},
    'window_stamps_ns': {'type': 'array'}, 'objects': {'type': 'array'},
    'stamp_ns': {'type': 'integer'}, 'frame_id': {'type': 'string'}})


class CameraChannels:
    """The Foxglove channels of one camera namespace on a context (an MCAP file or a
    WebSocket server); `log_*` write one message each, at log time `log_ns`."""

    def __init__(self, context: Context, namespace: str):
        self.topics = camera_topics(namespace)
        tp = self.topics
        self.image = CompressedImageChannel(tp.image, context=context)
        self.annotations = ImageAnnotationsChannel(tp.annotations, context=context)
        self.description = Channel(tp.description, schema=DESCRIPTION_SCHEMA,
                                   message_encoding='json', context=context)
        self.alerts = Channel(tp.alerts, schema=ALERT_SCHEMA, message_encoding='json',
                              context=context)
        self.evidence = CompressedImageChannel(tp.evidence, context=context)
        self.alert_log = LogChannel(tp.alert_log, context=context)
        self.scene = SceneUpdateChannel(tp.scene, context=context)

    def log_image(self, data: bytes, stamp_ns: int, frame_id: str, log_ns: int,
                  fmt: str = 'jpeg') -> None:
        self.image.log(compressed_image(data, stamp_ns, frame_id, fmt), log_time=log_ns)

    def log_annotations(self, ds: DetectionSet, stamp_ns: int, log_ns: int,
                        phrases: Sequence[GroundedPhrase] = (),
                        alerts: Sequence[Alert] = ()) -> None:
        self.annotations.log(image_annotations(ds, stamp_ns, phrases, alerts),
                             log_time=log_ns)

    def log_scene(self, ds: DetectionSet, stamp_ns: int, log_ns: int) -> bool:
        """The positioned objects of `ds` as a SceneUpdate; False (nothing logged) when
        none has a position."""
        if not any(d.position is not None for d in ds):
            return False
        from .scene_3d import scene_update
        self.scene.log(scene_update(ds, stamp_ns), log_time=log_ns)
        return True

    def log_description(self, sd: SceneDescription, log_ns: int) -> None:
        self.description.log(description_record(sd), log_time=log_ns)

    def log_alerts(self, alerts: Iterable[Alert], log_ns: int) -> None:
        for a in alerts:
            self.alerts.log(alert_record(a), log_time=log_ns)
            self.alert_log.log(alert_log(a, self.topics.ns or '/'), log_time=log_ns)
            if a.evidence_jpeg:
                self.evidence.log(compressed_image(a.evidence_jpeg, a.stamp_ns, a.frame_id),
                                  log_time=log_ns)
