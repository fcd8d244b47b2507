"""The pinhole model of a camera: intrinsics from sensor_msgs/CameraInfo fields, and the
back-projection of a pixel at a known depth into the camera's optical frame (x right,
y down, z forward, metres; REP 103's `_optical` frame convention)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import MrMllmError

#: Two sizes whose aspect ratios differ more than this are not the same view scaled.
ASPECT_TOLERANCE = 0.02


class CameraInfoError(MrMllmError, ValueError):
    """A camera_info message (or a depth image) cannot serve for back-projection."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Focal lengths and principal point in pixels of a width x height image."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def scaled(self, width: int, height: int) -> 'CameraIntrinsics':
        """The same camera at another resolution of the same view (a depth image at half
        the colour resolution, a downscaled stream). Raises CameraInfoError when the
        aspect ratio differs (not the same view)."""
        if (width, height) == (self.width, self.height):
            return self
        check_same_view(self.width, self.height, width, height, 'camera_info', 'image')
        sx, sy = width / self.width, height / self.height
        return CameraIntrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                                (self.cy + 0.5) * sy - 0.5, width, height)

    def back_project(self, u: float, v: float, z: float) -> tuple[float, float, float]:
        """Pixel (u, v) at depth z (m, along the optical axis) -> (x, y, z) in metres."""
        return ((u - self.cx) * z / self.fx, (v - self.cy) * z / self.fy, z)


def check_same_view(w1: int, h1: int, w2: int, h2: int, what1: str, what2: str) -> None:
    if min(w1, h1, w2, h2) <= 0:
        raise CameraInfoError(f'{what1} {w1}x{h1} and {what2} {w2}x{h2}: a size is zero')
    if abs((w1 / h1) / (w2 / h2) - 1.0) > ASPECT_TOLERANCE:
        raise CameraInfoError(
            f'{what1} is {w1}x{h1} but {what2} is {w2}x{h2}: not the same view (aspect '
            f'ratios {w1 / h1:.3f} and {w2 / h2:.3f}); is the depth aligned to the colour '
            'image (RealSense aligned_depth_to_color, Azure Kinect depth_to_rgb)?')


def intrinsics_from_camera_info(k: Sequence[float], width: int, height: int) -> CameraIntrinsics:
    """CameraInfo.k (row-major 3x3) and its width/height -> CameraIntrinsics. Raises
    CameraInfoError naming the problem (an uncalibrated all-zero K, a non-positive focal
    length, NaN, a zero size)."""
    try:
        k = [float(v) for v in k]
    except (TypeError, ValueError):
        raise CameraInfoError(f'camera_info K must be 9 numbers, got {k!r}') from None
    if len(k) != 9:
        raise CameraInfoError(f'camera_info K must be 9 numbers (row-major 3x3), got {len(k)}')
    if not all(math.isfinite(v) for v in k):
        raise CameraInfoError(f'camera_info K holds a non-finite value: {k}')
    if not any(k):
        raise CameraInfoError('camera_info K is all zero: the camera is not calibrated')
    fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    if fx <= 0 or fy <= 0:
        raise CameraInfoError(f'camera_info K has focal lengths fx={fx:g}, fy={fy:g}; both '
                              'must be > 0')
    if k[8] <= 0:
        raise CameraInfoError(f'camera_info K[2][2] = {k[8]:g}; a camera matrix has 1 there')
    fx, fy, cx, cy = fx / k[8], fy / k[8], cx / k[8], cy / k[8]  # normalised (1 = as is)
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise CameraInfoError(f'camera_info size {width}x{height}: width and height must be > 0')
    return CameraIntrinsics(fx, fy, cx, cy, width, height)
