"""A 3D position for every detection: the robust depth inside its box, back-projected.

Per box: the inner region (the central `inner_fraction` of its width and height, where
the object is and the background around it is not), its valid depth pixels (finite,
within [min_m, max_m]; 0 / NaN = no measurement), their median as the depth and the
scaled median absolute deviation (a robust standard deviation, m) as its spread. Too few
valid pixels (under `min_valid_fraction` of the region) = no position. The box centre at
that depth, back-projected with the colour camera's K, is the position in the camera's
optical frame (x right, y down, z forward). The depth image must be aligned to the
colour image (same view, any resolution of it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..config import DepthConfig
from ..types import Box, DetectionSet
from .camera import CameraIntrinsics, check_same_view

MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation of a normal
MAX_SAMPLES = 4096  # depth pixels read per box at most


@dataclass(frozen=True)
class DepthFrame:
    """An aligned depth image with the colour camera's intrinsics."""

    depth_m: np.ndarray  # (H, W) float32 metres, NaN = no measurement
    intrinsics: CameraIntrinsics  # of the colour image (camera_info)
    stamp_ns: int = 0
    frame_id: str = ''


@dataclass(frozen=True)
class BoxDepth:
    depth_m: float
    spread_m: float
    valid_share: float


def box_depth(depth_m: np.ndarray, box: Box, settings: DepthConfig) -> BoxDepth | None:
    """Robust depth of the inner region of `box` (in depth-image pixels), or None."""
    h, w = depth_m.shape
    cx, cy = box.center
    half_w = box.width * settings.inner_fraction / 2.0
    half_h = box.height * settings.inner_fraction / 2.0
    x1, x2 = max(0, int(math.floor(cx - half_w))), min(w, int(math.ceil(cx + half_w)))
    y1, y2 = max(0, int(math.floor(cy - half_h))), min(h, int(math.ceil(cy + half_h)))
    if x2 <= x1 or y2 <= y1:
        return None
    # A large region is read on a grid of about MAX_SAMPLES pixels: its median is the same
    # to a few mm and costs a tenth. Column step = row step + 1, so a regular pattern of
    # missing pixels (every other pixel of a structured-light sensor) is not all we read.
    step = max(1, int(math.sqrt((x2 - x1) * (y2 - y1) / MAX_SAMPLES)))
    region = depth_m[y1:y2:step, x1:x2:step + (step > 1)]
    # NaN compares False: invalid pixels drop out of the mask without a separate isfinite.
    values = region[(region >= settings.min_m) & (region <= settings.max_m)]
    share = values.size / region.size
    if values.size == 0 or share < settings.min_valid_fraction:
        return None
    median = float(np.median(values))
    spread = MAD_TO_SIGMA * float(np.median(np.abs(values - median)))
    return BoxDepth(median, spread, share)


def check_view(depth: DepthFrame, width: int, height: int) -> CameraIntrinsics:
    """K of the width x height colour image this depth is paired with; raises
    CameraInfoError when depth, camera_info and the image are not one view."""
    dh, dw = depth.depth_m.shape[:2]
    check_same_view(width, height, dw, dh, 'the colour image', 'the depth image')
    return depth.intrinsics.scaled(width, height)


def locate(ds: DetectionSet, depth: DepthFrame, settings: DepthConfig) -> DetectionSet:
    """`ds` with a position (and spread) on every detection whose box has enough valid
    depth; the others keep position None. Adds the 'locate' timing (ms). Raises
    CameraInfoError when depth, camera_info and colour image are not one view."""
    t0 = time.perf_counter()
    iw, ih = ds.image_width, ds.image_height
    dh, dw = depth.depth_m.shape[:2]
    k = check_view(depth, iw, ih)  # K of the colour image at its own resolution
    sx, sy = dw / iw, dh / ih  # colour pixels -> depth pixels
    out = []
    for d in ds.detections:
        b = d.box.clip(iw, ih)
        found = box_depth(depth.depth_m, Box(b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy),
                          settings)
        if found is None:
            out.append(d.replace(position=None, position_spread=0.0))
            continue
        u, v = b.center
        # +0.5 - 0.5: box corners are pixel edges, K's principal point is in pixel centres
        position = k.back_project(u - 0.5, v - 0.5, found.depth_m)
        out.append(d.replace(position=tuple(round(c, 4) for c in position),
                             position_spread=round(found.spread_m, 4)))
    timings = {**ds.timings_ms, 'locate': (time.perf_counter() - t0) * 1e3}
    return ds.with_detections(out, timings_ms=timings)


def distance(position) -> float:
    """Straight-line distance (m) from the camera to a position."""
    return math.sqrt(sum(c * c for c in position))
