"""Evidence images of alerts: the triggering frame, its boxes drawn (the alert's objects
highlighted), scaled and JPEG-encoded (core.images.annotated_jpeg).

Called where alerts are produced (core.pipeline.ScenePipeline: the scene node's frame
worker and MLLM thread, the replay loop), never in a subscription callback: encoding a
VGA frame costs a few milliseconds.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

from ..images import annotated_jpeg
from ..types import Alert, DetectionSet, Frame


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
            cache[key] = annotated_jpeg(frame.image, shown, highlight, max_side=max_side,
                                        quality=quality)
        out.append(dataclasses.replace(a, evidence_jpeg=cache[key]))
    return out
