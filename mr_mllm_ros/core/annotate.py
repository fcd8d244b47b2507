"""Draw detections (and their <objN> indices) on an image: debug_image, demo, reports."""

from __future__ import annotations

import cv2
import numpy as np

from .types import DetectionSet, Source


def class_color(class_name: str) -> tuple[int, int, int]:
    # Stable colour per class name (same class, same colour across frames and runs).
    h = sum((i + 1) * ord(c) for i, c in enumerate(class_name)) % 180
    hsv = np.uint8([[[h, 200, 255]]])
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_detections(rgb: np.ndarray, detections: DetectionSet,
                    highlight: set[int] | None = None) -> np.ndarray:
    """A copy of `rgb` ((H, W, 3) uint8) with boxes and `objN class score` labels.
    MLLM-sourced boxes are dashed-looking (thin), verified ones get a check mark."""
    out = np.ascontiguousarray(rgb.copy())
    scale = max(out.shape[:2]) / 640.0
    thick = max(1, round(2 * scale))
    font = 0.45 * max(scale, 0.6)
    # Last drawn is on top: obj0 (the highest score) last, so a lower-scored box's label
    # never hides it (the cat under two 'bed' labels in the demo).
    for i, d in reversed(list(enumerate(detections))):
        color = (255, 0, 0) if highlight and i in highlight else class_color(d.class_name)
        p1 = (int(round(d.box.x1)), int(round(d.box.y1)))
        p2 = (int(round(d.box.x2)), int(round(d.box.y2)))
        cv2.rectangle(out, p1, p2, color, thick if d.source == Source.DETECTOR else 1)
        label = f'obj{i} {d.class_name} {d.score:.2f}'
        if d.track_id >= 0:
            label += f' #{d.track_id}'
        if d.verified:
            label += ' ok'
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
        y = max(p1[1], th + base + 2)
        cv2.rectangle(out, (p1[0], y - th - base - 2), (p1[0] + tw + 2, y), color, -1)
        cv2.putText(out, label, (p1[0] + 1, y - base - 1), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return out
