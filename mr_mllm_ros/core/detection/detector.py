"""The detector protocol every backend implements, and helpers they share."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from ..types import Box, Detection, DetectionSet, Frame


@runtime_checkable
class Detector(Protocol):
    """Image in, boxes out. Not thread-safe: one worker thread calls `detect`."""

    #: Name reported in every output, e.g. "yolov3-tiny (opencv_darknet)".
    name: str
    #: Index -> class name of the model's label map.
    class_names: Sequence[str]

    def detect(self, frame: Frame) -> DetectionSet:
        """Detect objects in `frame.image` ((H, W, 3) uint8 RGB)."""

    def supports_text_classes(self) -> bool:
        """True when `set_text_classes` works (open-vocabulary models: YOLO-World, YOLOE)."""

    def set_text_classes(self, names: Sequence[str]) -> None:
        """Restrict/extend detection to these free-text class names."""

    def close(self) -> None:
        """Free the model (GPU memory)."""


class StageTimer:
    """Collects per-stage wall times in milliseconds: `with t.stage('infer'): ...`."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t0) * 1e3


def finalize_detections(boxes_xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                        class_names: Sequence[str], frame: Frame, *, conf: float,
                        max_detections: int, allowed: Sequence[str] = ()) -> list[Detection]:
    """Backend-independent tail: confidence and class filters, clipping to the image,
    highest scores first, at most `max_detections`.

    boxes_xyxy: (N, 4) float pixels; scores: (N,); class_ids: (N,) int. Track ids are
    added afterwards by core.detection.tracking."""
    allowed_set = set(allowed)
    order = np.argsort(-scores, kind='stable')
    out: list[Detection] = []
    for i in order:
        score = float(scores[i])
        cid = int(class_ids[i])
        name = class_names[cid] if 0 <= cid < len(class_names) else f'class_{cid}'
        if score < conf or (allowed_set and name not in allowed_set):
            continue
        box = Box(*map(float, boxes_xyxy[i])).clip(frame.width, frame.height)
        if box.area <= 0:
            continue
        out.append(Detection(class_id=cid, class_name=name, score=score, box=box))
        if len(out) >= max_detections:
            break
    return out


def make_detection_set(detections: Sequence[Detection], frame: Frame, model_name: str,
                       timings_ms: dict[str, float]) -> DetectionSet:
    return DetectionSet(detections=tuple(detections), image_width=frame.width,
                        image_height=frame.height, stamp_ns=frame.stamp_ns,
                        frame_id=frame.frame_id, model_name=model_name,
                        timings_ms=dict(timings_ms))
