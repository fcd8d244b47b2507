"""Scene memory: "where and when did you last see X?", answered from stored detections,
descriptions and alerts, with the evidence.

    memory = SceneMemory.open(config.memory)          # SQLite file or PostgreSQL URL
    memory.record_detections(ds, camera='front')      # O(1): queued for the writer thread
    memory.ask('when did you last see a tie?')        # -> MemoryAnswer (kind, text, evidence)
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..config import MemoryConfig
from ..types import Alert, DetectionSet, SceneDescription
from .parse import KINDS, Query, parse_question
from .question_words import Embedder, Vocabulary
from .questions import answer, fmt_span, fmt_time
from .records import (
    AlertRecord,
    DescriptionRecord,
    Evidence,
    FrameSeen,
    MemoryAnswer,
    Observation,
    alert_record,
    description_record,
    observations_of,
)
from .store import Database, MemoryDbError, is_postgres_url, redact
from .writer import MemoryWriter

__all__ = ['KINDS', 'AlertRecord', 'Database', 'DescriptionRecord', 'Evidence', 'FrameSeen',
           'MemoryAnswer', 'MemoryDbError', 'Observation', 'Query', 'SceneMemory',
           'fmt_span', 'fmt_time', 'resolve_url']


def resolve_url(url: str) -> str:
    """A PostgreSQL URL as is; a relative SQLite path in $ROS_HOME (default ~/.ros)."""
    if is_postgres_url(url):
        return url
    p = Path(os.path.expanduser(url))
    if not p.is_absolute():
        p = Path(os.environ.get('ROS_HOME') or Path.home() / '.ros') / p
    return str(p)


class SceneMemory:
    """A writer (optional: read-only users have none) and a query connection."""

    def __init__(self, url: str, *, writer: MemoryWriter | None = None,
                 embeddings: bool = True, create: bool = True):
        self.url = url
        self.writer = writer
        self.embedder = Embedder() if embeddings else None
        self._db = Database(url, create=create)

    @classmethod
    def open(cls, config: MemoryConfig, *, url: str | None = None, write: bool = True,
             run_label: str = '') -> 'SceneMemory':
        url = url or resolve_url(config.url)
        embedder = Embedder() if config.embeddings else None
        writer = MemoryWriter(
            url, batch_size=config.batch_size, flush_interval_s=config.flush_interval_s,
            queue_size=config.queue_size, watch_gap_s=config.watch_gap_s,
            retention_max_age_s=config.retention_max_age_s,
            retention_max_bytes=int(config.retention_max_mb * 1e6), run_label=run_label,
            embed=embedder) if write else None
        memory = cls(url, writer=writer, embeddings=False, create=write)
        memory.embedder = embedder
        return memory

    # ---------------------------------------------------------------- writing (O(1))
    def record_detections(self, ds: DetectionSet, camera: str,
                          thumbnails: dict[int, str] | None = None, to_world=None,
                          world_frame: str = '') -> None:
        """`thumbnails`: detection index -> thumbnail path, for those that have one;
        `to_world`, `world_frame`: the camera's pose in the odometry frame at the frame's
        stamp (positions are stored there; None = in the camera's optical frame)."""
        self.writer.put(FrameSeen(int(ds.stamp_ns), camera))
        obs = observations_of(ds, camera, to_world, world_frame)
        if thumbnails:
            obs = [dataclasses.replace(o, thumbnail=thumbnails.get(i, ''))
                   for i, o in enumerate(obs)]
        self.writer.put_many(obs)

    def record_description(self, sd: SceneDescription, camera: str) -> None:
        self.writer.put(description_record(sd, camera))

    def record_alert(self, alert: Alert, camera: str) -> None:
        self.writer.put(alert_record(alert, camera))

    def record(self, *records, block: bool = False) -> None:
        """Records made elsewhere (Observation, FrameSeen, DescriptionRecord, AlertRecord)."""
        self.writer.put_many(records, block)

    def flush(self, timeout_s: float = 10.0) -> bool:
        return self.writer.flush(timeout_s) if self.writer is not None else True

    # -------------------------------------------------------------------- questions
    def classes(self) -> list[str]:
        return [r[0] for r in self._db.query(  # tracks: ~60x smaller than observations
            'SELECT DISTINCT class_name FROM tracks ORDER BY class_name')]

    def parse(self, question: str, camera: str = '') -> Query:
        reference = self._db.query('SELECT MAX(end_ns) FROM watched')[0][0] or 0
        return parse_question(question, Vocabulary(self.classes(), self.embedder),
                              int(reference), camera)

    def ask(self, question: str, camera: str = '') -> MemoryAnswer:
        q = self.parse(question, camera)
        result = answer(self._db, q, self.embedder)
        if q.mapped:
            word, cls, sim = q.mapped[0]
            result = MemoryAnswer(result.kind, f'(Reading "{word}" as {cls}, similarity '
                                  f'{sim:.2f}.) {result.answer}', result.evidence,
                                  result.watched_from_ns, result.watched_to_ns,
                                  facts=result.facts)
        return result

    def query(self, q: Query) -> MemoryAnswer:
        return answer(self._db, q, self.embedder)

    def tracks(self, limit: int = 60) -> list[tuple]:
        """(camera, class, track id, first ns, last ns, observations) of the longest
        tracks, longest first."""
        return self._db.query(
            'SELECT camera, class_name, track_id, MIN(stamp_ns), MAX(stamp_ns), COUNT(*) '
            'FROM observations WHERE track_id >= 0 GROUP BY run, camera, class_name, '
            'track_id ORDER BY MAX(stamp_ns) - MIN(stamp_ns) DESC, MIN(stamp_ns), camera, '
            f'track_id LIMIT {int(limit)}')

    def summary(self) -> dict:
        """What `mr-mllm memory list` shows: per class, tracks, observations, first and last
        time; per camera, the watched span; counts of descriptions and alerts."""
        db = self._db
        classes = [{'class': c, 'tracks': int(t), 'observations': int(n), 'first_ns': int(a),
                    'last_ns': int(b)} for c, t, n, a, b in db.query(
            'SELECT class_name, COUNT(DISTINCT CASE WHEN track_id >= 0 THEN '
            "CAST(run AS TEXT) || '/' || camera || '/' || CAST(track_id AS TEXT) END), "
            'COUNT(*), MIN(stamp_ns), MAX(stamp_ns) FROM observations GROUP BY class_name '
            'ORDER BY class_name')]
        cameras = [{'camera': c, 'from_ns': int(a), 'to_ns': int(b), 'frames': int(f)}
                   for c, a, b, f in db.query(
                       'SELECT camera, MIN(start_ns), MAX(end_ns), SUM(frames) FROM watched '
                       'GROUP BY camera ORDER BY camera')]
        counts = {t: int(db.query(f'SELECT COUNT(*) FROM {t}')[0][0])
                  for t in ('observations', 'descriptions', 'alerts')}
        return {'url': redact(self.url), 'classes': classes, 'cameras': cameras, **counts,
                'bytes': db.size_bytes()}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self._db.close()
