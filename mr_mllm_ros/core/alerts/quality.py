"""Image statistics for the frame_* rules and diagnostics."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

QUALITY_SIDE = 320      # frame_blurred measures sharpness at this longer side
SATURATED_LEVEL = 250   # grey level counted as over-exposed


@dataclass(frozen=True)
class FrameQuality:
    mean: float             # mean grey level 0..255
    saturated_share: float  # share of pixels with grey >= 250
    laplacian_var: float    # sharpness at longer side 320 (low = blurred or featureless)


def frame_quality(rgb: np.ndarray) -> FrameQuality:
    """Image statistics for the frame_* rules and diagnostics; ~1 ms for VGA (see tests)."""
    img = np.asarray(rgb)
    if img.dtype != np.uint8 or img.size == 0 or not (
            img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise ValueError(f'frame_quality needs an (H, W[, 3|4]) uint8 image, got shape '
                         f'{img.shape} dtype {img.dtype}')
    img = np.ascontiguousarray(img)
    grey = img if img.ndim == 2 else cv2.cvtColor(
        img, cv2.COLOR_RGB2GRAY if img.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
    saturated = np.count_nonzero(grey >= SATURATED_LEVEL) / grey.size
    h, w = grey.shape
    scale = QUALITY_SIDE / max(h, w)
    # A fixed analysis size makes the blur threshold independent of the camera resolution.
    small = grey if scale >= 1 else cv2.resize(
        grey, (max(1, round(w * scale)), max(1, round(h * scale))),
        interpolation=cv2.INTER_AREA)
    _, std = cv2.meanStdDev(cv2.Laplacian(small, cv2.CV_32F))
    return FrameQuality(float(cv2.mean(grey)[0]), float(saturated), float(std[0, 0]) ** 2)
