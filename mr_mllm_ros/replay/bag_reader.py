"""Camera images out of rosbag2 bags (sqlite3 and mcap), without ROS.

`rosbags` reads the bag. When it cannot - a truncated file (SQLite refuses a database
whose header counts more pages than the file holds; an MCAP without its footer and
summary), or a corrupt page or chunk found while reading - a salvage reader takes over
and reads, record by record, what is still there; every loss is reported with its reason
(`ReadLog`). Image messages are decoded by bag_images (core.images, as the nodes decode
them); a message that cannot be decoded comes back with the reason instead of a frame,
counted by a stable reason key.

    bag_reader    open a bag, iterate raw messages / decoded frames (this module)
    bag_records   BagInfo, RawMessage, BagMessage, ReadLog
    bag_sqlite    salvage of damaged sqlite3 files
    bag_mcap      salvage of damaged MCAP files
    bag_images    Image/CompressedImage CDR -> Frame

No rclpy here: replay runs on machines without ROS.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator

from ..core.errors import BagError
from .bag_images import decode, header_of
from .bag_mcap import mcap_messages, mcap_stats
from .bag_records import (NS, STORAGE_SUFFIXES, BagInfo, BagMessage, RawMessage, ReadLog,
                          TopicInfo)
from .bag_sqlite import sqlite_messages, sqlite_stats

#: one import for reading a bag (replay's runner, eval, benchmarks)
__all__ = ['NS', 'BagInfo', 'BagMessage', 'RawMessage', 'ReadLog', 'TopicInfo', 'decode',
           'detect_storage', 'header_of', 'iter_frames', 'iter_raw', 'open_bag',
           'storage_files']


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
            stats = sqlite_stats(Path(f), readlog)
        else:
            stats = mcap_stats(Path(f), readlog)
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
        reader = sqlite_messages if info.storage == 'sqlite3' else mcap_messages
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
