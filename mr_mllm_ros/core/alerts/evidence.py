"""Evidence images of alerts: the triggering frame, its boxes drawn (the alert's objects
highlighted), scaled and JPEG-encoded.

Called where alerts are produced (core.pipeline.ScenePipeline: the scene node's frame
worker and MLLM thread, the replay loop), never in a subscription callback: encoding a
VGA frame costs a few milliseconds.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import cv2
import numpy as np

from ..annotate import draw_detections
from ..types import Alert, Box, DetectionSet, Frame


def scaled(rgb: np.ndarray, ds: DetectionSet, max_side: int) -> tuple[np.ndarray, DetectionSet]:
    """The image shrunk to `max_side` on its longer side (never enlarged) and the boxes
    scaled with it."""
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return rgb, ds
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    boxes = ds.with_detections(d.replace(box=Box(d.box.x1 * scale, d.box.y1 * scale,
                                                 d.box.x2 * scale, d.box.y2 * scale))
                               for d in ds)
    return small, boxes


def evidence_jpeg(frame: Frame, ds: DetectionSet, highlight: Iterable[int] = (),
                  max_side: int = 640, quality: int = 80) -> bytes:
    """JPEG of `frame` with the boxes of `ds` drawn; `highlight`: indices drawn in the
    alert colour. Boxes are drawn after scaling so labels stay readable."""
    small, boxes = scaled(frame.image, ds, max_side)
    drawn = draw_detections(small, boxes, set(highlight) or None)
    ok, jpg = cv2.imencode('.jpg', np.ascontiguousarray(drawn[..., ::-1]),
                           [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    return jpg.tobytes() if ok else b''


def with_evidence(alerts: Iterable[Alert], frame: Frame | None, ds: DetectionSet,
                  max_side: int, quality: int) -> list[Alert]:
    """`alerts` with their evidence image attached: `ds` drawn on `frame`, the alert's own
    objects highlighted (also those not in `ds`, e.g. boxes the MLLM rejected); alerts
    about the same objects share one encoding. No frame or max_side 0: unchanged."""
    alerts = list(alerts)
    if frame is None or max_side <= 0 or not alerts:
        return alerts
    index = {d: i for i, d in enumerate(ds)}
    cache: dict[tuple, bytes] = {}
    out = []
    for a in alerts:
        extra = tuple(d for d in a.detections if d not in index)
        mine = frozenset(index[d] for d in a.detections if d in index)
        key = (mine, extra)
        if key not in cache:
            shown = ds.with_detections(ds.detections + extra) if extra else ds
            highlight = mine | set(range(len(ds), len(ds) + len(extra)))
            cache[key] = evidence_jpeg(frame, shown, highlight, max_side, quality)
        out.append(dataclasses.replace(a, evidence_jpeg=cache[key]))
    return out
