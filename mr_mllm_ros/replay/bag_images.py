"""Image messages out of their CDR bytes: the Image/CompressedImage fields read straight
from CDR (the pixels stay a zero-copy view; rosbags' generic deserializer is the fallback
and names the problem of a malformed message), then decoded by core.image_codecs exactly as the
nodes decode them; a message that cannot be decoded comes back with the reason instead of
a frame."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from ..core import image_codecs
from ..core.errors import MrMllmError
from ..core.types import Frame
from .bag_records import COMPRESSED_IMAGE, NS, BagMessage, RawMessage

_TYPESTORE = None


def typestore():
    """The Kilted typestore with this project's messages registered (shared, read-only)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from .result_messages import result_typestore
        _TYPESTORE = result_typestore()
    return _TYPESTORE


def header_of(data: bytes) -> tuple[int, str] | None:
    """(stamp ns, frame_id) from the CDR bytes of any message that starts with a
    std_msgs/Header (Image, CompressedImage), without deserializing the pixels."""
    try:
        if len(data) < 16 or data[1] not in (0, 1):  # encapsulation: CDR_BE / CDR_LE
            return None
        end = '<' if data[1] == 1 else '>'
        sec, nsec, n = struct.unpack_from(end + 'iII', data, 4)
        frame_id = bytes(data[16:16 + max(n - 1, 0)]).decode('utf-8', 'replace')
        return sec * NS + nsec, frame_id
    except struct.error:
        return None


@dataclass(frozen=True)
class ImageFields:
    """The fields of a sensor_msgs/Image or CompressedImage that decoding needs."""

    stamp_ns: int
    frame_id: str
    encoding: str  # Image.encoding, or CompressedImage.format
    height: int = 0
    width: int = 0
    is_bigendian: int = 0
    step: int = 0
    data: memoryview | np.ndarray = field(default=memoryview(b''), repr=False)


class BadCdr(Exception):
    pass


def parse_image_cdr(data: bytes, msgtype: str) -> ImageFields:
    """Image/CompressedImage fields straight from CDR, the pixel data as a zero-copy view.
    rosbags' generic deserializer costs ~40 us per message; this ~5 us. Raises BadCdr
    on anything unexpected (the caller then lets rosbags report the exact problem)."""
    buf = memoryview(data)
    n = len(buf)
    if n < 8 or buf[0] != 0 or buf[1] not in (0, 1):
        raise BadCdr
    e = '<' if buf[1] == 1 else '>'
    u32 = struct.Struct(e + 'I')

    def align4(pos: int) -> int:
        return pos + (-(pos - 4)) % 4  # CDR alignment counts from after the 4-byte header

    def sequence(pos: int) -> tuple[memoryview, int]:
        pos = align4(pos)
        if pos + 4 > n:
            raise BadCdr
        (length,) = u32.unpack_from(buf, pos)
        end = pos + 4 + length
        if end > n:
            raise BadCdr
        return buf[pos + 4:end], end

    def string(pos: int) -> tuple[str, int]:
        raw, pos = sequence(pos)
        if len(raw) and raw[-1] != 0:
            raise BadCdr
        return bytes(raw[:-1]).decode('utf-8'), pos

    try:
        sec, nsec = struct.unpack_from(e + 'iI', buf, 4)
        frame_id, pos = string(12)
        if msgtype == COMPRESSED_IMAGE:
            fmt, pos = string(pos)
            pixels, pos = sequence(pos)
            return ImageFields(sec * NS + nsec, frame_id, fmt, data=pixels)
        pos = align4(pos)
        height, width = struct.unpack_from(e + 'II', buf, pos)
        encoding, pos = string(pos + 8)
        is_bigendian = buf[pos]
        (step,) = u32.unpack_from(buf, align4(pos + 1))
        pixels, pos = sequence(align4(pos + 1) + 4)
    except (struct.error, IndexError, UnicodeDecodeError):
        raise BadCdr from None
    return ImageFields(sec * NS + nsec, frame_id, encoding, height, width, is_bigendian,
                       step, pixels)


def _image_fields(raw: RawMessage) -> ImageFields:
    try:
        return parse_image_cdr(raw.data, raw.msgtype)
    except BadCdr:
        pass
    msg = typestore().deserialize_cdr(raw.data, raw.msgtype)  # exact error, or odd-but-ok
    stamp = int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec)
    if raw.msgtype == COMPRESSED_IMAGE:
        return ImageFields(stamp, msg.header.frame_id, msg.format, data=msg.data)
    return ImageFields(stamp, msg.header.frame_id, msg.encoding, int(msg.height),
                       int(msg.width), int(msg.is_bigendian), int(msg.step), msg.data)


def decode(raw: RawMessage, *, camera: str = '', max_pixels: int | None = None) -> BagMessage:
    """Image/CompressedImage CDR -> BagMessage with an RGB8 Frame (core.image_codecs, the decoder
    ros.conversions and eval use too), or the reason it failed."""
    try:
        msg = _image_fields(raw)
    except Exception as e:  # noqa: BLE001 - any corrupt CDR: count it, keep going
        head = header_of(raw.data)
        return BagMessage(raw.topic, raw.msgtype, raw.log_time_ns,
                          head[0] if head else None, head[1] if head else '', '', 0, 0, None,
                          f'cannot deserialize {raw.msgtype} ({type(e).__name__}: {e})')
    try:
        if raw.msgtype == COMPRESSED_IMAGE:
            array = image_codecs.compressed_to_rgb8(msg.encoding, msg.data, max_pixels=max_pixels)
        else:
            array = image_codecs.raw_to_rgb8(msg.encoding, msg.height, msg.width, msg.step,
                                             msg.is_bigendian, msg.data, max_pixels=max_pixels)
    except MrMllmError as e:
        return BagMessage(raw.topic, raw.msgtype, raw.log_time_ns, msg.stamp_ns, msg.frame_id,
                          msg.encoding, msg.width, msg.height, None, str(e))
    frame = Frame(np.ascontiguousarray(array), msg.stamp_ns, msg.frame_id, camera or raw.topic)
    return BagMessage(raw.topic, raw.msgtype, raw.log_time_ns, msg.stamp_ns, msg.frame_id,
                      msg.encoding, frame.width, frame.height, frame)
