"""Salvage reader of rosbag2 sqlite3 files that rosbags cannot open or stops reading
(a truncated file, a corrupt page): what is still there, row by row, every loss reported
to the ReadLog."""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path
from typing import Iterator

from .bag_records import RawMessage, ReadLog


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


def sqlite_stats(path: Path, readlog: ReadLog) -> dict:
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


def sqlite_messages(path: Path, topics: set[str], start_ns, stop_ns,
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
