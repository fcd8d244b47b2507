"""Salvage reader of MCAP files that rosbags cannot open or stops reading (no footer or
summary, a cut chunk): a scan of the records one by one, every loss reported to the
ReadLog."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path
from typing import Iterator

from .bag_records import RawMessage, ReadLog


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


def mcap_stats(path: Path, readlog: ReadLog) -> dict:
    out: dict[str, list] = {}
    for topic, schema, ts, _ in _scan_mcap(path, readlog, want_data=False):
        s = out.setdefault(topic, [schema, 0, ts, ts + 1])
        s[1] += 1
        s[2], s[3] = min(s[2], ts), max(s[3], ts + 1)
    return {k: tuple(v) for k, v in out.items()}


def mcap_messages(path: Path, topics: set[str], start_ns, stop_ns,
                   readlog: ReadLog) -> Iterator[RawMessage]:
    lo = -(2 ** 63) if start_ns is None else start_ns
    hi = 2 ** 63 - 1 if stop_ns is None else stop_ns
    for topic, schema, ts, data in _scan_mcap(path, readlog):
        if topic in topics and lo <= ts < hi:
            yield RawMessage(topic, schema, ts, data)
