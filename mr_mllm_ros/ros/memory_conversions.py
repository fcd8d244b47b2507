"""Scene-memory records <-> ROS messages (pure functions, no node)."""

from __future__ import annotations

from mr_mllm_interfaces.msg import BoundingBox2D, CornerCaseAlert, MemoryEvidence
from mr_mllm_interfaces.srv import QueryMemory

from ..core.memory import AlertRecord, Evidence, MemoryAnswer
from ..core.types import Severity
from . import conversions as conv
from . import message_mapping as mapping


def evidence_msg(e: Evidence) -> MemoryEvidence:
    x1, y1, x2, y2 = e.box
    return MemoryEvidence(
        stamp=conv.ns_to_stamp(e.stamp_ns), camera=e.camera, track_id=int(e.track_id),
        class_name=e.class_name, score=float(e.score),
        bbox=BoundingBox2D(center_x=float((x1 + x2) / 2), center_y=float((y1 + y2) / 2),
                           size_x=float(x2 - x1), size_y=float(y2 - y1)),
        thumbnail=e.thumbnail, position_frame=e.position_frame,
        **{k: v for k, v in mapping.position_fields(conv.MESSAGES, e.position).items()
           if k != 'position_spread'})


def fill_response(response: QueryMemory.Response, a: MemoryAnswer,
                  latency_s: float) -> QueryMemory.Response:
    response.success, response.error = a.success, a.error
    response.kind, response.answer = a.kind, a.answer
    response.evidence = [evidence_msg(e) for e in a.evidence]
    response.watched_from = conv.ns_to_stamp(a.watched_from_ns)
    response.watched_to = conv.ns_to_stamp(a.watched_to_ns)
    response.latency_s = float(latency_s)
    return response


def alert_record_from_msg(m: CornerCaseAlert, camera: str) -> AlertRecord:
    objects = tuple({'class_name': d.class_name, 'track_id': int(d.track_id),
                     'score': float(d.score), 'box': list(d.box.corners())}
                    for d in map(conv.detection_from_msg, m.detections))
    severity = Severity(m.severity).name if m.severity in (0, 1, 2) else str(m.severity)
    return AlertRecord(conv.stamp_to_ns(m.header.stamp), camera, severity, m.code, m.rule,
                       m.message, objects)
