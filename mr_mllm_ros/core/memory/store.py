"""The memory's database: an embedded SQLite file (default) or PostgreSQL by URL.

One connection per thread (the writer thread has its own; queries open theirs). SQL is
written once with `?` placeholders and adapted to psycopg's `%s`. SQLite runs in WAL mode
with synchronous=NORMAL: a committed batch survives a killed process (kill -9) and readers
never wait for the writer. Retention (`enforce_retention`) deletes by age and by size.

Tables: runs (one per writer start: track ids restart with a node, so a track is
(run, camera, track_id)), observations, watched (spans of processed frames per camera),
descriptions (text, grounding JSON, optional sentence embedding), alerts.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import MrMllmError

log = logging.getLogger(__name__)

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS runs (id {serial} PRIMARY KEY, started_ns BIGINT NOT NULL,
       label TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS observations (stamp_ns BIGINT NOT NULL,
       camera TEXT NOT NULL, run INTEGER NOT NULL, track_id BIGINT NOT NULL,
       class_name TEXT NOT NULL, score {real} NOT NULL, x1 {real} NOT NULL, y1 {real} NOT NULL,
       x2 {real} NOT NULL, y2 {real} NOT NULL, image_w INTEGER NOT NULL,
       image_h INTEGER NOT NULL, thumbnail TEXT, px {real}, py {real}, pz {real},
       position_frame TEXT, position_world INTEGER)""",
    'CREATE INDEX IF NOT EXISTS obs_class_time ON observations (class_name, stamp_ns, camera, '
    'track_id)',
    'CREATE INDEX IF NOT EXISTS obs_time ON observations (stamp_ns)',
    # (.., stamp_ns): a track's newest row (and its thumbnail) without a scan by time.
    'CREATE INDEX IF NOT EXISTS obs_track ON observations (run, camera, track_id, stamp_ns)',
    # One row per track (and class): what duration and count questions read, so they
    # cost O(tracks), not O(observations). Kept by the writer with each batch.
    """CREATE TABLE IF NOT EXISTS tracks (run INTEGER NOT NULL, camera TEXT NOT NULL,
       track_id BIGINT NOT NULL, class_name TEXT NOT NULL, first_ns BIGINT NOT NULL,
       last_ns BIGINT NOT NULL, observations BIGINT NOT NULL,
       PRIMARY KEY (run, camera, track_id, class_name))""",
    'CREATE INDEX IF NOT EXISTS tracks_class_time ON tracks (class_name, last_ns)',
    """CREATE TABLE IF NOT EXISTS watched (run INTEGER NOT NULL, camera TEXT NOT NULL,
       start_ns BIGINT NOT NULL, end_ns BIGINT NOT NULL, frames BIGINT NOT NULL,
       PRIMARY KEY (run, camera, start_ns))""",
    """CREATE TABLE IF NOT EXISTS descriptions (stamp_ns BIGINT NOT NULL,
       camera TEXT NOT NULL, text TEXT NOT NULL, mllm_model TEXT NOT NULL,
       grounding TEXT NOT NULL, embedding {blob})""",
    'CREATE INDEX IF NOT EXISTS desc_time ON descriptions (stamp_ns)',
    """CREATE TABLE IF NOT EXISTS alerts (stamp_ns BIGINT NOT NULL, camera TEXT NOT NULL,
       severity TEXT NOT NULL, code TEXT NOT NULL, rule TEXT NOT NULL,
       message TEXT NOT NULL, objects TEXT NOT NULL)""",
    'CREATE INDEX IF NOT EXISTS alert_time ON alerts (stamp_ns)',
)
POSITION_COLUMNS = (('px', '{real}'), ('py', '{real}'), ('pz', '{real}'),
                    ('position_frame', 'TEXT'), ('position_world', 'INTEGER'))
TYPES = {'sqlite': {'serial': 'INTEGER', 'blob': 'BLOB', 'real': 'REAL'},
         'postgresql': {'serial': 'BIGSERIAL', 'blob': 'BYTEA', 'real': 'DOUBLE PRECISION'}}
#: Two-argument min/max of each dialect (SQLite's scalar min/max; PostgreSQL LEAST/GREATEST).
LEAST = {'sqlite': 'MIN', 'postgresql': 'LEAST'}
GREATEST = {'sqlite': 'MAX', 'postgresql': 'GREATEST'}


class MemoryDbError(MrMllmError):
    pass


def is_postgres_url(url: str) -> bool:
    return url.startswith(('postgresql://', 'postgres://'))


def redact(url: str) -> str:
    """The URL without its password (for logs and errors)."""
    if '@' in url and '://' in url:
        scheme, rest = url.split('://', 1)
        cred, host = rest.rsplit('@', 1)
        return f'{scheme}://{cred.split(":", 1)[0]}:***@{host}'
    return url


class Database:
    """One connection to the memory, SQLite file or PostgreSQL URL."""

    def __init__(self, url: str, *, create: bool = True, busy_timeout_s: float = 5.0):
        self.url = str(url)
        self.dialect = 'postgresql' if is_postgres_url(self.url) else 'sqlite'
        try:
            if self.dialect == 'postgresql':
                import psycopg
                self._conn = psycopg.connect(self.url, connect_timeout=10)
            else:
                path = Path(self.url)
                if not create and not path.is_file():
                    raise MemoryDbError(f'no memory database at {path}')
                path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(str(path), timeout=busy_timeout_s,
                                             check_same_thread=False)
                if create:
                    # Only meaningful before the first table: lets retention give pages back.
                    self._conn.execute('PRAGMA auto_vacuum=INCREMENTAL')
                self._conn.execute('PRAGMA journal_mode=WAL')
                self._conn.execute('PRAGMA synchronous=NORMAL')
        except MemoryDbError:
            raise
        except Exception as e:  # sqlite3.Error, psycopg.Error, OSError
            raise MemoryDbError(f'cannot open the memory database {redact(self.url)}: '
                                f'{type(e).__name__}: {e}') from e
        self.lock = threading.Lock()
        if create:
            types = TYPES[self.dialect]
            for stmt in SCHEMA:
                self.execute(stmt.format(**types))
            self._add_position_columns(types)
            self.commit()

    def _add_position_columns(self, types: dict) -> None:
        """A memory written before observations had positions gains the (empty) columns,
        so old files keep working."""
        if self.dialect == 'postgresql':
            have = {r[0] for r in self._conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = "
                "'observations'").fetchall()}
        else:
            have = {r[1] for r in self._conn.execute('PRAGMA table_info(observations)')}
        for column, kind in POSITION_COLUMNS:
            if column not in have:
                self.execute(f'ALTER TABLE observations ADD COLUMN {column} '
                             f'{kind.format(**types)}')

    def _sql(self, sql: str) -> str:
        return sql.replace('?', '%s') if self.dialect == 'postgresql' else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._conn.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        if self.dialect == 'postgresql':
            with self._conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self._conn.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self.lock:
            cur = self._conn.execute(self._sql(sql), tuple(params))
            rows = cur.fetchall()
            if self.dialect == 'postgresql':
                self._conn.commit()  # end the read transaction: see the writer's next batch
            return rows

    def insert_returning_id(self, sql: str, params: Sequence[Any]) -> int:
        cur = self._conn.execute(self._sql(sql + ' RETURNING id'), tuple(params))
        return int(cur.fetchone()[0])

    def commit(self) -> None:
        self._conn.commit()

    def rollback(self) -> None:
        self._conn.rollback()

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # closing a broken connection: nothing left to do
            pass

    def size_bytes(self) -> int:
        """Bytes the memory's data take (SQLite: used pages; PostgreSQL: tables+indexes)."""
        if self.dialect == 'postgresql':
            return int(self.query(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "WHERE c.relname IN ('observations', 'tracks', 'watched', 'descriptions', "
                "'alerts', 'runs') AND c.relkind = 'r'")[0][0])
        pages, free, size = (self.query(f'PRAGMA {p}')[0][0]
                             for p in ('page_count', 'freelist_count', 'page_size'))
        return (pages - free) * size

    def drop_all(self) -> None:
        """Remove every table (tests and benchmarks on a shared PostgreSQL)."""
        for table in ('observations', 'tracks', 'watched', 'descriptions', 'alerts', 'runs'):
            self.execute(f'DROP TABLE IF EXISTS {table}')
        self.commit()


def start_run(db: Database, label: str) -> int:
    run = db.insert_returning_id('INSERT INTO runs (started_ns, label) VALUES (?, ?)',
                                 (time.time_ns(), label))
    db.commit()
    return run


def enforce_retention(db: Database, max_age_s: float, max_bytes: int) -> int:
    """Delete what is older than `max_age_s` before the newest observation (0 = keep),
    then the oldest tenth while the data are over `max_bytes` (0 = no limit). Returns
    observations deleted."""
    deleted = 0
    newest = db.query('SELECT MAX(stamp_ns) FROM observations')[0][0]
    if newest is None:
        return 0
    tables = ('observations', 'descriptions', 'alerts')
    with db.lock:
        if max_age_s > 0:
            cutoff = int(newest - max_age_s * 1e9)
            deleted += _delete_before(db, tables, cutoff)
            db.commit()
    for _ in range(20):  # bounded: each round removes a tenth of what is left
        if max_bytes <= 0 or db.size_bytes() <= max_bytes:
            break
        rows = db.query('SELECT COUNT(*), MIN(stamp_ns), MAX(stamp_ns) FROM observations')[0]
        if not rows[0]:
            break
        cutoff = int(rows[1] + (rows[2] - rows[1]) / 10) + 1
        with db.lock:
            deleted += _delete_before(db, tables, cutoff)
            db.commit()
            if db.dialect == 'sqlite':
                db.execute('PRAGMA incremental_vacuum')
    return deleted


def _delete_before(db: Database, tables: Sequence[str], cutoff: int) -> int:
    count = db._conn.execute(db._sql('SELECT COUNT(*) FROM observations WHERE stamp_ns < ?'),
                             (cutoff,)).fetchone()[0]
    for table in tables:
        db.execute(f'DELETE FROM {table} WHERE stamp_ns < ?', (cutoff,))
    db.execute('DELETE FROM tracks WHERE last_ns < ?', (cutoff,))
    db.execute(f'UPDATE tracks SET first_ns = {GREATEST[db.dialect]}(first_ns, ?)', (cutoff,))
    db.execute('DELETE FROM watched WHERE end_ns < ?', (cutoff,))
    db.execute(f'UPDATE watched SET start_ns = {GREATEST[db.dialect]}(start_ns, ?)', (cutoff,))
    return int(count)


def file_path(url: str) -> str | None:
    """The SQLite file of `url`, None for PostgreSQL."""
    return None if is_postgres_url(url) else os.fspath(url)
