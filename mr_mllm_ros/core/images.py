"""The image jobs, one helper each: read a file as RGB, an RGB image in the channel layout
of a sensor_msgs encoding, boxes drawn on an image, an image scaled with its boxes, and
the JPEGs made of them (alert evidence, replay thumbnails, memory crops). Every image
here is (H, W, 3) uint8 RGB; OpenCV's BGR order stays inside this module and
core.image_codecs (sensor_msgs fields and JPEG/PNG bytes), which these build on.
"""

from __future__ import annotations

import os
from typing import Iterable

import cv2
import numpy as np

from .errors import ImageConversionError
from .image_codecs import encode_compressed, rgb8_to_bgr8
from .types import Box, DetectionSet, Source

# ------------------------------------------------------------------------ files


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file (any format OpenCV reads) as RGB. Raises ImageConversionError when
    it is missing or unreadable."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageConversionError(f'cannot read image {path}')
    return np.ascontiguousarray(bgr[..., ::-1])


def write_rgb(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB image to a file; the suffix chooses the format (.jpg, .png, ...)."""
    if not cv2.imwrite(str(path), rgb8_to_bgr8(rgb)):
        raise ImageConversionError(f'cannot write image {path}')


# --------------------------------------------------------------------- encodings


def rgb_to_encoding(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """An RGB image in the channel layout of a raw sensor_msgs encoding (rgb8, bgr8,
    rgba8, bgra8, mono8, mono16/16UC1 as grey * 257), ready for
    core.image_codecs.image_to_raw. Raises ImageConversionError for any other."""
    if encoding == 'rgb8':
        return rgb
    if encoding == 'bgr8':
        return rgb8_to_bgr8(rgb)
    if encoding in ('rgba8', 'bgra8'):
        colour = rgb if encoding == 'rgba8' else rgb[..., ::-1]
        return np.dstack([colour, np.full(rgb.shape[:2], 255, np.uint8)])
    if encoding == 'mono8':
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if encoding in ('mono16', '16UC1'):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    raise ImageConversionError(f'cannot write RGB as encoding {encoding!r} (rgb8, bgr8, '
                               'rgba8, bgra8, mono8, mono16, 16UC1)')


# ------------------------------------------------------------------ annotation


def class_color(class_name: str) -> tuple[int, int, int]:
    """A stable RGB colour per class name (same class, same colour across frames/runs)."""
    h = sum((i + 1) * ord(c) for i, c in enumerate(class_name)) % 180
    hsv = np.uint8([[[h, 200, 255]]])
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def draw_detections(rgb: np.ndarray, detections: DetectionSet,
                    highlight: set[int] | None = None) -> np.ndarray:
    """A copy of `rgb` with boxes and `objN class score` labels (debug_image, demo,
    reports). MLLM-sourced boxes are thin, verified ones get 'ok'; `highlight`: indices
    drawn in the alert colour."""
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


# ------------------------------------------------------------- scaling and JPEG


def scaled(rgb: np.ndarray, ds: DetectionSet | None, max_side: int,
           enlarge: bool = False) -> tuple[np.ndarray, DetectionSet | None]:
    """The image scaled to `max_side` px on its longer side (shrunk only, unless
    `enlarge`) and the boxes of `ds` scaled with it."""
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale == 1 or (scale > 1 and not enlarge):
        return rgb, ds
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1
                       else cv2.INTER_NEAREST)
    if ds is None:
        return image, None
    return image, ds.with_detections(d.replace(box=Box(
        d.box.x1 * scale, d.box.y1 * scale, d.box.x2 * scale, d.box.y2 * scale)) for d in ds)


def jpeg(rgb: np.ndarray, quality: int, max_side: int | None = None) -> bytes:
    """JPEG of an RGB image, shrunk to `max_side` first when given."""
    small = scaled(rgb, None, max_side)[0] if max_side else rgb
    return encode_compressed(small, 'jpeg', quality)


def annotated_jpeg(rgb: np.ndarray, ds: DetectionSet, highlight: Iterable[int] = (), *,
                   max_side: int, quality: int, enlarge: bool = False) -> bytes:
    """JPEG of the image scaled to `max_side` with the boxes of `ds` drawn (after
    scaling, so labels stay readable); `highlight`: indices in the alert colour."""
    small, boxes = scaled(rgb, ds, max_side, enlarge)
    return encode_compressed(draw_detections(small, boxes, set(highlight) or None), 'jpeg',
                             quality)
