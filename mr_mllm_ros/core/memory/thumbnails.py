"""Thumbnails of tracked objects for the memory's evidence: a JPEG crop of the object
(with some context) for each track, again every `interval_s` while it stays in view."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..images import jpeg
from ..types import DetectionSet
from .store import is_postgres_url

CONTEXT = 0.15      # margin around the box, as a fraction of its size
MAX_TRACKED = 10000  # tracks remembered for the "is one due?" decision


def thumbnail_dir(url: str) -> Path:
    """Beside the SQLite file (<file>_thumbnails/); for PostgreSQL in $ROS_HOME."""
    if is_postgres_url(url):
        return Path(os.environ.get('ROS_HOME') or Path.home() / '.ros') / \
            'mr_mllm_memory_thumbnails'
    return Path(f'{url}_thumbnails')


class ThumbnailPolicy:
    """Which detections of a frame need a thumbnail now (thread-safe enough for one
    caller: the node's intake)."""

    def __init__(self, interval_s: float):
        self.interval_ns = int(interval_s * 1e9)
        self._last: OrderedDict[tuple[str, int], int] = OrderedDict()

    def due(self, ds: DetectionSet, camera: str) -> list[int]:
        if self.interval_ns <= 0:
            return []
        out = []
        for i, d in enumerate(ds):
            if d.track_id < 0:
                continue
            key = (camera, d.track_id)
            last = self._last.get(key)
            if last is None or ds.stamp_ns - last >= self.interval_ns or ds.stamp_ns < last:
                out.append(i)
                self._last[key] = ds.stamp_ns
                self._last.move_to_end(key)
        while len(self._last) > MAX_TRACKED:
            self._last.popitem(last=False)
        return out


def save_crops(image: np.ndarray, ds: DetectionSet, indices: list[int], camera: str,
               folder: Path, side: int, quality: int) -> dict[int, str]:
    """JPEG crops of ds[i] for i in `indices` from the (H, W, 3) RGB `image`; returns
    index -> file path. Files: <folder>/<camera>/<stamp>_<track>.jpg."""
    h, w = image.shape[:2]
    target = folder / (camera.replace('/', '_') or 'camera')
    target.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in indices:
        d = ds[i]
        mx, my = d.box.width * CONTEXT, d.box.height * CONTEXT
        x1, y1 = int(max(0, d.box.x1 - mx)), int(max(0, d.box.y1 - my))
        x2, y2 = int(min(w, d.box.x2 + mx)), int(min(h, d.box.y2 + my))
        if x2 <= x1 or y2 <= y1:
            continue
        path = target / f'{ds.stamp_ns}_{d.track_id}.jpg'
        path.write_bytes(jpeg(image[y1:y2, x1:x2], quality, max_side=side))
        out[i] = str(path)
    return out
