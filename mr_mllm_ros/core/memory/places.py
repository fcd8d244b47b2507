"""A memory of places: where things were, in metres. Positions come with the observations
(core.geometry): in the odometry frame when memory_node had a pose source (odometry +
the camera's mounting), else in the camera's own optical frame at that moment, which
the answers say. "Where did you last see the cup?" gets the coordinates and the frame;
"what was within 2 m of the cup?" is answered from the observations near the cup's last
position (or near a point given in metres), in the same frame."""

from __future__ import annotations

import math

from ..geometry.words import distance_words, metres
from .parse import Query
from .records import Evidence
from .store import Database

MAX_NEAR_ROWS = 5000  # observations read by one 'near' question at most


def _xyz(p) -> str:
    return '(' + ', '.join(f'{c:.2f}' for c in p) + ') m'


def place_words(ev: Evidence) -> str:
    """' at (1.20, 0.40, 0.75) m in the odom frame', or in the camera's frame with
    distance words and that said; '' without a position."""
    if ev.position is None:
        return ''
    if ev.position_world:
        return f', at {_xyz(ev.position)} in the {ev.position_frame} frame'
    return (f', {distance_words(ev.position)} of the camera, at {_xyz(ev.position)} in its '
            f'optical frame {ev.position_frame} (no pose source: camera-relative, not a '
            'place in the world)')


def place_facts(ev: Evidence) -> dict:
    if ev.position is None:
        return {}
    return {'position_m': [round(c, 3) for c in ev.position], 'frame': ev.position_frame,
            'world_frame': ev.position_world}


def _anchor(db: Database, q: Query, obs_sql: str, where_sql: str, params: list):
    """(point, frame, evidence or None) the question measures from, or None."""
    if q.anchor_class:
        rows = db.query(f'SELECT {obs_sql} FROM observations o{where_sql}'
                        f'{" AND" if where_sql else " WHERE"} o.class_name = ? AND '
                        'o.px IS NOT NULL ORDER BY o.stamp_ns DESC LIMIT 1',
                        [*params, q.anchor_class])
        if not rows:
            return None
        from .questions import _evidence
        ev = _evidence(rows[0])
        return ev.position, ev.position_frame, ev
    frame = db.query('SELECT o.position_frame FROM observations o WHERE o.px IS NOT NULL '
                     'ORDER BY o.position_world DESC, o.stamp_ns DESC LIMIT 1')
    return (q.anchor_point, frame[0][0], None) if frame else None


def near_answer(db: Database, q: Query, watched, embed):
    """What was within q.radius_m of an object class or a point (kind 'near')."""
    from .questions import _OBS, _evidence, _where, _window_words, fmt_time
    where_sql, params = _where(q)
    r = float(q.radius_m)
    anchor = _anchor(db, q, _OBS, where_sql, params)
    what = f'the {q.anchor_class}' if q.anchor_class else _xyz(q.anchor_point or ())
    if anchor is None:
        why = ('I have no position of a ' + q.anchor_class + _window_words(q)
               + ' (never seen, or seen without depth)') if q.anchor_class \
            else 'I have no positions at all (no depth)'
        return 'near', f'{why}. ' + watched.sentence(q.camera), [], {'objects': {}}
    point, frame, anchor_ev = anchor
    flat = len(point) == 2  # (x, y): distance on the floor plane
    lo = [c - r for c in point]
    hi = [c + r for c in point]
    conds = ['o.position_frame = ?', 'o.px BETWEEN ? AND ?', 'o.py BETWEEN ? AND ?']
    args = [frame, lo[0], hi[0], lo[1], hi[1]]
    if not flat:
        conds.append('o.pz BETWEEN ? AND ?')
        args += [lo[2], hi[2]]
    if q.classes:
        conds.append('o.class_name IN (' + ','.join('?' * len(q.classes)) + ')')
        args += list(q.classes)
    sql = (f'SELECT {_OBS}, o.run FROM observations o{where_sql}'
           f'{" AND " if where_sql else " WHERE "}' + ' AND '.join(conds)
           + f' ORDER BY o.stamp_ns DESC LIMIT {MAX_NEAR_ROWS}')
    groups: dict[tuple, tuple] = {}  # (class, run, camera, track) -> (distance, evidence)
    for row in db.query(sql, [*params, *args]):
        ev = _evidence(row)
        p = ev.position[:2] if flat else ev.position
        dist = math.dist(p, point)
        key = (ev.class_name, row[15], ev.camera, ev.track_id if ev.track_id >= 0 else ev.stamp_ns)
        if dist > r or (anchor_ev is not None and ev.class_name == anchor_ev.class_name
                        and ev.camera == anchor_ev.camera and ev.track_id == anchor_ev.track_id
                        and (ev.track_id >= 0 or ev.stamp_ns == anchor_ev.stamp_ns)):
            continue
        if key not in groups or dist < groups[key][0]:
            groups[key] = (dist, groups[key][1] if key in groups else ev)
    frame_words = frame if anchor_ev is None or anchor_ev.position_world \
        else f'{frame} (the camera\'s frame: no pose source)'
    at = f'{what} (at {_xyz(point)} in {frame_words}' + (
        f', last seen {fmt_time(anchor_ev.stamp_ns)})' if anchor_ev else ')')
    if not groups:
        text = f'Nothing was within {metres(r)} of {at}{_window_words(q)}.'
        return 'near', text, [anchor_ev] if anchor_ev else [], {'objects': {}}
    ordered = sorted(groups.items(), key=lambda kv: kv[1][0])
    parts = '; '.join(
        f'{c} ({"track " + str(t) if ev.track_id >= 0 else "untracked"}, '
        f'{metres(d)} from it, last {fmt_time(ev.stamp_ns)})'
        for (c, _, _, t), (d, ev) in ordered[:10])
    more = f'; and {len(ordered) - 10} more' if len(ordered) > 10 else ''
    text = f'Within {metres(r)} of {at}{_window_words(q)}: {parts}{more}.'
    objects: dict[str, list] = {}
    for (c, _, _, t), (d, _) in ordered:
        objects.setdefault(c, []).append({'track_id': int(t), 'distance_m': round(d, 3)})
    evidence = ([anchor_ev] if anchor_ev else []) + [ev for _, (_, ev) in ordered[:9]]
    return 'near', text, evidence, {'objects': objects, 'radius_m': r,
                                    'anchor': list(point), 'frame': frame}
