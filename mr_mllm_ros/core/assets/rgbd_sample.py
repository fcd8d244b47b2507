"""A real RGB-D frame that an installed package ships: the Middlebury 2014 "Motorcycle"
stereo pair in scikit-image (`skimage.data.stereo_motorcycle()`, left view + its
ground-truth disparity), turned into metric depth with the dataset's published
calibration.

The full-resolution calibration (calib.txt of Motorcycle, 2964 x 1988 px) is
f = 3979.911 px, principal point (1244.772, 1019.507) px, doffs = 124.343 px (the
difference of the two cameras' principal points in x), baseline = 193.001 mm.
scikit-image ships the images down-sampled by 4 (741 x 500; its docstring gives the
same numbers divided by 4), so every pixel quantity here is divided by 4. Depth, as
Middlebury defines it: Z = baseline * f / (disparity + doffs). Pixels without ground
truth (inf / NaN disparity) have no depth (NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry.camera import CameraIntrinsics

DOWNSAMPLE = 4
FOCAL_PX = 3979.911 / DOWNSAMPLE
CX_PX, CY_PX = 1244.772 / DOWNSAMPLE, 1019.507 / DOWNSAMPLE
DOFFS_PX = 124.343 / DOWNSAMPLE
BASELINE_M = 0.193001


@dataclass(frozen=True)
class RgbdSample:
    rgb: np.ndarray        # (H, W, 3) uint8, the left view
    depth_m: np.ndarray    # (H, W) float32 metres, NaN = no ground truth
    intrinsics: CameraIntrinsics
    source: str


def disparity_to_depth(disparity: np.ndarray) -> np.ndarray:
    """Middlebury disparity (px, at this resolution) -> depth in metres (NaN = none)."""
    d = np.asarray(disparity, dtype=np.float64)
    depth = np.full(d.shape, np.nan, dtype=np.float32)
    valid = np.isfinite(d) & (d + DOFFS_PX > 0)
    depth[valid] = BASELINE_M * FOCAL_PX / (d[valid] + DOFFS_PX)
    return depth


def motorcycle_rgbd() -> RgbdSample:
    import skimage.data
    left, _, disparity = skimage.data.stereo_motorcycle()
    h, w = disparity.shape[:2]
    k = CameraIntrinsics(FOCAL_PX, FOCAL_PX, CX_PX, CY_PX, w, h)
    return RgbdSample(np.ascontiguousarray(left[..., :3]), disparity_to_depth(disparity), k,
                      'Middlebury 2014 Motorcycle via scikit-image stereo_motorcycle(), '
                      'calibration / 4')


def camera_info_k(k: CameraIntrinsics) -> list[float]:
    """CameraInfo.k (row-major 3x3) of intrinsics."""
    return [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
