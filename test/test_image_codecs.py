"""Tests of mr_mllm_ros.core.image_codecs: raw and compressed conversion without ROS."""

from __future__ import annotations

import array
import pathlib
import struct
import subprocess
import sys
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mr_mllm_ros.core import image_codecs
from mr_mllm_ros.core.errors import ImageConversionError
from mr_mllm_ros.core.image_codecs import (
    SUPPORTED_ENCODINGS,
    RawImage,
    decode_compressed,
    encode_compressed,
    image_from_raw,
    image_to_raw,
    rgb8_to_bgr8,
    to_rgb8,
)

LAYOUT = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
    "8UC1": (np.uint8, 1),
    "8UC3": (np.uint8, 3),
}
MULTIBYTE = ("mono16", "16UC1", "32FC1")
SIZES = [(1, 1), (3, 7), (37, 65), (480, 640)]


def random_image(encoding: str, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype, channels = LAYOUT[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype is np.float32:
        return rng.uniform(-1e3, 1e3, size=shape).astype(np.float32)
    return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)


def row_bytes(encoding: str, width: int) -> int:
    dtype, channels = LAYOUT[encoding]
    return width * channels * np.dtype(dtype).itemsize


def png_with_ihdr(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(chunk[4:]))


def gradient_rgb(height: int = 96, width: int = 128) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (width + height - 2)],
        axis=2,
    ).astype(np.uint8)


# --------------------------------------------------------------------------- API surface


def test_supported_encodings_cover_the_required_set():
    required = {"rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "16UC1", "32FC1"}
    assert required <= set(SUPPORTED_ENCODINGS)
    assert set(SUPPORTED_ENCODINGS) == set(LAYOUT)


def test_image_codecs_do_not_import_ros():
    code = (
        "import sys, mr_mllm_ros.core.image_codecs; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rclpy', 'sensor_msgs', 'cv_bridge', 'builtin_interfaces')); "
        "print(','.join(bad))"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert result.stdout.strip() == "", f"core.image_codecs pulled in ROS modules: {result.stdout}"


# --------------------------------------------------------------------------- raw round trips


@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_raw_round_trip_little_endian(encoding, height, width, padding):
    original = random_image(encoding, height, width)
    step = row_bytes(encoding, width) + padding
    raw = image_to_raw(original, encoding, step=step)

    assert raw == RawImage(encoding, height, width, step, False, raw.data)
    assert len(raw.data) == step * height
    decoded = image_from_raw(
        raw.encoding, raw.height, raw.width, raw.step, raw.is_bigendian, raw.data
    )

    assert decoded.dtype == original.dtype and decoded.dtype.isnative
    assert decoded.shape == original.shape
    assert decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, original)


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("encoding", MULTIBYTE)
def test_raw_round_trip_big_endian(encoding, height, width, padding):
    original = random_image(encoding, height, width, seed=1)
    step = row_bytes(encoding, width) + padding
    raw = image_to_raw(original, encoding, step=step, is_bigendian=True)
    assert raw.is_bigendian is True

    decoded = image_from_raw(encoding, height, width, step, 1, raw.data)

    assert decoded.dtype.isnative and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, original)


def test_big_endian_bytes_are_actually_big_endian():
    raw = image_to_raw(np.array([[0x0102, 0x0304]], dtype=np.uint16), "16UC1", is_bigendian=True)
    assert raw.data == b"\x01\x02\x03\x04"
    little = image_to_raw(np.array([[0x0102, 0x0304]], dtype=np.uint16), "16UC1")
    assert little.data == b"\x02\x01\x04\x03"
    decoded = image_from_raw("mono16", 1, 2, 4, True, b"\x01\x02\x03\x04")
    assert decoded.tolist() == [[0x0102, 0x0304]]


def test_padding_bytes_are_zero_and_ignored_on_decode():
    original = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    raw = image_to_raw(original, "rgb8", step=12)
    assert raw.data[9:12] == b"\x00\x00\x00" and raw.data[21:24] == b"\x00\x00\x00"

    garbage_padding = bytearray(raw.data)
    garbage_padding[9:12] = b"\xff\xff\xff"
    decoded = image_from_raw("rgb8", 2, 3, 12, False, garbage_padding)
    np.testing.assert_array_equal(decoded, original)


def test_last_row_may_omit_padding_and_trailing_bytes_are_ignored():
    original = random_image("16UC1", 4, 5)
    data = image_to_raw(original, "16UC1", step=16).data
    unpadded_tail = data[: 16 * 3 + 10]
    np.testing.assert_array_equal(
        image_from_raw("16UC1", 4, 5, 16, False, unpadded_tail), original
    )
    np.testing.assert_array_equal(
        image_from_raw("16UC1", 4, 5, 16, False, data + b"\x07" * 33), original
    )


def test_unpadded_little_endian_decode_is_zero_copy():
    original = random_image("rgb8", 37, 65)
    buffer = bytearray(image_to_raw(original, "rgb8").data)

    decoded = image_from_raw("rgb8", 37, 65, 65 * 3, False, buffer)

    assert np.shares_memory(decoded, np.frombuffer(buffer, dtype=np.uint8))
    buffer[0] ^= 0xFF  # a view: the change shows through
    assert decoded[0, 0, 0] == original[0, 0, 0] ^ 0xFF


def test_padded_decode_copies():
    buffer = bytearray(image_to_raw(random_image("mono8", 4, 5), "mono8", step=8).data)
    decoded = image_from_raw("mono8", 4, 5, 8, False, buffer)
    assert not np.shares_memory(decoded, np.frombuffer(buffer, dtype=np.uint8))


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_rclpy_style_array_input(encoding):
    original = random_image(encoding, 3, 7, seed=2)
    raw = image_to_raw(original, encoding, step=row_bytes(encoding, 7) + 2)
    data = array.array("B", raw.data)  # what rclpy hands out as Image.data

    decoded = image_from_raw(encoding, 3, 7, raw.step, False, data)

    np.testing.assert_array_equal(decoded, original)


@pytest.mark.parametrize(
    "wrap",
    [bytes, bytearray, memoryview, lambda b: np.frombuffer(b, dtype=np.uint8)],
    ids=["bytes", "bytearray", "memoryview", "numpy"],
)
def test_every_bytes_like_input_is_accepted(wrap):
    original = random_image("32FC1", 3, 7)
    data = wrap(image_to_raw(original, "32FC1").data)
    np.testing.assert_array_equal(image_from_raw("32FC1", 3, 7, 28, False, data), original)


def test_non_contiguous_numpy_data_is_accepted():
    original = random_image("mono8", 2, 3)
    interleaved = np.zeros(12, dtype=np.uint8)
    interleaved[::2] = np.frombuffer(image_to_raw(original, "mono8").data, dtype=np.uint8)
    np.testing.assert_array_equal(image_from_raw("mono8", 2, 3, 3, 0, interleaved[::2]), original)


def test_single_channel_array_with_trailing_axis_is_accepted():
    original = random_image("mono8", 3, 4)
    assert image_to_raw(original[..., np.newaxis], "mono8") == image_to_raw(original, "mono8")


def test_raw_image_repr_omits_data():
    raw = image_to_raw(np.zeros((480, 640, 3), dtype=np.uint8), "rgb8")
    assert "data" not in repr(raw) and len(repr(raw)) < 200


def test_encoding_lookup_is_case_insensitive_and_canonical():
    raw = image_to_raw(np.zeros((2, 2), dtype=np.uint16), "16uc1")
    assert raw.encoding == "16UC1"
    assert image_from_raw("MONO8", 1, 1, 1, 0, b"\x05").tolist() == [[5]]


# --------------------------------------------------------------------------- raw errors


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ("yuv422_foo", 2, 2, 4, 0, b"\0" * 8),
            ["unknown encoding", "'yuv422_foo'", "rgb8", "32FC1"],
        ),
        ((None, 2, 2, 4, 0, b"\0" * 8), ["unknown encoding", "None"]),
        (("rgb8", 0, 0, 0, 0, b""), ["zero-size image 0x0"]),
        (("rgb8", 480, 0, 0, 0, b""), ["zero-size image 0x480"]),
        (("mono8", -1, 4, 4, 0, b"\0" * 8), ["negative image size"]),
        (("mono8", 2.0, 4, 4, 0, b"\0" * 8), ["height must be an integer", "2.0"]),
        (("mono8", 2, "4", 4, 0, b"\0" * 8), ["width must be an integer"]),
        (("mono8", 2, 4, None, 0, b"\0" * 8), ["step must be an integer"]),
        (
            ("rgb8", 480, 640, 1919, 0, b"\0" * 921600),
            [
                "step 1919 is smaller than width*channels*bytes = 1920",
                "encoding rgb8",
                "width 640",
            ],
        ),
        (
            ("32FC1", 2, 3, 11, 0, b"\0" * 24),
            ["step 11 is smaller than width*channels*bytes = 12", "encoding 32FC1"],
        ),
        (
            ("rgb8", 480, 640, 1920, 0, b"\0" * 921599),
            ["data truncated", "921599 bytes", "step*height = 921600"],
        ),
        (("mono8", 2, 2, 2, 0, [1, 2, 3, 4]), ["bytes-like", "list"]),
        (("mono8", 2, 2, 2, 0, np.zeros(4, dtype=np.int16)), ["uint8", "int16"]),
    ],
)
def test_raw_errors_name_the_problem(args, words):
    with pytest.raises(ImageConversionError) as info:
        image_from_raw(*args)
    for word in words:
        assert word in str(info.value)
    assert isinstance(info.value, ValueError)


def test_max_pixels_is_checked_before_touching_data():
    tracemalloc.start()
    try:
        with pytest.raises(
            ImageConversionError, match=r"12000x12000 = 144000000 px exceeds max_pixels=33177600"
        ):
            image_from_raw("rgb8", 12000, 12000, 36000, 0, b"", max_pixels=33177600)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_max_pixels_allows_images_at_the_limit():
    assert image_from_raw("mono8", 2, 3, 3, 0, bytes(6), max_pixels=6).shape == (2, 3)
    with pytest.raises(ImageConversionError, match="exceeds max_pixels=5"):
        image_from_raw("mono8", 2, 3, 3, 0, bytes(6), max_pixels=5)


@pytest.mark.parametrize(
    ("array_", "encoding", "words"),
    [
        (
            np.zeros((4, 5, 3), dtype=np.uint16),
            "rgb8",
            ["(4, 5, 3)", "uint16", "rgb8", "(H, W, 3) uint8"],
        ),
        (np.zeros((4, 5, 3), dtype=np.uint8), "mono8", ["(4, 5, 3)", "mono8", "(H, W) uint8"]),
        (np.zeros((4, 5), dtype=np.float64), "32FC1", ["float64", "32FC1", "float32"]),
        (np.zeros((4, 5, 3), dtype=np.uint8), "rgba8", ["rgba8", "(H, W, 4)"]),
        (np.zeros(5, dtype=np.uint8), "mono8", ["(5,)", "mono8"]),
        (np.zeros((0, 5), dtype=np.uint8), "mono8", ["zero-size image 5x0"]),
        ([[1, 2]], "mono8", ["numpy array", "list"]),
        (np.zeros((1, 1), dtype=np.uint8), "nv12", ["unknown encoding", "'nv12'"]),
    ],
)
def test_image_to_raw_rejects_mismatched_arrays(array_, encoding, words):
    with pytest.raises(ImageConversionError) as info:
        image_to_raw(array_, encoding)
    for word in words:
        assert word in str(info.value)


def test_image_to_raw_rejects_short_step():
    with pytest.raises(
        ImageConversionError, match=r"step 9 is smaller than width\*channels\*bytes = 10"
    ):
        image_to_raw(np.zeros((2, 5), dtype=np.uint16), "mono16", step=9)


def test_image_to_raw_accepts_non_native_and_non_contiguous_arrays():
    original = random_image("16UC1", 6, 8)
    swapped = original.astype(original.dtype.newbyteorder("S"))
    assert image_to_raw(swapped, "16UC1") == image_to_raw(original, "16UC1")
    strided = random_image("rgb8", 6, 8)[::2, ::3]
    raw = image_to_raw(strided, "rgb8")
    np.testing.assert_array_equal(image_from_raw("rgb8", 3, 3, 9, 0, raw.data), strided)


# --------------------------------------------------------------------------- to_rgb8


def test_to_rgb8_colour_orders():
    rgb = np.array([[[1, 2, 3]]], dtype=np.uint8)
    bgr = np.array([[[1, 2, 3]]], dtype=np.uint8)
    rgba = np.array([[[1, 2, 3, 4]]], dtype=np.uint8)
    bgra = np.array([[[1, 2, 3, 4]]], dtype=np.uint8)
    assert to_rgb8(rgb, "rgb8").tolist() == [[[1, 2, 3]]]
    assert to_rgb8(bgr, "bgr8").tolist() == [[[3, 2, 1]]]
    assert to_rgb8(bgr, "8UC3").tolist() == [[[3, 2, 1]]]
    assert to_rgb8(rgba, "rgba8").tolist() == [[[1, 2, 3]]]
    assert to_rgb8(bgra, "bgra8").tolist() == [[[3, 2, 1]]]


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_to_rgb8_mono8_replicates_gray(encoding):
    gray = np.array([[0, 17], [128, 255]], dtype=np.uint8)
    out = to_rgb8(gray, encoding)
    assert out.shape == (2, 2, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], gray)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_to_rgb8_16bit_is_normalized_min_max(encoding):
    depth = np.array([[1000, 1500], [2000, 1000]], dtype=np.uint16)
    out = to_rgb8(depth, encoding)
    assert out[..., 0].tolist() == [[0, 128], [255, 0]]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_to_rgb8_float_depth_handles_nan_and_inf():
    depth = np.array([[np.nan, 0.5], [np.inf, 2.5], [-np.inf, 1.5]], dtype=np.float32)
    out = to_rgb8(depth, "32FC1")
    assert out[..., 0].tolist() == [[0, 0], [0, 255], [0, 128]]


@pytest.mark.parametrize(
    "depth",
    [
        np.full((3, 4), 7.0, dtype=np.float32),
        np.full((3, 4), np.nan, dtype=np.float32),
        np.full((3, 4), 4242, dtype=np.uint16),
    ],
    ids=["constant", "all-nan", "constant-16bit"],
)
def test_to_rgb8_degenerate_depth_is_zeros(depth):
    encoding = "32FC1" if depth.dtype == np.float32 else "16UC1"
    out = to_rgb8(depth, encoding)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8 and not out.any()


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_to_rgb8_output_contract(encoding):
    out = to_rgb8(random_image(encoding, 37, 65), encoding)
    assert out.shape == (37, 65, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous


def test_to_rgb8_rejects_wrong_array():
    with pytest.raises(ImageConversionError, match="does not fit encoding bgr8"):
        to_rgb8(np.zeros((2, 2), dtype=np.uint8), "bgr8")


def test_rgb8_to_bgr8():
    out = rgb8_to_bgr8(np.array([[[1, 2, 3]]], dtype=np.uint8))
    assert out.tolist() == [[[3, 2, 1]]] and out.flags.c_contiguous
    with pytest.raises(ImageConversionError, match="rgb8"):
        rgb8_to_bgr8(np.zeros((1, 1, 4), dtype=np.uint8))


# --------------------------------------------------------------------------- compressed


def test_png_round_trip_is_exact():
    rgb = random_image("rgb8", 37, 65)
    data = encode_compressed(rgb, "png")
    assert data.startswith(b"\x89PNG")
    decoded = decode_compressed("png", data)
    assert decoded.dtype == np.uint8 and decoded.flags.c_contiguous
    np.testing.assert_array_equal(decoded, rgb)


def test_jpeg_round_trip_is_close():
    rgb = gradient_rgb()
    data = encode_compressed(rgb, "jpeg", quality=90)
    assert data.startswith(b"\xff\xd8")
    decoded = decode_compressed("jpeg", data)
    assert decoded.shape == rgb.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - rgb.astype(int)).mean() < 3


def test_decode_returns_rgb_not_bgr():
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # pure red
    for fmt in ("png", "jpeg"):
        decoded = decode_compressed(fmt, encode_compressed(rgb, fmt))
        assert decoded[8, 8, 0] > 200 and decoded[8, 8, 2] < 50


@pytest.mark.parametrize(
    "fmt",
    ["JPEG", "rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8", "something-else", ""],
)
def test_format_strings_and_sniffing(fmt):
    rgb = random_image("rgb8", 8, 9)
    for payload_fmt in ("png", "jpeg"):
        decoded = decode_compressed(fmt, encode_compressed(rgb, payload_fmt))
        assert decoded.shape == (8, 9, 3)


def test_compressed_input_types():
    data = encode_compressed(random_image("rgb8", 5, 6), "png")
    expected = decode_compressed("png", data)
    wrappers = (
        bytearray,
        memoryview,
        lambda b: array.array("B", b),
        lambda b: np.frombuffer(b, np.uint8),
    )
    for wrap in wrappers:
        wrapped = wrap(data)
        np.testing.assert_array_equal(decode_compressed("png", wrapped), expected)


def test_gray_png_and_jpeg_become_rgb():
    gray = random_image("mono8", 10, 12)
    decoded = decode_compressed("mono8; png compressed mono8", encode_compressed(gray, "png"))
    assert decoded.shape == (10, 12, 3)
    np.testing.assert_array_equal(decoded[..., 1], gray)
    assert decode_compressed("jpeg", encode_compressed(gray, "jpeg")).shape == (10, 12, 3)


def test_16bit_png_returns_uint16():
    depth = random_image("16UC1", 11, 13)
    decoded = decode_compressed("mono16; png compressed mono16", encode_compressed(depth, "png"))
    assert decoded.dtype == np.uint16 and decoded.shape == (11, 13)
    np.testing.assert_array_equal(decoded, depth)


def test_compressed_depth_16uc1_with_config_header():
    depth = random_image("16UC1", 11, 13)
    payload = struct.pack("<iff", 0, 0.0, 0.0) + encode_compressed(depth, "png")
    decoded = decode_compressed("16UC1; compressedDepth png", payload)
    np.testing.assert_array_equal(decoded, depth)


def test_compressed_depth_32fc1_is_dequantized():
    quant_a, quant_b = 100.0, 2.0
    inverse = np.array([[0, 52], [102, 3]], dtype=np.uint16)
    payload = struct.pack("<iff", 0, quant_a, quant_b) + encode_compressed(inverse, "png")
    decoded = decode_compressed("32FC1; compressedDepth png", payload)
    assert decoded.dtype == np.float32
    assert np.isnan(decoded[0, 0])
    np.testing.assert_allclose(decoded[0, 1:].tolist() + decoded[1].tolist(), [2.0, 1.0, 100.0])


def test_message_decoders_give_rgb8_and_stretch_single_channel_images():
    """The one decoder of message fields (nodes, replay, eval): raw = image_from_raw then
    to_rgb8; a 16-bit PNG and a 32FC1 compressedDepth are stretched over their finite
    values (NaN -> 0), not refused."""
    bgr = random_image("bgr8", 5, 7)
    raw = image_to_raw(bgr, "bgr8")
    rgb = image_codecs.raw_to_rgb8("bgr8", raw.height, raw.width, raw.step, 0, raw.data)
    np.testing.assert_array_equal(rgb, bgr[..., ::-1])
    depth = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    rgb = image_codecs.compressed_to_rgb8("16UC1; png", encode_compressed(depth, "png"))
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[..., 0], [[0, 64], [128, 255]])
    inverse = np.array([[0, 52], [102, 3]], dtype=np.uint16)   # nan, 2 m, 1 m, 100 m
    payload = struct.pack("<iff", 0, 100.0, 2.0) + encode_compressed(inverse, "png")
    rgb = image_codecs.compressed_to_rgb8("32FC1; compressedDepth png", payload)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[..., 0], [[0, 3], [0, 255]])


def test_compressed_depth_32fc1_without_header_is_refused():
    png = encode_compressed(np.zeros((2, 2), dtype=np.uint16), "png")
    with pytest.raises(ImageConversionError, match="12-byte compressedDepth header"):
        decode_compressed("32FC1; compressedDepth png", png)


@pytest.mark.parametrize(
    ("fmt", "data", "words"),
    [
        ("jpeg", b"", ["empty"]),
        ("png", bytearray(), ["empty"]),
        (
            "jpeg",
            b"hello, this is not an image",
            ["undecodable JPEG/PNG data", "neither JPEG nor PNG"],
        ),
        ("tiff", b"II*\x00" + bytes(64), ["undecodable", "'tiff'"]),
        ("png", b"\x89PNG\r\n\x1a\n\x00\x00", ["undecodable PNG data", "IHDR"]),
        ("jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF", ["undecodable JPEG data", "SOF"]),
        ("jpeg", [1, 2, 3], ["bytes-like"]),
        ("16UC1; compressedDepth rvl", b"\0" * 30, ["unsupported compressedDepth", "rvl"]),
    ],
)
def test_compressed_errors(fmt, data, words):
    with pytest.raises(ImageConversionError) as info:
        decode_compressed(fmt, data)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
@pytest.mark.parametrize("keep", [0.9, 0.5, 0.2])
def test_truncated_compressed_data_is_refused(fmt, keep):
    data = encode_compressed(gradient_rgb(), fmt)
    with pytest.raises(ImageConversionError, match=f"undecodable {fmt.upper()} data"):
        decode_compressed(fmt, data[: int(len(data) * keep)])


def test_png_bomb_is_refused_from_the_header_without_decoding(monkeypatch):
    def imdecode_must_not_run(*_args):
        raise AssertionError("cv2.imdecode called on an oversized image")

    monkeypatch.setattr(image_codecs.cv2, "imdecode", imdecode_must_not_run)
    tracemalloc.start()
    try:
        with pytest.raises(
            ImageConversionError, match=r"100000x50000 = 5000000000 px exceeds max_pixels=33177600"
        ):
            decode_compressed("png", png_with_ihdr(100000, 50000), max_pixels=33177600)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_jpeg_dimensions_are_read_from_sof_before_decoding(monkeypatch):
    data = encode_compressed(gradient_rgb(96, 128), "jpeg")
    monkeypatch.setattr(image_codecs.cv2, "imdecode", lambda *_a: pytest.fail("decoded"))
    with pytest.raises(ImageConversionError, match=r"128x96 = 12288 px exceeds max_pixels=12287"):
        decode_compressed("jpeg", data, max_pixels=12287)


def test_compressed_within_max_pixels_decodes():
    data = encode_compressed(gradient_rgb(96, 128), "jpeg")
    assert decode_compressed("jpeg", data, max_pixels=96 * 128).shape == (96, 128, 3)


def test_progressive_jpeg_header_is_parsed():
    rgb = gradient_rgb(40, 50)
    ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    assert decode_compressed("jpeg", data.tobytes(), max_pixels=2000).shape == (40, 50, 3)


def test_cv2_error_is_wrapped(monkeypatch):
    def broken(*_args):
        raise cv2.error("boom")

    monkeypatch.setattr(image_codecs.cv2, "imdecode", broken)
    with pytest.raises(ImageConversionError, match="undecodable PNG data \\(boom\\)"):
        decode_compressed("png", encode_compressed(gradient_rgb(), "png"))


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"fmt": "webp"}, ["unsupported compressed format", "'webp'"]),
        ({"quality": 101}, ["quality 101", "0..100"]),
        ({"rgb": np.zeros((4, 4, 3), dtype=np.float32)}, ["float32", "rgb8"]),
        ({"rgb": np.zeros((4, 4), dtype=np.uint16), "fmt": "jpeg"}, ["uint16", "rgb8"]),
        ({"rgb": np.zeros((0, 4, 3), dtype=np.uint8)}, ["zero-size"]),
    ],
)
def test_encode_compressed_errors(kwargs, words):
    arguments = {"rgb": np.zeros((4, 4, 3), dtype=np.uint8), **kwargs}
    with pytest.raises(ImageConversionError) as info:
        encode_compressed(**arguments)
    for word in words:
        assert word in str(info.value)


# --------------------------------------------------------------------------- properties

ENCODINGS = st.sampled_from(SUPPORTED_ENCODINGS + ("yuv422", "", "RGB8", "bayer_rggb8"))


WRAPPERS = st.sampled_from([bytes, bytearray, memoryview, lambda b: array.array("B", b)])


def _canonical(encoding: str) -> str | None:
    return next((name for name in SUPPORTED_ENCODINGS if name.lower() == encoding.lower()), None)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    draw=st.data(),
    encoding=ENCODINGS,
    height=st.integers(-2, 40),
    width=st.integers(-2, 40),
    is_bigendian=st.sampled_from([False, True, 0, 1, 2]),
    wrap=WRAPPERS,
)
def test_image_from_raw_never_raises_anything_else(
    draw, encoding, height, width, is_bigendian, wrap
):
    canonical = _canonical(encoding)
    row = row_bytes(canonical, width) if canonical else 3 * width
    # Half arbitrary, half near the valid boundary, so both outcomes are exercised.
    near_row = st.integers(-2, 16).map(lambda pad: row + pad)
    step = draw.draw(st.one_of(st.integers(-10, 400), near_row))
    need = step * (max(height, 1) - 1) + row
    near_need = st.integers(-2, 8).map(lambda d: max(0, need + d))
    length = draw.draw(st.one_of(st.integers(0, 20_000), near_need))
    noise = np.random.default_rng(length).integers(0, 256, size=length, dtype=np.uint8)
    data = wrap(noise.tobytes())
    try:
        result = image_from_raw(
            encoding, height, width, step, is_bigendian, data, max_pixels=10_000
        )
    except ImageConversionError:
        event("refused")
        return
    event("decoded")
    assert canonical is not None
    dtype, channels = LAYOUT[canonical]
    expected = (height, width) if channels == 1 else (height, width, channels)
    assert result.shape == expected
    assert result.dtype == dtype and result.dtype.isnative
    assert result.flags.c_contiguous


VALID_PNG = encode_compressed(gradient_rgb(12, 16), "png")
VALID_JPEG = encode_compressed(gradient_rgb(12, 16), "jpeg")
PREFIXES = st.sampled_from(
    [
        b"",
        b"\xff\xd8",
        b"\xff\xd8\xff\xc0",
        b"\x89PNG\r\n\x1a\n",
        png_with_ihdr(5, 4),
        VALID_PNG,
        VALID_JPEG,
    ]
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(
        ["jpeg", "png", "16UC1; compressedDepth png", "32FC1; compressedDepth png", "x"]
    ),
    prefix=PREFIXES,
    body=st.binary(max_size=512),
    flip=st.integers(0, 4096),
)
def test_decode_compressed_never_raises_anything_else(fmt, prefix, body, flip):
    payload = bytearray(prefix + body)
    if payload and flip % 3 == 0:  # corrupt one byte of an otherwise plausible payload
        payload[flip % len(payload)] ^= 0xA5
    try:
        result = decode_compressed(fmt, bytes(payload), max_pixels=1 << 20)
    except ImageConversionError:
        event("refused")
        return
    event("decoded")
    assert isinstance(result, np.ndarray) and result.size > 0


@settings(max_examples=50, deadline=None)
@given(data=st.data(), fmt=st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8"]))
def test_truncating_valid_compressed_data_never_raises_anything_else(data, fmt):
    payload = encode_compressed(gradient_rgb(24, 32), data.draw(st.sampled_from(["png", "jpeg"])))
    cut = data.draw(st.integers(0, len(payload)))
    try:
        decode_compressed(fmt, payload[:cut])
    except ImageConversionError:
        pass
