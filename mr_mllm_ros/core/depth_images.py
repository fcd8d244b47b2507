"""Depth images in and out of sensor_msgs fields, in metres (beside core.image_codecs,
which turns pixels into colour).

Every decoder returns an (H, W) float32 array of metres with NaN where the sensor had no
measurement: 16UC1 / mono16 hold millimetres (0 = no measurement, the RealSense and
Azure Kinect drivers' convention), 32FC1 holds metres (NaN, inf or 0 = none), and
compressed_depth_image_transport's `compressedDepth` PNGs (a 12-byte ConfigHeader before
the PNG; 16UC1 stores millimetres, 32FC1 stores quantised inverse depth) decode through
core.image_codecs.decode_compressed, the one PNG decoder. The encoders exist for test data and
bags (the motorcycle depth bags, benchmarks); the nodes only decode.
Every failure is an ImageConversionError naming the offending value.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from . import image_codecs
from .errors import ImageConversionError

#: Raw encodings that carry depth, and the factor from their unit to metres.
DEPTH_ENCODINGS = {'16UC1': 1e-3, 'mono16': 1e-3, '32FC1': 1.0}
# compressed_depth_image_transport's ConfigHeader {int32 format; float32 depthQuantA;
# float32 depthQuantB}; its decoder reads only the two floats (format: INV_DEPTH = 0).
_HEADER = struct.Struct('<iff')
_PNG_FORMAT = 0
# compressed_depth_image_transport's defaults for 32FC1 (depth_quantization, depth_max).
DEPTH_QUANTIZATION = 100.0
DEPTH_MAX_M = 10.0


def _metres(array: np.ndarray, scale: float) -> np.ndarray:
    depth = array.astype(np.float32) * np.float32(scale) if scale != 1.0 \
        else array.astype(np.float32, copy=True)
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth


def depth_from_raw(encoding: str, height: int, width: int, step: int,
                   is_bigendian: bool | int, data: Any, *,
                   max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/Image fields of a depth image -> (H, W) float32 metres, NaN = none."""
    if encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(
            f'encoding {encoding!r} is not a depth encoding (use one of '
            f'{", ".join(DEPTH_ENCODINGS)}: 16UC1/mono16 in mm, 32FC1 in m)')
    array = image_codecs.image_from_raw(encoding, height, width, step, is_bigendian, data,
                                        max_pixels=max_pixels)
    return _metres(array, DEPTH_ENCODINGS[encoding])


def depth_from_compressed(format: str, data: Any, *,
                          max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage of a depth image (`16UC1; compressedDepth png`,
    `32FC1; compressedDepth png`, or a plain 16-bit PNG in mm) -> float32 metres."""
    array = image_codecs.decode_compressed(format, data, max_pixels=max_pixels)
    if array.ndim != 2:
        raise ImageConversionError(
            f'compressed image (format {format!r}) is not a depth image: it decodes to '
            f'{array.shape[2]} channels of {array.dtype}, depth needs one 16-bit channel '
            '(mm) or compressedDepth 32FC1')
    if array.dtype == np.float32:
        return _metres(array, 1.0)  # 32FC1 compressedDepth: already metres
    return _metres(array, 1e-3)


def check_depth_encoding(encoding_or_format: str, compressed: bool) -> None:
    """O(1) check for an intake callback: does this message claim to be depth?"""
    if compressed:
        fmt = str(encoding_or_format).lower()
        if 'compresseddepth' in fmt or fmt.strip() in ('png', '16uc1; png', 'mono16; png'):
            return
        raise ImageConversionError(
            f'compressed depth format {encoding_or_format!r} is not supported (use '
            'compressedDepth or a 16-bit PNG)')
    if encoding_or_format not in DEPTH_ENCODINGS:
        raise ImageConversionError(
            f'encoding {encoding_or_format!r} is not a depth encoding (use one of '
            f'{", ".join(DEPTH_ENCODINGS)})')


# ----------------------------------------------------------------------- encoding

def depth_to_raw(depth_m: np.ndarray, encoding: str) -> image_codecs.RawImage:
    """Metres (NaN = none) -> sensor_msgs/Image fields in 16UC1 (mm, 0 = none) or 32FC1."""
    depth = np.asarray(depth_m, dtype=np.float32)
    if encoding == '32FC1':
        return image_codecs.image_to_raw(np.ascontiguousarray(depth), '32FC1')
    if encoding in ('16UC1', 'mono16'):
        return image_codecs.image_to_raw(_millimetres(depth), encoding)
    raise ImageConversionError(f'cannot encode depth as {encoding!r} (use 16UC1 or 32FC1)')


def _millimetres(depth: np.ndarray) -> np.ndarray:
    mm = np.zeros(depth.shape, dtype=np.uint16)
    valid = np.isfinite(depth) & (depth > 0)
    mm[valid] = np.clip(np.rint(depth[valid] * 1000.0), 0, 65535).astype(np.uint16)
    return mm


def encode_compressed_depth(depth_m: np.ndarray, encoding: str) -> tuple[str, bytes]:
    """(CompressedImage.format, data) as compressed_depth_image_transport writes them:
    the 12-byte ConfigHeader, then a 16-bit PNG of mm (16UC1) or of quantised inverse
    depth (32FC1: q = A / z + B, A = Q (Q + 1), B = 1 - A / z_max; 0 = none)."""
    depth = np.asarray(depth_m, dtype=np.float32)
    if encoding in ('16UC1', 'mono16'):
        png = image_codecs.encode_compressed(_millimetres(depth), 'png')
        return f'{encoding}; compressedDepth png', _HEADER.pack(_PNG_FORMAT, 0.0, 0.0) + png
    if encoding != '32FC1':
        raise ImageConversionError(f'cannot encode compressedDepth as {encoding!r}')
    quant_a = DEPTH_QUANTIZATION * (DEPTH_QUANTIZATION + 1.0)
    quant_b = 1.0 - quant_a / DEPTH_MAX_M
    inverse = np.zeros(depth.shape, dtype=np.uint16)
    valid = np.isfinite(depth) & (depth > 0) & (depth < DEPTH_MAX_M)
    inverse[valid] = np.clip(np.rint(quant_a / depth[valid] + quant_b), 1, 65535)
    png = image_codecs.encode_compressed(inverse, 'png')
    return '32FC1; compressedDepth png', _HEADER.pack(_PNG_FORMAT, quant_a, quant_b) + png
