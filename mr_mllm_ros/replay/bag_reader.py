"""Camera images out of rosbag2 bags (sqlite3 and mcap), without ROS.

`rosbags` reads the bag. When it cannot - a truncated file (SQLite refuses a database
whose header counts more pages than the file holds; an MCAP without its footer and
summary), or a corrupt page or chunk found while reading - a salvage reader takes over
and reads, record by record, what is still there; every loss is reported with its reason
(`ReadLog`). Image/CompressedImage fields are read straight from the CDR bytes (the
pixels stay a zero-copy view; rosbags' generic deserializer is the fallback and names
the problem of a malformed message), then decoded with core.images exactly as the nodes
decode them (ros.conversions does the same with rclpy messages); a message that cannot
be decoded comes back with the reason instead of a frame, counted by a stable reason
key.

No rclpy here: replay runs on machines without ROS.
"""

from __future__ import annotations

import logging
import mmap
import re
import sqlite3
import struct
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from ..core import images
from ..core.errors import BagError, MrMllmError
from ..core.types import Frame

log = logging.getLogger(__name__)

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
STORAGE_SUFFIXES = {'.db3': 'sqlite3', '.mcap': 'mcap'}
NS = 1_000_000_000


def reason_key(message: str) -> str:
    """A stable counting key for an error message (numbers -> N), as the nodes count
    rejected images in /diagnostics."""
    return re.sub(r'\d+', 'N', message.split('\n', 1)[0])[:120]


@dataclass
class ReadLog:
    """What could not be read, and why. `problems` are storage-level (whole regions of a
    file); per-message decode failures are counted by the caller from BagMessage.error."""

    problems: list[str] = field(default_factory=list)
    messages_read: int = 0

    def problem(self, text: str) -> None:
        if text not in self.problems:
            log.warning('%s', text)
            self.problems.append(text)


@dataclass
class TopicInfo:
    name: str
    msgtype: str
    count: int | None  # None: unknown (salvaged file whose index is lost)


@dataclass
class BagInfo:
    """What a bag holds, from rosbags' metadata or, for a damaged bag, a salvage scan."""

    path: str      # resolved path, the bag's identity in every output
    storage: str   # 'sqlite3' | 'mcap'
    files: list[str]
    topics: dict[str, TopicInfo]
    start_ns: int | None
    end_ns: int | None  # exclusive
    message_count: int | None
    reader: str  # 'rosbags' | 'salvage'
    compression_mode: str | None = None  # rosbag2 'message' compression: zstd per message
    problems: list[str] = field(default_factory=list)

    def image_topics(self, wanted: Iterable[str] | None = None) -> list[str]:
        names = sorted(t for t, info in self.topics.items() if info.msgtype in IMAGE_TYPES)
        if wanted is None:
            return names
        wanted = {_norm_topic(t) for t in wanted}
        return [t for t in names if t in wanted]


class RawMessage(NamedTuple):  # a tuple: cheapest to make, once per message
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


@dataclass(frozen=True)
class BagMessage:
    """One image message: a decoded frame, or the reason it could not be decoded."""

    topic: str
    msgtype: str
    log_time_ns: int
    stamp_ns: int | None   # None when even the header could not be read
    frame_id: str
    encoding: str          # Image.encoding or CompressedImage.format
    width: int
    height: int
    frame: Frame | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.frame is not None


def _norm_topic(topic: str) -> str:
    return '/' + topic.strip('/')


# ------------------------------------------------------------------------------ files

def storage_files(path: Path) -> list[Path]:
    """The storage files of a bag given as a folder or as one .db3/.mcap file."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
    return files


def detect_storage(path: str | Path) -> str:
    """'sqlite3' or 'mcap', from metadata.yaml or the storage files' suffix."""
    path = Path(path)
    meta = path / 'metadata.yaml'
    if meta.is_file():
        m = re.search(r'storage_identifier:\s*(\S+)', meta.read_text(errors='replace'))
        if m and m.group(1) in STORAGE_SUFFIXES.values():
            return m.group(1)
    for f in storage_files(path) if path.exists() else []:
        return STORAGE_SUFFIXES[f.suffix]
    raise BagError(f'{path}: no rosbag2 storage file (.db3 or .mcap) found')


def _rosbags_reader(path: Path):
    from rosbags.rosbag2 import Reader
    if path.is_dir() and not (path / 'metadata.yaml').is_file():
        files = storage_files(path)
        if len(files) != 1:
            raise BagError(f'{path}: no metadata.yaml and {len(files)} storage files')
        return Reader(files[0])  # a recording that never closed: rosbags reads the file
    return Reader(path)


# ------------------------------------------------------------------------------ open

def open_bag(path: str | Path) -> BagInfo:
    """Metadata of a bag (folder with metadata.yaml, a folder without it, or a .db3/.mcap
    file). A bag rosbags cannot open is scanned by the salvage reader; raises BagError
    only when nothing at all is readable."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise BagError(f'bag {path} does not exist')
    storage = detect_storage(p)
    files = [str(f) for f in storage_files(p)]
    try:
        with _rosbags_reader(p) as reader:
            topics: dict[str, TopicInfo] = {}
            for c in reader.connections:
                t = topics.setdefault(c.topic, TopicInfo(c.topic, c.msgtype, 0))
                t.count = (t.count or 0) + c.msgcount
            n = reader.message_count
            return BagInfo(str(p), storage, files, topics,
                           reader.start_time if n else None, reader.end_time if n else None,
                           n, 'rosbags', reader.compression_mode)
    except Exception as e:  # noqa: BLE001 - any parser error on a damaged file: salvage
        problem = f'{p.name}: rosbags cannot open it ({e}); reading what is left record ' \
                  'by record'
    readlog = ReadLog()
    readlog.problem(problem)
    info = _salvage_info(p, storage, files, readlog)
    info.problems = readlog.problems
    return info


def _compression_mode(path: Path) -> str | None:
    meta = path / 'metadata.yaml'
    if meta.is_file():
        m = re.search(r'compression_mode:\s*(\S+)', meta.read_text(errors='replace'))
        if m and m.group(1).strip('"\'').lower() not in ('', 'none'):
            return m.group(1).strip('"\'').lower()
    return None


def _salvage_info(p: Path, storage: str, files: list[str], readlog: ReadLog) -> BagInfo:
    topics: dict[str, TopicInfo] = {}
    start, end, count = None, None, 0
    for f in files:
        if storage == 'sqlite3':
            stats = _sqlite_stats(Path(f), readlog)
        else:
            stats = _mcap_stats(Path(f), readlog)
        for name, (msgtype, n, t0, t1) in stats.items():
            t = topics.setdefault(name, TopicInfo(name, msgtype, 0))
            t.count = None if n is None or t.count is None else t.count + n
            count = None if n is None or count is None else count + n
            if t0 is not None:
                start = t0 if start is None else min(start, t0)
                end = t1 if end is None else max(end, t1)
    if not topics:
        raise BagError(f'bag {p}: nothing readable ({"; ".join(readlog.problems)})')
    return BagInfo(str(p), storage, files, topics, start, end, count, 'salvage',
                   _compression_mode(p))


# --------------------------------------------------------------------------- reading

def iter_raw(info: BagInfo, topics: Iterable[str], start_ns: int | None = None,
             stop_ns: int | None = None, readlog: ReadLog | None = None
             ) -> Iterator[RawMessage]:
    """Messages of `topics` with start_ns <= log time < stop_ns, in log-time order.
    A failure while rosbags reads switches to the salvage reader, which continues after
    the last message already yielded."""
    readlog = readlog if readlog is not None else ReadLog()
    topics = set(topics)
    last_ts, at_last = None, 0  # resume point for the salvage reader
    if info.reader == 'rosbags':
        n = 0
        try:
            with _rosbags_reader(Path(info.path)) as reader:
                conns = [c for c in reader.connections if c.topic in topics]
                if not conns:
                    return
                for conn, ts, data in reader.messages(conns, start_ns, stop_ns):
                    n += 1
                    at_last = at_last + 1 if ts == last_ts else 1
                    last_ts = ts
                    readlog.messages_read += 1
                    yield RawMessage(conn.topic, conn.msgtype, ts, data)
            return
        except Exception as e:  # noqa: BLE001 - damaged storage: salvage the rest
            readlog.problem(f'{Path(info.path).name}: rosbags stopped after {n} messages '
                            f'of {", ".join(sorted(topics))} ({e}); reading the rest record '
                            'by record')
    skip_same = at_last
    for f in info.files:
        reader = _sqlite_messages if info.storage == 'sqlite3' else _mcap_messages
        for m in reader(Path(f), topics, start_ns, stop_ns, readlog):
            if last_ts is not None:
                if m.log_time_ns < last_ts:
                    continue
                if m.log_time_ns == last_ts and skip_same > 0:
                    skip_same -= 1
                    continue
            if info.compression_mode == 'message':
                m = RawMessage(m.topic, m.msgtype, m.log_time_ns, _zstd_decompress(m.data))
            readlog.messages_read += 1
            yield m


def _zstd_decompress(data: bytes) -> bytes:
    try:
        from compression import zstd  # Python >= 3.14
    except ImportError:
        from backports import zstd
    return zstd.decompress(data)


# ------------------------------------------------------------------- sqlite3 salvage

def _sqlite_connect(path: Path) -> sqlite3.Connection:
    uri = f'file:{urllib.parse.quote(str(path))}?immutable=1'
    con = sqlite3.connect(uri, uri=True)
    # A truncated file's header still counts the pages that were cut off; SQLite calls
    # that "malformed" unless writable_schema is on (nothing is written: immutable).
    con.execute('PRAGMA writable_schema=ON')
    return con


def _sqlite_topics(con: sqlite3.Connection) -> dict[int, tuple[str, str]]:
    return {tid: (name, msgtype) for tid, name, msgtype in
            con.execute('SELECT id, name, type FROM topics')}


def _sqlite_rows(con: sqlite3.Connection, topic_ids, lo: int, hi: int, path: Path,
                 readlog: ReadLog) -> list[tuple[int, int, int]]:
    """(id, topic id, timestamp) of the messages in [lo, hi), by timestamp, without their
    data. For a damaged file: the ids the timestamp index still holds (a covering read,
    no table pages) plus the rows a rowid walk reaches before the damage, each then
    looked up on its own; rows whose table page is lost are counted as lost."""
    marks = ','.join('?' * len(topic_ids))
    try:
        return con.execute(f'SELECT id, topic_id, timestamp FROM messages WHERE topic_id IN '
                           f'({marks}) AND timestamp >= ? AND timestamp < ? '
                           'ORDER BY timestamp, id', (*topic_ids, lo, hi)).fetchall()
    except sqlite3.Error as e:
        first = e
    found: dict[int, int | None] = {}  # id -> topic id (None: not known yet)
    try:  # rosbag2's index on timestamp (ros2 bag and rosbags both create it)
        for mid, ts in con.execute('SELECT id, timestamp FROM messages INDEXED BY '
                                   'timestamp_idx WHERE timestamp >= ? AND timestamp < ?',
                                   (lo, hi)):
            found[mid] = None
    except sqlite3.Error:
        pass
    walked = 0
    try:
        for mid, tid, ts in con.execute('SELECT id, topic_id, timestamp FROM messages'):
            walked = mid
            if lo <= ts < hi:
                found[mid] = tid
    except sqlite3.Error:
        pass
    rows, lost = [], 0
    for mid, tid in found.items():
        try:
            tid, ts = con.execute('SELECT topic_id, timestamp FROM messages WHERE id=?',
                                  (mid,)).fetchone()
        except (sqlite3.Error, TypeError):
            lost += 1
            continue
        if tid in topic_ids:
            rows.append((mid, tid, ts))
    readlog.problem(f'{path.name}: message table damaged ({first}); found {len(found)} '
                    f'message(s) by index and row walk (walk stopped at row {walked})'
                    + (f', {lost} of them lost' if lost else ''))
    rows.sort(key=lambda r: (r[2], r[0]))
    return rows


def _sqlite_stats(path: Path, readlog: ReadLog) -> dict:
    try:
        con = _sqlite_connect(path)
        topics = _sqlite_topics(con)
    except sqlite3.Error as e:
        readlog.problem(f'{path.name}: topics table unreadable ({e})')
        return {}
    try:
        rows = _sqlite_rows(con, list(topics), -(2 ** 63), 2 ** 63 - 1, path, readlog)
    finally:
        con.close()
    out = {name: [msgtype, 0, None, None] for name, msgtype in topics.values()}
    for _, tid, ts in rows:
        s = out[topics[tid][0]]
        s[1] += 1
        s[2] = ts if s[2] is None else min(s[2], ts)
        s[3] = ts + 1 if s[3] is None else max(s[3], ts + 1)
    return {k: tuple(v) for k, v in out.items()}


def _sqlite_messages(path: Path, topics: set[str], start_ns, stop_ns,
                     readlog: ReadLog) -> Iterator[RawMessage]:
    try:
        con = _sqlite_connect(path)
        by_id = {tid: t for tid, t in _sqlite_topics(con).items() if t[0] in topics}
    except sqlite3.Error as e:
        readlog.problem(f'{path.name}: topics table unreadable ({e})')
        return
    lo = -(2 ** 63) if start_ns is None else start_ns
    hi = 2 ** 63 - 1 if stop_ns is None else stop_ns
    lost, first_error = 0, ''
    try:
        rows = _sqlite_rows(con, list(by_id), lo, hi, path, readlog) if by_id else []
        for mid, tid, ts in rows:
            try:
                (data,) = con.execute('SELECT data FROM messages WHERE id=?', (mid,)).fetchone()
            except (sqlite3.Error, TypeError) as e:
                lost += 1
                first_error = first_error or str(e) or type(e).__name__
                continue
            yield RawMessage(by_id[tid][0], by_id[tid][1], ts, bytes(data))
    finally:
        con.close()
        if lost:
            readlog.problem(f'{path.name}: {lost} message(s) of {", ".join(sorted(topics))} '
                            f'unreadable in the damaged part of the file ({first_error})')


# ---------------------------------------------------------------------- mcap salvage

_MCAP_MAGIC = b'\x89MCAP0\r\n'


class _Truncated(Exception):
    pass


def _take(buf: memoryview, pos: int, n: int) -> tuple[memoryview, int]:
    if pos + n > len(buf):
        raise _Truncated
    return buf[pos:pos + n], pos + n


def _u(fmt: str, buf: memoryview, pos: int) -> tuple[int, int]:
    size = struct.calcsize(fmt)
    b, pos = _take(buf, pos, size)
    return struct.unpack(fmt, b)[0], pos


def _string(buf: memoryview, pos: int) -> tuple[str, int]:
    n, pos = _u('<I', buf, pos)
    b, pos = _take(buf, pos, n)
    return bytes(b).decode('utf-8', 'replace'), pos


def _scan_mcap(path: Path, readlog: ReadLog,
               want_data: bool = True) -> Iterator[tuple[str, str, int, bytes | None]]:
    """(topic, schema name, log time, data) of every message record that is complete,
    in file order, reading records one by one (no summary, footer or index needed).
    Stops at the first incomplete record and reports where the file ends."""
    from rosbags.rosbag2.storage_mcap import decompress
    with open(path, 'rb') as f:
        if f.seek(0, 2) < len(_MCAP_MAGIC):
            readlog.problem(f'{path.name}: empty or not an MCAP file')
            return
        # Mapped, not read: a salvaged file may be large. The mapping closes when the last
        # view of it is gone.
        buf = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    if bytes(buf[:8]) != _MCAP_MAGIC:
        readlog.problem(f'{path.name}: not an MCAP file (bad magic)')
        return
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}

    def records(data: memoryview, top: bool) -> Iterator[tuple[int, memoryview, int]]:
        pos = 8 if top else 0
        while pos < len(data):
            start = pos
            try:
                op, pos = _u('<B', data, pos)
                length, pos = _u('<Q', data, pos)
                body, pos = _take(data, pos, length)
            except _Truncated:
                yield -1, data[start:], start
                return
            yield op, body, start

    def messages_in(data: memoryview, top: bool, where: str):
        for op, body, offset in records(data, top):
            if op == -1:
                if top:
                    readlog.problem(f'{path.name}: file ends inside a record at byte '
                                    f'{offset} of {len(data)} (truncated); everything '
                                    'before it was read')
                    if len(body) > 9 and body[0] == 0x06:
                        yield from partial_chunk(body[9:], offset)
                else:
                    readlog.problem(f'{path.name}: {where} ends inside a record')
                return
            try:
                if op == 0x03:  # schema
                    sid, p = _u('<H', body, 0)
                    name, p = _string(body, p)
                    schemas[sid] = name
                elif op == 0x04:  # channel
                    cid, p = _u('<H', body, 0)
                    sid, p = _u('<H', body, p)
                    topic, p = _string(body, p)
                    channels[cid] = (topic, schemas.get(sid, ''))
                elif op == 0x05:  # message
                    cid, p = _u('<H', body, 0)
                    log_time, p = _u('<Q', body, p + 4)
                    if cid in channels:
                        topic, schema = channels[cid]
                        yield topic, schema, log_time, \
                            bytes(body[p + 8:]) if want_data else None
                elif op == 0x06 and top:  # chunk
                    yield from chunk(body, offset)
                elif op in (0x02, 0x0F) and top:  # footer / data end: summary follows
                    return
            except _Truncated:
                readlog.problem(f'{path.name}: malformed record (op 0x{op:02x}) at byte '
                                f'{offset}; skipped')

    def chunk(body: memoryview, offset: int):
        t0, p = _u('<Q', body, 0)
        _, p = _u('<Q', body, p)
        size, p = _u('<Q', body, p)
        crc, p = _u('<I', body, p)
        compression, p = _string(body, p)
        n, p = _u('<Q', body, p)
        data, p = _take(body, p, n)
        try:
            raw = decompress(bytes(data), compression, size, crc)
        except Exception as e:  # noqa: BLE001 - corrupt chunk: skip it, keep going
            readlog.problem(f'{path.name}: chunk at byte {offset} unreadable ({e}); its '
                            'messages are lost')
            return
        yield from messages_in(memoryview(raw), False, f'chunk at byte {offset}')

    def partial_chunk(body: memoryview, offset: int):
        # An uncompressed chunk cut by the end of the file: its complete records count.
        try:
            p = 8 + 8 + 8 + 4
            compression, p = _string(body, p)
            p += 8
        except _Truncated:
            return
        if compression == '':
            yield from messages_in(body[p:], False, f'the cut chunk at byte {offset}')

    yield from messages_in(buf, True, '')


def _mcap_stats(path: Path, readlog: ReadLog) -> dict:
    out: dict[str, list] = {}
    for topic, schema, ts, _ in _scan_mcap(path, readlog, want_data=False):
        s = out.setdefault(topic, [schema, 0, ts, ts + 1])
        s[1] += 1
        s[2], s[3] = min(s[2], ts), max(s[3], ts + 1)
    return {k: tuple(v) for k, v in out.items()}


def _mcap_messages(path: Path, topics: set[str], start_ns, stop_ns,
                   readlog: ReadLog) -> Iterator[RawMessage]:
    lo = -(2 ** 63) if start_ns is None else start_ns
    hi = 2 ** 63 - 1 if stop_ns is None else stop_ns
    for topic, schema, ts, data in _scan_mcap(path, readlog):
        if topic in topics and lo <= ts < hi:
            yield RawMessage(topic, schema, ts, data)


# --------------------------------------------------------------------------- decoding

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


class _BadCdr(Exception):
    pass


def parse_image_cdr(data: bytes, msgtype: str) -> ImageFields:
    """Image/CompressedImage fields straight from CDR, the pixel data as a zero-copy view.
    rosbags' generic deserializer costs ~40 us per message; this ~5 us. Raises _BadCdr
    on anything unexpected (the caller then lets rosbags report the exact problem)."""
    buf = memoryview(data)
    n = len(buf)
    if n < 8 or buf[0] != 0 or buf[1] not in (0, 1):
        raise _BadCdr
    e = '<' if buf[1] == 1 else '>'
    u32 = struct.Struct(e + 'I')

    def align4(pos: int) -> int:
        return pos + (-(pos - 4)) % 4  # CDR alignment counts from after the 4-byte header

    def sequence(pos: int) -> tuple[memoryview, int]:
        pos = align4(pos)
        if pos + 4 > n:
            raise _BadCdr
        (length,) = u32.unpack_from(buf, pos)
        end = pos + 4 + length
        if end > n:
            raise _BadCdr
        return buf[pos + 4:end], end

    def string(pos: int) -> tuple[str, int]:
        raw, pos = sequence(pos)
        if len(raw) and raw[-1] != 0:
            raise _BadCdr
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
        raise _BadCdr from None
    return ImageFields(sec * NS + nsec, frame_id, encoding, height, width, is_bigendian,
                       step, pixels)


def _image_fields(raw: RawMessage) -> ImageFields:
    try:
        return parse_image_cdr(raw.data, raw.msgtype)
    except _BadCdr:
        pass
    msg = typestore().deserialize_cdr(raw.data, raw.msgtype)  # exact error, or odd-but-ok
    stamp = int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec)
    if raw.msgtype == COMPRESSED_IMAGE:
        return ImageFields(stamp, msg.header.frame_id, msg.format, data=msg.data)
    return ImageFields(stamp, msg.header.frame_id, msg.encoding, int(msg.height),
                       int(msg.width), int(msg.is_bigendian), int(msg.step), msg.data)


def decode(raw: RawMessage, *, camera: str = '', max_pixels: int | None = None) -> BagMessage:
    """Image/CompressedImage CDR -> BagMessage with an RGB8 Frame (the same decoding as
    ros.conversions.frame_from_image / frame_from_compressed), or the reason it failed."""
    try:
        msg = _image_fields(raw)
    except Exception as e:  # noqa: BLE001 - any corrupt CDR: count it, keep going
        head = header_of(raw.data)
        return BagMessage(raw.topic, raw.msgtype, raw.log_time_ns,
                          head[0] if head else None, head[1] if head else '', '', 0, 0, None,
                          f'cannot deserialize {raw.msgtype} ({type(e).__name__}: {e})')
    compressed = raw.msgtype == COMPRESSED_IMAGE
    try:
        if compressed:
            array = images.decode_compressed(msg.encoding, msg.data, max_pixels=max_pixels)
            if array.ndim == 2:  # 16-bit PNG (compressedDepth): normalise like mono16
                array = images.to_rgb8(array, 'mono16')
        else:
            array = images.to_rgb8(images.image_from_raw(
                msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data,
                max_pixels=max_pixels), msg.encoding)
    except MrMllmError as e:
        return BagMessage(raw.topic, raw.msgtype, raw.log_time_ns, msg.stamp_ns, msg.frame_id,
                          msg.encoding, msg.width, msg.height, None, str(e))
    frame = Frame(np.ascontiguousarray(array), msg.stamp_ns, msg.frame_id, camera or raw.topic)
    return BagMessage(raw.topic, raw.msgtype, raw.log_time_ns, msg.stamp_ns, msg.frame_id,
                      msg.encoding, frame.width, frame.height, frame)


def iter_frames(info: BagInfo, topics: Iterable[str], start_ns: int | None = None,
                stop_ns: int | None = None, *, every: int = 1,
                max_pixels: int | None = None, readlog: ReadLog | None = None
                ) -> Iterator[BagMessage]:
    """Decoded image messages of one bag (every N-th per topic), in log-time order."""
    counts: dict[str, int] = {}
    for raw in iter_raw(info, topics, start_ns, stop_ns, readlog):
        i = counts.get(raw.topic, 0)
        counts[raw.topic] = i + 1
        if i % every == 0:
            yield decode(raw, max_pixels=max_pixels)
