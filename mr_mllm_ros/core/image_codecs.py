"""Pixels in and out of sensor_msgs-style fields, without ROS (our own cv_bridge): raw
Image fields and CompressedImage JPEG/PNG <-> arrays, any encoding -> RGB8. Plain values
in (encoding, height, width, step, is_bigendian, bytes-like ``data``): the ROS layer only
unpacks message fields. Every failure is an ImageConversionError naming the offending
value. The image jobs built on these are in core.images; depth in core.depth_images.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import cv2
import numpy as np

from mr_mllm_ros.core.errors import ImageConversionError

__all__ = [
    "SUPPORTED_ENCODINGS",
    "RawImage",
    "compressed_to_rgb8",
    "decode_compressed",
    "encode_compressed",
    "image_from_raw",
    "image_to_raw",
    "raw_to_rgb8",
    "rgb8_to_bgr8",
    "to_rgb8",
]


class _Layout(NamedTuple):
    dtype: np.dtype
    channels: int


_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout(np.dtype(np.uint8), 3),
    "bgr8": _Layout(np.dtype(np.uint8), 3),
    "rgba8": _Layout(np.dtype(np.uint8), 4),
    "bgra8": _Layout(np.dtype(np.uint8), 4),
    "mono8": _Layout(np.dtype(np.uint8), 1),
    "mono16": _Layout(np.dtype(np.uint16), 1),
    "16UC1": _Layout(np.dtype(np.uint16), 1),
    "32FC1": _Layout(np.dtype(np.float32), 1),
    "8UC1": _Layout(np.dtype(np.uint8), 1),
    # Generic 3-channel data is BGR by OpenCV convention, which is how to_rgb8 treats it.
    "8UC3": _Layout(np.dtype(np.uint8), 3),
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)

_BGR_ORDER = frozenset({"bgr8", "bgra8", "8UC3"})
_DEPTH_LIKE = frozenset({"mono16", "16UC1", "32FC1"})

_JPEG_MAGIC = b"\xff\xd8"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# compressed_depth_image_transport prefixes its PNG with ConfigHeader
# {int32 format; float32 depthQuantA; float32 depthQuantB}.
_DEPTH_HEADER = struct.Struct("<iff")


@dataclass(frozen=True)
class RawImage:
    """The fields of a sensor_msgs/Image, ready to copy into a message."""

    encoding: str
    height: int
    width: int
    step: int
    is_bigendian: bool
    data: bytes = field(repr=False)


# --------------------------------------------------------------------------- validation


def _layout(encoding: Any) -> tuple[str, _Layout]:
    if isinstance(encoding, str):
        if encoding in _LAYOUTS:
            return encoding, _LAYOUTS[encoding]
        for name, layout in _LAYOUTS.items():
            if name.lower() == encoding.strip().lower():
                return name, layout
    raise ImageConversionError(
        f"unknown encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})"
    )


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ImageConversionError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _check_size(height: int, width: int, max_pixels: int | None) -> None:
    if height == 0 or width == 0:
        raise ImageConversionError(f"zero-size image {width}x{height}")
    if height < 0 or width < 0:
        raise ImageConversionError(f"negative image size {width}x{height}")
    if max_pixels is not None:
        limit = _as_int("max_pixels", max_pixels)
        if height * width > limit:
            raise ImageConversionError(
                f"image of {width}x{height} = {height * width} px exceeds max_pixels={limit}"
            )


def _as_uint8(data: Any) -> np.ndarray:
    """A flat uint8 view of ``data``, copying only if its buffer is not contiguous."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageConversionError(f"numpy data must have dtype uint8, got {data.dtype}")
        return np.ascontiguousarray(data).reshape(-1)
    try:
        view = memoryview(data)
    except TypeError:
        raise ImageConversionError(
            "data must be bytes-like (bytes, bytearray, memoryview, array.array or a numpy "
            f"uint8 array), got {type(data).__name__}"
        ) from None
    if not view.c_contiguous:
        return np.frombuffer(view.tobytes(), dtype=np.uint8)
    return np.frombuffer(view.cast("B"), dtype=np.uint8)


def _check_array(array: Any, encoding: str, layout: _Layout) -> np.ndarray:
    """Return ``array`` as (H, W, C), or raise naming both the array and the encoding."""
    if not isinstance(array, np.ndarray):
        raise ImageConversionError(f"expected a numpy array, got {type(array).__name__}")
    shape_ok = (array.ndim == 3 and array.shape[2] == layout.channels) or (
        array.ndim == 2 and layout.channels == 1
    )
    if not shape_ok or array.dtype.newbyteorder("=") != layout.dtype:
        need = "(H, W)" if layout.channels == 1 else f"(H, W, {layout.channels})"
        raise ImageConversionError(
            f"array of shape {array.shape} dtype {array.dtype} does not fit encoding "
            f"{encoding} (needs {need} {layout.dtype})"
        )
    _check_size(array.shape[0], array.shape[1], None)
    return array.reshape(array.shape[0], array.shape[1], layout.channels)


# --------------------------------------------------------------------------- raw images


def image_from_raw(
    encoding: str,
    height: int,
    width: int,
    step: int,
    is_bigendian: bool | int,
    data: Any,
    *,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode sensor_msgs/Image fields into an (H, W) or (H, W, C) native-endian array.

    Unpadded little-endian data is returned as a zero-copy view of ``data`` (read-only if
    ``data`` is); padded rows or big-endian samples cost one copy. The last row may omit
    its padding and bytes beyond the image are ignored.
    """
    encoding, layout, row_bytes = _check_raw(encoding, height, width, step, max_pixels)
    height, width, step = int(height), int(width), int(step)
    buf = _as_uint8(data)
    _check_length(buf.size, height, step, row_bytes)

    if step == row_bytes or height == 1:
        rows = buf[: height * row_bytes]
    else:
        strided = np.lib.stride_tricks.as_strided(
            buf, shape=(height, row_bytes), strides=(step, 1), writeable=False
        )
        rows = np.ascontiguousarray(strided)

    order = ">" if is_bigendian else "<"
    pixels = rows.view(layout.dtype.newbyteorder(order))
    if not pixels.dtype.isnative:
        pixels = pixels.astype(layout.dtype)
    shape = (height, width) if layout.channels == 1 else (height, width, layout.channels)
    return pixels.reshape(shape)


def _check_raw(encoding: Any, height: Any, width: Any, step: Any,
               max_pixels: int | None) -> tuple[str, _Layout, int]:
    encoding, layout = _layout(encoding)
    height = _as_int("height", height)
    width = _as_int("width", width)
    step = _as_int("step", step)
    _check_size(height, width, max_pixels)  # before touching data: refuse bombs cheaply
    row_bytes = width * layout.channels * layout.dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width*channels*bytes = {row_bytes} "
            f"(encoding {encoding}, width {width})"
        )
    return encoding, layout, row_bytes


def _check_length(size: int, height: int, step: int, row_bytes: int) -> None:
    need = step * (height - 1) + row_bytes
    if size < need:
        raise ImageConversionError(
            f"data truncated: {size} bytes, need step*height = {step * height} "
            f"(at least {need} if the last row is unpadded)"
        )


def check_raw(encoding: str, height: int, width: int, step: int, data_length: int, *,
              max_pixels: int | None = None) -> None:
    """The structural checks of image_from_raw without touching the pixels (O(1)): a
    node's intake callback rejects a malformed message before it can displace a valid
    frame in the latest-frame slot. Raises ImageConversionError."""
    _, _, row_bytes = _check_raw(encoding, height, width, step, max_pixels)
    _check_length(int(data_length), int(height), int(step), row_bytes)


def check_compressed(format: str, data: Any, *, max_pixels: int | None = None) -> None:
    """Cheap header checks of CompressedImage data (no decode): not empty, JPEG or PNG
    magic, and header dimensions within max_pixels when they are in the first 64 KB.
    A truncated or corrupt payload behind a valid header is only found by decoding."""
    view = _as_uint8(data)
    if view.size == 0:
        raise ImageConversionError(f"empty compressed image data (format {format!r})")
    head = view[: 1 << 16].tobytes()
    if "compresseddepth" in str(format).lower() and not head.startswith(_PNG_MAGIC):
        head = head[_DEPTH_HEADER.size :]
    if head.startswith(_PNG_MAGIC):
        width, height = _png_size(head)
    elif head.startswith(_JPEG_MAGIC):
        try:
            width, height = _jpeg_size(head)
        except ImageConversionError:
            return  # frame header beyond the first 64 KB (big EXIF): decoding will tell
    else:
        raise ImageConversionError(
            f"undecodable JPEG/PNG data (format {format!r}: {view.size} bytes starting "
            f"{head[:8].hex()} are neither JPEG nor PNG)"
        )
    _check_size(height, width, max_pixels)


def image_to_raw(
    array: np.ndarray,
    encoding: str,
    *,
    step: int | None = None,
    is_bigendian: bool = False,
) -> RawImage:
    """Encode an array as sensor_msgs/Image fields; rows are zero-padded up to ``step``."""
    encoding, layout = _layout(encoding)
    pixels = _check_array(array, encoding, layout)
    height, width = pixels.shape[:2]
    row_bytes = width * layout.channels * layout.dtype.itemsize
    step = row_bytes if step is None else _as_int("step", step)
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width*channels*bytes = {row_bytes} "
            f"(encoding {encoding}, width {width})"
        )

    wire = pixels.astype(layout.dtype.newbyteorder(">" if is_bigendian else "<"), copy=False)
    rows = np.ascontiguousarray(wire).view(np.uint8).reshape(height, row_bytes)
    if step != row_bytes:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = rows
        rows = padded
    return RawImage(encoding, height, width, step, bool(is_bigendian), rows.tobytes())


# --------------------------------------------------------------------------- colour


def to_rgb8(array: np.ndarray, encoding: str) -> np.ndarray:
    """Any decoded image as (H, W, 3) uint8 RGB, C-contiguous, for detectors and MLLMs.

    Depth-like encodings are stretched min..max of their finite values to 0..255;
    NaN/inf and constant images become 0. An rgb8 input that is already contiguous is
    returned as is (no copy).
    """
    encoding, layout = _layout(encoding)
    pixels = _check_array(array, encoding, layout)
    if encoding in _DEPTH_LIKE:
        return _gray_to_rgb(_normalize_to_uint8(pixels[..., 0]))
    if layout.channels == 1:
        return _gray_to_rgb(pixels[..., 0])
    colour = pixels[..., 2::-1] if encoding in _BGR_ORDER else pixels[..., :3]
    return np.ascontiguousarray(colour)


def rgb8_to_bgr8(rgb: np.ndarray) -> np.ndarray:
    """Swap an (H, W, 3) uint8 RGB image to BGR (OpenCV order), C-contiguous."""
    pixels = _check_array(rgb, "rgb8", _LAYOUTS["rgb8"])
    return np.ascontiguousarray(pixels[..., ::-1])


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., np.newaxis], 3, axis=2)


def _normalize_to_uint8(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    out = np.zeros(values.shape, dtype=np.uint8)
    if not finite.any():
        return out
    lo = values[finite].min()
    hi = values[finite].max()
    if hi <= lo:
        return out
    scaled = np.rint((values[finite] - lo) * (255.0 / (hi - lo)))
    out[finite] = np.clip(scaled, 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- compressed


def decode_compressed(format: str, data: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode sensor_msgs/CompressedImage data (JPEG or PNG).

    Returns (H, W, 3) uint8 RGB; a 16-bit single-channel PNG comes back as (H, W) uint16,
    and ``"32FC1; compressedDepth png"`` as (H, W) float32 metres (NaN where invalid).
    The container is identified by its magic bytes, so a mislabelled ``format`` still
    decodes. Header dimensions are checked against ``max_pixels`` before decoding.
    """
    fmt = format.strip().lower() if isinstance(format, str) else ""
    raw = _as_uint8(data).tobytes()
    if not raw:
        raise ImageConversionError(f"empty compressed image data (format {format!r})")

    depth_params: tuple[float, float] | None = None
    if "compresseddepth" in fmt:
        if "rvl" in fmt:
            raise ImageConversionError(f"unsupported compressedDepth codec in format {format!r}")
        if not raw.startswith(_PNG_MAGIC) and raw[_DEPTH_HEADER.size :].startswith(_PNG_MAGIC):
            _, quant_a, quant_b = _DEPTH_HEADER.unpack_from(raw)
            depth_params = (quant_a, quant_b)
            raw = raw[_DEPTH_HEADER.size :]

    if raw.startswith(_PNG_MAGIC):
        kind, (width, height) = "PNG", _png_size(raw)
    elif raw.startswith(_JPEG_MAGIC):
        kind, (width, height) = "JPEG", _jpeg_size(raw)
    else:
        raise ImageConversionError(
            f"undecodable JPEG/PNG data (format {format!r}: {len(raw)} bytes starting "
            f"{raw[:8].hex()} are neither JPEG nor PNG)"
        )
    _check_size(height, width, max_pixels)

    pixels = _imdecode(raw, kind)
    if fmt.startswith("32fc1") and "compresseddepth" in fmt:
        return _inverse_depth_to_metres(pixels, depth_params, format)
    return _decoded_to_output(pixels)


def compressed_to_rgb8(format: str, data: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage fields -> (H, W, 3) uint8 RGB, the one decoder the nodes,
    replay and evaluation share.

    A single-channel result (a 16-bit PNG, a compressedDepth image) is stretched 0..255 over
    its finite values like a mono16 / 32FC1 image: a depth stream is shown, not refused.
    """
    array = decode_compressed(format, data, max_pixels=max_pixels)
    if array.ndim == 2:
        array = to_rgb8(array, "mono16" if array.dtype == np.uint16 else "32FC1")
    return array


def raw_to_rgb8(encoding: str, height: int, width: int, step: int, is_bigendian: bool | int,
                data: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/Image fields -> (H, W, 3) uint8 RGB (image_from_raw, then to_rgb8), the
    one decoder the nodes, replay and evaluation share."""
    array = image_from_raw(encoding, height, width, step, is_bigendian, data,
                           max_pixels=max_pixels)
    return to_rgb8(array, encoding)


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode (H, W, 3) uint8 RGB (or (H, W) uint8, or (H, W) uint16 for PNG) as JPEG/PNG."""
    kind = fmt.strip().lower() if isinstance(fmt, str) else ""
    if kind not in ("jpeg", "jpg", "png"):
        raise ImageConversionError(f"unsupported compressed format {fmt!r} (use 'jpeg' or 'png')")
    quality = _as_int("quality", quality)
    if not 0 <= quality <= 100:
        raise ImageConversionError(f"quality {quality} is outside 0..100")
    if not isinstance(rgb, np.ndarray):
        raise ImageConversionError(f"expected a numpy array, got {type(rgb).__name__}")

    if rgb.ndim == 2 and (rgb.dtype == np.uint8 or (rgb.dtype == np.uint16 and kind == "png")):
        _check_size(rgb.shape[0], rgb.shape[1], None)
        pixels = np.ascontiguousarray(rgb)
    else:
        pixels = rgb8_to_bgr8(rgb)

    if kind == "png":
        ext, params = ".png", [cv2.IMWRITE_PNG_COMPRESSION, 3]
    else:
        ext, params = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality]
    ok, encoded = cv2.imencode(ext, pixels, params)
    if not ok:
        raise ImageConversionError(f"cv2.imencode failed for {ext} of shape {rgb.shape}")
    return encoded.tobytes()


def _png_size(raw: bytes) -> tuple[int, int]:
    # The first chunk must be IHDR: length(4) "IHDR" width(4) height(4), big-endian.
    if len(raw) < 24 or raw[12:16] != b"IHDR":
        raise ImageConversionError(
            f"undecodable PNG data (no IHDR chunk in the first 24 of {len(raw)} bytes)"
        )
    width, height = struct.unpack_from(">II", raw, 16)
    return width, height


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset(range(0xD0, 0xDA)) | {0x01}


def _jpeg_size(raw: bytes) -> tuple[int, int]:
    """Width and height from the first SOF segment, walking the marker segments."""
    pos = 2
    while pos + 1 < len(raw):
        if raw[pos] != 0xFF:
            pos += 1  # libjpeg also skips stray bytes between segments
            continue
        marker = raw[pos + 1]
        if marker == 0xFF:
            pos += 1  # fill byte
            continue
        if marker in _JPEG_NO_LENGTH:
            pos += 2
            continue
        if marker == 0xDA:
            break  # start of scan before any frame header
        if pos + 4 > len(raw):
            break
        (length,) = struct.unpack_from(">H", raw, pos + 2)
        if marker in _JPEG_SOF:
            if length < 8 or pos + 9 > len(raw):
                break
            height, width = struct.unpack_from(">HH", raw, pos + 5)
            return width, height
        pos += 2 + length
    raise ImageConversionError(
        f"undecodable JPEG data (no frame header (SOF marker) in {len(raw)} bytes)"
    )


def _imdecode(raw: bytes, kind: str) -> np.ndarray:
    try:
        pixels = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageConversionError(f"undecodable {kind} data ({exc})") from None
    if pixels is None or pixels.size == 0:
        raise ImageConversionError(
            f"undecodable {kind} data (cv2.imdecode failed on {len(raw)} bytes: "
            "truncated or corrupt)"
        )
    return pixels


def _decoded_to_output(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2 and pixels.dtype == np.uint16:
        return np.ascontiguousarray(pixels)
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise ImageConversionError(f"unsupported decoded pixel type {pixels.dtype}")
    if pixels.ndim == 2:
        return _gray_to_rgb(pixels)
    if pixels.shape[2] == 1:
        return _gray_to_rgb(pixels[..., 0])
    return np.ascontiguousarray(pixels[..., 2::-1])  # BGR(A) -> RGB


def _inverse_depth_to_metres(
    pixels: np.ndarray, params: tuple[float, float] | None, format: str
) -> np.ndarray:
    if params is None:
        raise ImageConversionError(
            f"format {format!r} needs the 12-byte compressedDepth header before the PNG"
        )
    if pixels.ndim != 2 or pixels.dtype != np.uint16:
        raise ImageConversionError(
            f"format {format!r} needs a 16-bit single-channel PNG, got shape "
            f"{pixels.shape} dtype {pixels.dtype}"
        )
    quant_a, quant_b = params
    inverse = pixels.astype(np.float32)
    depth = np.full(pixels.shape, np.nan, dtype=np.float32)
    valid = pixels != 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        depth[valid] = np.float32(quant_a) / (inverse[valid] - np.float32(quant_b))
    return depth
