"""Images to publish or process: files, folders, and the packaged sample photos."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ..core.assets.sample_images import SAMPLES, load_sample

IMAGE_SUFFIXES = {'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp'}


def iter_images(sources: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, RGB uint8 image) for `sample:<name>` (or `samples` = all), files and folders."""
    for src in sources:
        if src == 'samples':
            for name in SAMPLES:
                yield name, load_sample(name)
        elif src.startswith('sample:'):
            name = src.split(':', 1)[1]
            yield name, load_sample(name)
        else:
            path = Path(src)
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
                if path.is_dir() else [path]
            for f in files:
                bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise FileNotFoundError(f'cannot read image {f}')
                yield f.stem, np.ascontiguousarray(bgr[..., ::-1])


def rgb_as(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """An RGB image in the channel layout of a raw sensor_msgs encoding."""
    if encoding == 'rgb8':
        return rgb
    if encoding == 'bgr8':
        return np.ascontiguousarray(rgb[..., ::-1])
    if encoding == 'rgba8':
        return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    if encoding == 'bgra8':
        return np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 255, np.uint8)])
    if encoding == 'mono8':
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if encoding in ('mono16', '16UC1'):
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    raise ValueError(f'cannot publish encoding {encoding!r}')
