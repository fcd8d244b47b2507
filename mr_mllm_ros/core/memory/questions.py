"""Answers from the store: each question kind is a bounded SQL query (indexed; at most
MAX_ROWS groups read), and each answer carries the observations it rests on (stamp,
camera, track id, class, box, thumbnail) and the span the memory has watched. The
sentence is made from those facts only."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np

from .parse import Query
from .places import near_answer, place_facts, place_words
from .records import Evidence, MemoryAnswer
from .store import Database

MAX_ROWS = 1000      # groups (tracks) read by one question at most
MAX_EVIDENCE = 10    # observations returned as evidence at most
MAX_DESCRIPTIONS = 2000
# An observation and its thumbnail: its own, else its track's newest (obs_track index).
_OBS = ('o.stamp_ns, o.camera, o.track_id, o.class_name, o.score, o.x1, o.y1, o.x2, o.y2, '
        'COALESCE(o.thumbnail, CASE WHEN o.track_id >= 0 THEN (SELECT t.thumbnail FROM '
        'observations t WHERE t.run = o.run AND t.camera = o.camera AND t.track_id = '
        'o.track_id AND t.thumbnail IS NOT NULL ORDER BY t.stamp_ns DESC LIMIT 1) END, \'\'), '
        'o.px, o.py, o.pz, o.position_frame, o.position_world')


def fmt_time(ns: int) -> str:
    t = dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc)
    return t.strftime('%Y-%m-%d %H:%M:%S.') + f'{t.microsecond // 1000:03d} UTC'


def fmt_span(seconds: float) -> str:
    if seconds < 60:
        return f'{seconds:.1f} s'
    if seconds < 3600:
        return f'{int(seconds // 60)} min {seconds % 60:.0f} s'
    return f'{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min'


def _a(name: str) -> str:
    return ('an ' if name[:1] in 'aeiou' else 'a ') + name


def _evidence(row) -> Evidence:
    position = None if row[10] is None else tuple(float(v) for v in row[10:13])
    return Evidence(int(row[0]), row[1], int(row[2]), row[3], float(row[4]),
                    tuple(float(v) for v in row[5:9]), row[9] or '', position,
                    row[13] or '', bool(row[14]))


def _where(q: Query, cls: str | None = None) -> tuple[str, list]:
    conds, params = [], []
    if cls is not None:
        conds.append('o.class_name = ?')
        params.append(cls)
    if q.camera:
        conds.append('o.camera = ?')
        params.append(q.camera)
    if q.t0_ns is not None:
        conds.append('o.stamp_ns >= ?')
        params.append(q.t0_ns)
    if q.t1_ns is not None:
        conds.append('o.stamp_ns <= ?')
        params.append(q.t1_ns)
    if q.region is not None:
        x1, y1, x2, y2 = q.region
        conds.append('o.x1 < ? * o.image_w AND o.x2 > ? * o.image_w AND '
                     'o.y1 < ? * o.image_h AND o.y2 > ? * o.image_h')
        params += [x2, x1, y2, y1]
    return (' WHERE ' + ' AND '.join(conds)) if conds else '', params


class Watched:
    """What the memory watched: first/last frame time, seconds covered, frames, cameras."""

    def __init__(self, db: Database, camera: str = ''):
        where, params = (' WHERE camera = ?', [camera]) if camera else ('', [])
        row = db.query('SELECT MIN(start_ns), MAX(end_ns), SUM(end_ns - start_ns), '
                       f'SUM(frames), COUNT(DISTINCT camera) FROM watched{where}', params)[0]
        self.from_ns = int(row[0] or 0)
        self.to_ns = int(row[1] or 0)
        self.covered_s = float(row[2] or 0) / 1e9
        self.frames = int(row[3] or 0)
        self.cameras = int(row[4] or 0)

    def sentence(self, camera: str) -> str:
        if not self.frames:
            return f'I have not watched {"camera " + camera if camera else "any camera"} yet.'
        where = f'camera {camera}' if camera else \
            f'{self.cameras} camera{"s" if self.cameras != 1 else ""}'
        return (f'I watched {where} from {fmt_time(self.from_ns)} to {fmt_time(self.to_ns)} '
                f'({self.frames} frames over {fmt_span(self.covered_s)}).')

    def facts(self) -> dict:
        return {'watched_from_ns': self.from_ns, 'watched_to_ns': self.to_ns,
                'watched_s': round(self.covered_s, 3), 'frames': self.frames}


def answer(db: Database, q: Query, embed=None) -> MemoryAnswer:
    watched = Watched(db, q.camera)
    handler = {'last_seen': _seen, 'first_seen': _seen, 'never_observed': _seen,
               'duration': _duration,
               'count_tracks': _count, 'region': _region, 'near': near_answer,
               'description': _description}[q.kind]
    result = handler(db, q, watched, embed)
    return MemoryAnswer(result[0], result[1], tuple(result[2]), watched.from_ns,
                        watched.to_ns, facts={**result[3], **watched.facts(),
                                              'classes': list(q.classes)})


def _window_words(q: Query) -> str:
    if q.t0_ns is not None and q.t1_ns is not None:
        return f' between {fmt_time(q.t0_ns)} and {fmt_time(q.t1_ns)}'
    if q.t0_ns is not None:
        return f' since {fmt_time(q.t0_ns)}'
    if q.t1_ns is not None:
        return f' before {fmt_time(q.t1_ns)}'
    return ''


def _never(q: Query, watched: Watched, cls: str):
    where = f' on camera {q.camera}' if q.camera else ''
    return ('never_observed', f'I have never observed {_a(cls)}{where}{_window_words(q)}. '
            + watched.sentence(q.camera), [], {'class': cls, 'observed': False})


def _seen(db: Database, q: Query, watched: Watched, embed):
    cls = q.classes[0]
    kind = 'first_seen' if q.kind == 'first_seen' else 'last_seen'
    where, params = _where(q, cls)
    order = 'DESC' if kind == 'last_seen' else 'ASC'
    # One direction for every key: the (class, stamp, camera, track) index gives the row.
    rows = db.query(f'SELECT {_OBS} FROM observations o{where} ORDER BY o.stamp_ns {order}, '
                    f'o.camera {order}, o.track_id {order} LIMIT 1', params)
    if not rows:
        return _never(q, watched, cls)
    ev = _evidence(rows[0])
    box = ', '.join(f'{v:.0f}' for v in ev.box)
    track = f'track {ev.track_id}' if ev.track_id >= 0 else 'untracked'
    when = 'last' if kind == 'last_seen' else 'first'
    text = (f'I {when} saw {_a(cls)} at {fmt_time(ev.stamp_ns)} on camera {ev.camera} '
            f'({track}, score {ev.score:.2f}, box [{box}] px){place_words(ev)}.')
    if kind == 'last_seen' and watched.to_ns > ev.stamp_ns:
        text += (f' The camera{"s" if watched.cameras > 1 else ""} kept watching for '
                 f'{fmt_span((watched.to_ns - ev.stamp_ns) / 1e9)} after that '
                 f'(until {fmt_time(watched.to_ns)}) without seeing one.')
    return kind, text, [ev], {'class': cls, 'observed': True, 'stamp_ns': ev.stamp_ns,
                              'camera': ev.camera, 'track_id': ev.track_id,
                              **place_facts(ev)}


def _tracks(db: Database, q: Query, cls: str | None, tracked_only: bool = True):
    """(class, run, camera, track, first ns, last ns, observations) per track, first seen
    first. Without a region: the tracks table (spans clipped to the window); with one:
    grouped from the observations in the window."""
    if q.region is None and cls is not None:
        conds, params = ['class_name = ?'], [cls]
        for cond, v in (('camera = ?', q.camera or None), ('last_ns >= ?', q.t0_ns),
                        ('first_ns <= ?', q.t1_ns)):
            if v is not None:
                conds.append(cond)
                params.append(v)
        rows = db.query('SELECT class_name, run, camera, track_id, first_ns, last_ns, '
                        f'observations FROM tracks WHERE {" AND ".join(conds)} ORDER BY '
                        f'first_ns, camera, track_id LIMIT {MAX_ROWS}', params)
        lo = q.t0_ns if q.t0_ns is not None else -2**63
        hi = q.t1_ns if q.t1_ns is not None else 2**63 - 1
        return [(c, r, cam, t, max(a, lo), min(b, hi), n) for c, r, cam, t, a, b, n in rows]
    where, params = _where(q, cls)
    if tracked_only:
        where += (' AND ' if where else ' WHERE ') + 'o.track_id >= 0'
    return db.query(
        'SELECT o.class_name, o.run, o.camera, o.track_id, MIN(o.stamp_ns), '
        f'MAX(o.stamp_ns), COUNT(*) FROM observations o{where} GROUP BY o.class_name, '
        'o.run, o.camera, o.track_id ORDER BY MIN(o.stamp_ns), o.camera, o.track_id '
        f'LIMIT {MAX_ROWS}', params)


def _track_evidence(db: Database, tracks, last: bool = True) -> list[Evidence]:
    out = []
    for cls, run, camera, track_id, first, latest, _ in tracks[:MAX_EVIDENCE]:
        # The track's last (first) observation inside the window.
        rows = db.query(f'SELECT {_OBS} FROM observations o WHERE o.run = ? AND '
                        'o.camera = ? AND o.track_id = ? AND o.class_name = ? AND '
                        'o.stamp_ns >= ? AND o.stamp_ns <= ? ORDER BY o.stamp_ns '
                        f'{"DESC" if last else "ASC"} LIMIT 1',
                        (run, camera, track_id, cls, first, latest))
        out += [_evidence(r) for r in rows]
    return out


def _union_s(intervals) -> float:
    total, end = 0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total / 1e9


def _no_tracks(db: Database, q: Query, watched: Watched, cls: str, kind: str):
    """Never observed - or observed without track ids (tracker.kind none), which
    cannot tell objects apart: said so, with the last sighting as evidence."""
    seen = _seen(db, q, watched, None)
    if seen[0] == 'never_observed':
        return seen
    text = (f'I saw {_a(cls)}{_window_words(q)}, but without track ids (is tracker.kind '
            f'none?), so I cannot tell objects apart or how long each stayed. {seen[1]}')
    return kind, text, seen[2], {**seen[3], 'tracks': 0}


def _duration(db: Database, q: Query, watched: Watched, embed):
    cls = q.classes[0]
    tracks = _tracks(db, q, cls)
    if not tracks:
        return _no_tracks(db, q, watched, cls, 'duration')
    spans = [(t[4], t[5]) for t in tracks]
    total = _union_s(spans)
    longest = max(tracks, key=lambda t: (t[5] - t[4], -t[4]))
    text = (f'{_a(cls).capitalize()} was present for {fmt_span(total)} in all'
            f'{_window_words(q)}: {len(tracks)} track{"s" if len(tracks) != 1 else ""}, '
            f'from {fmt_time(min(s[0] for s in spans))} to {fmt_time(max(s[1] for s in spans))}; '
            f'the longest, track {longest[3]} on camera {longest[2]}, for '
            f'{fmt_span((longest[5] - longest[4]) / 1e9)} ({fmt_time(longest[4])} to '
            f'{fmt_time(longest[5])}).')
    ordered = sorted(tracks, key=lambda t: (-(t[5] - t[4]), t[4]))
    return 'duration', text, _track_evidence(db, ordered), {
        'class': cls, 'present_s': round(total, 3), 'tracks': len(tracks)}


def _count(db: Database, q: Query, watched: Watched, embed):
    cls = q.classes[0]
    tracks = _tracks(db, q, cls)
    if not tracks:
        return _no_tracks(db, q, watched, cls, 'count_tracks')
    ids = ', '.join(f'{t[3]}' + (f' ({t[2]})' if not q.camera else '') for t in tracks[:20])
    more = f' and {len(tracks) - 20} more' if len(tracks) > 20 else ''
    plural = {'person': 'people'}.get(cls, cls if cls.endswith('s') else f'{cls}s')
    text = (f'I saw {len(tracks)} distinct {cls if len(tracks) == 1 else plural}'
            f'{_window_words(q)} (track ids {ids}{more}).')
    return 'count_tracks', text, _track_evidence(db, tracks, last=False), {
        'class': cls, 'tracks': len(tracks),
        'track_ids': [[t[2], int(t[3])] for t in tracks]}


def _region(db: Database, q: Query, watched: Watched, embed):
    groups = []
    for cls in (q.classes or (None,)):
        groups += _tracks(db, q, cls, tracked_only=False)
    groups.sort(key=lambda t: (t[4], t[2], t[3]))
    where = f'the {q.region_name} region' if q.region_name and not q.region_name.startswith('[') \
        else f'region {q.region_name}'
    if not groups:
        text = f'Nothing was detected in {where}{_window_words(q)}. ' + watched.sentence(q.camera)
        return 'region', text, [], {'objects': {}}
    by_class: dict[str, list] = {}
    for g in groups:
        by_class.setdefault(g[0], []).append(g[3])
    parts = '; '.join(f'{c} (track{"s" if len(ids) > 1 else ""} '
                      f'{", ".join(str(i) for i in ids[:10])}'
                      f'{" ..." if len(ids) > 10 else ""})' for c, ids in sorted(by_class.items()))
    text = f'In {where}{_window_words(q)}: {parts}.'
    return 'region', text, _track_evidence(db, groups), {
        'objects': {c: [int(i) for i in ids] for c, ids in sorted(by_class.items())}}


def _description(db: Database, q: Query, watched: Watched, embed):
    conds, params = [], []
    for col, op, v in (('camera', '=', q.camera or None), ('stamp_ns', '>=', q.t0_ns),
                       ('stamp_ns', '<=', q.t1_ns)):
        if v is not None:
            conds.append(f'{col} {op} ?')
            params.append(v)
    where = (' WHERE ' + ' AND '.join(conds)) if conds else ''
    rows = db.query('SELECT stamp_ns, camera, text, grounding, embedding FROM descriptions'
                    f'{where} ORDER BY stamp_ns DESC LIMIT {MAX_DESCRIPTIONS}', params)
    if not rows:
        return 'description', ('No object class in the question, and no description to '
                               'search. ' + watched.sentence(q.camera)), [], {'matches': 0}
    scores = _similarities(q.text, rows, embed)
    best = max(range(len(rows)), key=lambda i: (scores[i], rows[i][0]))
    stamp, camera, text, grounding = rows[best][:4]
    evidence = [Evidence(int(stamp), camera, int(o['track_id']), o['class_name'],
                         float(o['score']), tuple(o['box']))
                for p in json.loads(grounding) for o in p['objects']][:MAX_EVIDENCE]
    answer = (f'The closest description (similarity {scores[best]:.2f}) is from '
              f'{fmt_time(int(stamp))} on camera {camera}: "{text}"')
    return 'description', answer, evidence, {'stamp_ns': int(stamp), 'camera': camera,
                                             'similarity': round(float(scores[best]), 3)}


def _similarities(question: str, rows, embed) -> list[float]:
    """Cosine between the question and each description (stored embeddings); word
    overlap (Jaccard) when there is no embedder or a description has none."""
    qv = embed([question])[0] if embed is not None else None
    words = set(question.lower().split())
    out = []
    for row in rows:
        if qv is not None and row[4] is not None:
            out.append(float(np.frombuffer(bytes(row[4]), np.float32) @ qv))
        else:
            other = set(row[2].lower().split())
            out.append(len(words & other) / max(1, len(words | other)))
    return out
