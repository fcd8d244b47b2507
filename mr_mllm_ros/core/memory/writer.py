"""Batched writes off the inference thread: `put` is O(1) and never blocks (a full queue
drops the item and counts it); one writer thread commits a batch per transaction when
`batch_size` items are waiting or `flush_interval_s` has passed. A killed process loses
only what was not committed yet - the open batch."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .records import (AlertRecord, DescriptionRecord, FrameSeen, Observation, to_json)
from .store import GREATEST, LEAST, Database, enforce_retention, start_run

log = logging.getLogger(__name__)

_STOP = object()


@dataclass(frozen=True)
class NewRun:
    """Queued between records: what follows belongs to a new run (track ids restart, e.g.
    another bag of a replay)."""

    label: str


class MemoryWriter:
    def __init__(self, url: str, *, batch_size: int, flush_interval_s: float,
                 queue_size: int, watch_gap_s: float, retention_max_age_s: float = 0.0,
                 retention_max_bytes: int = 0, retention_every_s: float = 60.0,
                 run_label: str = '', embed: Callable[[list[str]], list] | None = None):
        self.url = url
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.watch_gap_ns = int(watch_gap_s * 1e9)
        self.retention = (retention_max_age_s, retention_max_bytes, retention_every_s)
        self._embed = embed
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self.written = 0
        self.batches = 0
        self.last_error = ''
        self._db = Database(url)  # opened here: a bad URL fails the caller at once
        self.run = start_run(self._db, run_label)
        self._watch: dict[str, list[int]] = {}  # camera -> [start_ns, end_ns, frames]
        self._thread = threading.Thread(target=self._loop, name='memory-writer', daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producer side
    def put(self, item, block: bool = False) -> bool:
        """Queue one record. Live callers never block (a full queue drops and counts);
        offline builders (replay) pass block=True to wait for room instead."""
        try:
            self._queue.put(item, block=block)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def put_many(self, items, block: bool = False) -> None:
        for item in items:
            self.put(item, block)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything put so far is committed (bounded)."""
        done = threading.Event()
        deadline = time.monotonic() + timeout_s
        try:
            self._queue.put(done, timeout=timeout_s)
        except queue.Full:
            return False
        return done.wait(max(0.0, deadline - time.monotonic()))

    def close(self, timeout_s: float = 10.0) -> None:
        if self._thread.is_alive():
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    self._queue.put(_STOP, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join(max(0.0, deadline - time.monotonic()))
        self._db.close()

    # -------------------------------------------------------------------- writer side
    def _loop(self) -> None:
        last_retention = time.monotonic()
        stop = False
        while not stop:
            batch, events, new_run = [], [], None
            deadline = time.monotonic() + self.flush_interval_s
            while len(batch) < self.batch_size:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                if isinstance(item, threading.Event):
                    events.append(item)
                    break
                if isinstance(item, NewRun):
                    new_run = item
                    break
                batch.append(item)
            if batch:
                self._commit(batch)
            if new_run is not None:
                try:
                    self.run = start_run(self._db, new_run.label)
                except Exception as e:
                    self.last_error = f'{type(e).__name__}: {e}'
                    log.error('memory: cannot start a new run: %s', e)
                self._watch.clear()
            for e in events:
                e.set()
            max_age, max_bytes, every = self.retention
            if (max_age > 0 or max_bytes > 0) and time.monotonic() - last_retention > every:
                last_retention = time.monotonic()
                try:
                    enforce_retention(self._db, max_age, max_bytes)
                except Exception as e:  # keep writing even when a cleanup fails
                    self.last_error = f'retention: {e}'
                    log.error('memory retention failed: %s', e)

    def _commit(self, batch: list) -> None:
        obs, frames, descs, alerts = [], [], [], []
        for item in batch:
            if isinstance(item, Observation):
                obs.append(item)
            elif isinstance(item, FrameSeen):
                frames.append(item)
            elif isinstance(item, DescriptionRecord):
                descs.append(item)
            elif isinstance(item, AlertRecord):
                alerts.append(item)
        embeddings = [None] * len(descs)
        if descs and self._embed is not None:
            try:
                embeddings = self._embed([d.text for d in descs])
            except Exception as e:  # e.g. the model package is missing: store the text
                self.last_error = f'embeddings unavailable: {e}'
                log.error('memory: sentence embeddings unavailable (%s); descriptions are '
                          'stored without them', e)
                self._embed = None
        try:
            with self._db.lock:
                self._db.executemany(
                    'INSERT INTO observations VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)',
                    [(o.stamp_ns, o.camera, self.run, o.track_id, o.class_name, o.score,
                      *o.box, o.image_w, o.image_h, o.thumbnail or None,
                      *(o.position if o.position is not None else (None,) * 3),
                      o.position_frame or None, int(o.position_world)) for o in obs])
                self._db.executemany(
                    'INSERT INTO descriptions VALUES (?,?,?,?,?,?)',
                    [(d.stamp_ns, d.camera, d.text, d.mllm_model, to_json(list(d.grounding)),
                      None if e is None else np.asarray(e, np.float32).tobytes())
                     for d, e in zip(descs, embeddings)])
                self._db.executemany(
                    'INSERT INTO alerts VALUES (?,?,?,?,?,?,?)',
                    [(a.stamp_ns, a.camera, a.severity, a.code, a.rule, a.message,
                      to_json(list(a.objects))) for a in alerts])
                lo, hi = LEAST[self._db.dialect], GREATEST[self._db.dialect]
                self._db.executemany(
                    'INSERT INTO tracks VALUES (?,?,?,?,?,?,?) ON CONFLICT (run, camera, '
                    'track_id, class_name) DO UPDATE SET '
                    f'first_ns = {lo}(tracks.first_ns, excluded.first_ns), '
                    f'last_ns = {hi}(tracks.last_ns, excluded.last_ns), '
                    'observations = tracks.observations + excluded.observations',
                    self._track_rows(obs))
                self._db.executemany(
                    'INSERT INTO watched VALUES (?,?,?,?,?) ON CONFLICT (run, camera, '
                    'start_ns) DO UPDATE SET end_ns = excluded.end_ns, '
                    'frames = excluded.frames', self._watch_rows(frames))
                self._db.commit()
            self.written += len(batch)
            self.batches += 1
        except Exception as e:  # the database went away, disk full, ...: report, go on
            self.last_error = f'{type(e).__name__}: {e}'
            log.error('memory batch of %d lost: %s', len(batch), self.last_error)
            try:
                self._db.rollback()
            except Exception:
                pass

    def _track_rows(self, obs: list[Observation]) -> list[tuple]:
        spans: dict[tuple, list[int]] = {}
        for o in obs:
            if o.track_id < 0:
                continue
            s = spans.setdefault((o.camera, o.track_id, o.class_name), [o.stamp_ns, o.stamp_ns, 0])
            s[0], s[1], s[2] = min(s[0], o.stamp_ns), max(s[1], o.stamp_ns), s[2] + 1
        return [(self.run, c, t, k, a, b, n) for (c, t, k), (a, b, n) in sorted(spans.items())]

    def _watch_rows(self, frames: list[FrameSeen]) -> list[tuple]:
        """Extend each camera's open span (a gap over watch_gap_s starts a new one); the
        rows of the spans this batch touched."""
        touched: dict[tuple[str, int], tuple] = {}
        for f in sorted(frames, key=lambda f: f.stamp_ns):
            span = self._watch.get(f.camera)
            if span is None or f.stamp_ns - span[1] > self.watch_gap_ns or f.stamp_ns < span[0]:
                span = self._watch[f.camera] = [f.stamp_ns, f.stamp_ns, 0]
            span[1] = max(span[1], f.stamp_ns)
            span[2] += 1
            touched[(f.camera, span[0])] = (self.run, f.camera, span[0], span[1], span[2])
        return list(touched.values())
