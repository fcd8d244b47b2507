"""Per-frame conditions of the alert rules.

A condition yields a Hit for every key (a track, a class, the camera) whose condition
holds on this frame: the offending detection (or None), a one-line message and the
condition's values (what was measured against which threshold), which become the alert's
rationale and `values`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Iterator, NamedTuple, Sequence

from ..geometry import distance, distance_words, metres
from ..types import Detection, DetectionSet, Frame, Source
from .regions import anchor_point, in_region
from .quality import FrameQuality
from .rules import Rule

APPEARANCE_IOU = 0.3    # untracked fallback: "same object" between frames


class Hit(NamedTuple):
    key: str
    detection: Detection | None
    message: str
    values: dict[str, str]


def _num(x: float) -> str:
    return f'{x:.3g}' if abs(x) < 1000 else f'{x:.0f}'


def object_key(d: Detection) -> str:
    return f'track:{d.track_id}' if d.track_id >= 0 else f'class:{d.class_name}'


def _details(d: Detection) -> str:
    return f'score {d.score:.2f}' + (f', track {d.track_id}' if d.track_id >= 0 else '')


def _object_values(d: Detection) -> dict[str, str]:
    values = {'class': d.class_name, 'score': f'{d.score:.2f}'}
    if d.track_id >= 0:
        values['track_id'] = str(d.track_id)
    return values


#: who rejected a box, as the detector_mllm_disagreement alert says it
#: (core.reasoning.reinforce.Refinement.rejected_by)
LOOKER_REJECTS, MLLM_REJECTS = 'the looker', 'MLLM verification'


@dataclass
class Context:
    frame: Frame | None
    detections: DetectionSet
    rejected: Sequence[Detection]
    now_s: float
    width: int
    height: int
    quality: FrameQuality | None = None
    #: who rejected each of `rejected` (core.reasoning.reinforce); empty = MLLM verification
    rejected_by: tuple[str, ...] = ()


def _hazard(rule: Rule, ctx: Context, _state) -> Iterator[Hit]:
    p = rule.params
    region = p['region_name'] or rule.name
    if ctx.width <= 0 or ctx.height <= 0:
        return
    for d in ctx.detections:
        if d.class_name in p['classes'] and d.score >= p['min_score'] and in_region(
                d.box, ctx.width, ctx.height, p['region'], p['anchor']):
            values = {**_object_values(d), 'min_score': _num(p['min_score']),
                      'region': region, 'anchor': p['anchor']}
            if p['anchor'] != 'any_overlap':
                x, y = anchor_point(d.box, ctx.width, ctx.height, p['anchor'])
                values['anchor_xy'] = f'{x:.2f},{y:.2f}'
            yield Hit(object_key(d), d, f'{d.class_name} in region {region!r} '
                      f'({_details(d)})', values)


def _disagreement(rule: Rule, ctx: Context, _state) -> Iterator[Hit]:
    kinds, min_score = rule.params['kinds'], rule.params['min_score']
    for d in ctx.detections:
        if d.score < min_score:
            continue
        # A box the looker rejected and named (source looker, original class kept) is
        # reported once, as rejected.
        if 'relabelled' in kinds and d.source != Source.LOOKER \
                and d.original_class_name not in (None, d.class_name):
            key = (f'track:{d.track_id}' if d.track_id >= 0
                   else f'class:{d.original_class_name}->{d.class_name}')
            yield Hit(f'relabelled:{key}', d, f'{d.class_name} relabelled by the MLLM, '
                      f'detector said {d.original_class_name!r} ({_details(d)})',
                      {'kind': 'relabelled', **_object_values(d),
                       'detector_class': str(d.original_class_name)})
        if 'missed_by_detector' in kinds and (d.source == Source.MLLM or (
                d.source == Source.LOOKER and d.original_class_name is None)):
            who = 'the looker' if d.source == Source.LOOKER else 'the MLLM'
            yield Hit(f'missed:class:{d.class_name}', d,
                      f'{d.class_name} named by {who} but not found by the detector',
                      {'kind': 'missed_by_detector', **_object_values(d)})
    if 'rejected' in kinds:
        for k, d in enumerate(ctx.rejected):
            if d.score >= min_score:
                who = ctx.rejected_by[k] if k < len(ctx.rejected_by) else MLLM_REJECTS
                yield Hit(f'rejected:{object_key(d)}', d, f'{d.class_name} rejected by {who} '
                          f'({_details(d)})',
                          {'kind': 'rejected', **_object_values(d)})


def _unknown(rule: Rule, ctx: Context, _state) -> Iterator[Hit]:
    p = rule.params
    for d in ctx.detections:
        if d.class_name in p['labels']:
            yield Hit(object_key(d), d, f'{d.class_name} (unidentified object, '
                      f'{_details(d)})', {**_object_values(d), 'label': 'unknown'})
        # A known class at a low score is that class, not an unknown object: the band
        # applies only to the classes listed; verified = the MLLM confirmed it.
        elif (p['min_score'] <= d.score < p['max_score'] and not d.verified
              and d.class_name in p['classes']):
            yield Hit(object_key(d), d, f'{d.class_name} (low confidence, not confirmed by '
                      f'the MLLM, {_details(d)})',
                      {**_object_values(d), 'band': f'{_num(p["min_score"])}..'
                       f'{_num(p["max_score"])}', 'verified': 'false'})


def _person_down(rule: Rule, ctx: Context, _state) -> Iterator[Hit]:
    """A person the looker's posture model sees lying (core.looking.posture); evaluated in
    the reasoning step, where postures are estimated, so the debounce counts steps."""
    p = rule.params
    for d in ctx.detections:
        if d.class_name == 'person' and d.posture == 'lying' and d.score >= p['min_score'] \
                and d.posture_score >= p['min_posture_score']:
            yield Hit(object_key(d), d, f'person lying ({_details(d)}, posture score '
                      f'{d.posture_score:.2f})',
                      {**_object_values(d), 'posture': d.posture,
                       'posture_score': f'{d.posture_score:.2f}',
                       'min_posture_score': _num(p['min_posture_score'])})


class Appearances:
    """Memory of the sudden_close_appearance rule: which objects were seen recently."""

    def __init__(self):
        self.frame_index = 0
        self.last_frame_s: float | None = None
        self.tracks: dict[int, list] = {}  # track id -> [first frame index, last seen s]
        self.recent: deque = deque(maxlen=4096)  # (time, class name, box) of untracked ones
        self.pending: dict[str, list] = {}  # class -> [box, first frame index]


def _sudden(rule: Rule, ctx: Context, mem: Appearances) -> Iterator[Hit]:
    """A large object that was not there in the last memory_s.

    The condition holds during the object's first m frames (m of the debounce), so
    "large in n of its first m frames" confirms it and a one-frame ghost raises nothing.
    With track ids, "new" = a track id not seen within memory_s. Without (fallback): a
    large box of a class that overlaps (IoU >= 0.3) no box of that class seen within
    memory_s, i.e. the class count went up by a large box; it is then followed by IoU.
    The first frame after start (or after a gap > memory_s) is the baseline: nothing in it
    is "sudden"."""
    p, now, idx = rule.params, ctx.now_s, mem.frame_index
    memory_s, area = p['memory_s'], float(max(ctx.width * ctx.height, 1))
    has_past = mem.last_frame_s is not None and 0 <= now - mem.last_frame_s <= memory_s
    mem.frame_index, mem.last_frame_s = idx + 1, now
    recent = [(c, b) for t, c, b in mem.recent if 0 <= now - t <= memory_s]
    for d in ctx.detections:
        if d.score < p['min_score'] or (p['classes'] and d.class_name not in p['classes']):
            continue
        share = d.box.clip(ctx.width, ctx.height).area / area
        close = _close(d, share, p)
        if d.track_id >= 0:
            st = mem.tracks.get(d.track_id)
            if st is None or not 0 <= now - st[1] <= memory_s:
                st = mem.tracks[d.track_id] = [idx if has_past else -math.inf, now]
            st[1] = now
            young = idx - st[0] < rule.m
        else:
            mem.recent.append((now, d.class_name, d.box))
            young = close and _new_untracked(d, rule, idx, mem, recent, has_past)
        if young and close:
            how = f'{metres(distance(d.position))} away' if _in_metres(d, p) \
                else f'{share:.0%} of the image'
            values = {**_object_values(d), 'area_share': f'{share:.3f}',
                      'min_area_share': _num(p['min_area_share']), 'memory_s': _num(memory_s)}
            if _in_metres(d, p):
                values.update(distance_m=f'{distance(d.position):.2f}',
                              max_distance_m=_num(p['max_distance_m']))
            yield Hit(object_key(d), d, f'{d.class_name} appeared close ({how}, '
                      f'{_details(d)})', values)
    # Bounded memory: forget tracks and pending appearances that are gone.
    for tid in [t for t, st in mem.tracks.items() if not 0 <= now - st[1] <= memory_s]:
        del mem.tracks[tid]
    for cls in [c for c, pe in mem.pending.items() if idx - pe[1] >= rule.m]:
        del mem.pending[cls]


def _in_metres(d: Detection, p) -> bool:
    return p['max_distance_m'] > 0 and d.position is not None


def _close(d: Detection, share: float, p) -> bool:
    """Close = within max_distance_m when the detection has a position (depth) and the
    rule sets one, else a box of at least min_area_share of the image."""
    if _in_metres(d, p):
        return distance(d.position) <= p['max_distance_m']
    return share >= p['min_area_share']


def _too_close(rule: Rule, ctx: Context, _state) -> Iterator[Hit]:
    """An object (of `classes`; [] = any) within max_distance_m of the camera. Needs
    positions (aligned depth, camera.rgbd): detections without one never hold."""
    p = rule.params
    for d in ctx.detections:
        if d.position is None or d.score < p['min_score'] \
                or (p['classes'] and d.class_name not in p['classes']):
            continue
        dist = distance(d.position)
        if dist <= p['max_distance_m']:
            yield Hit(object_key(d), d, f'{d.class_name} too close: {distance_words(d.position)}'
                      f' (within {metres(p["max_distance_m"])}, {_details(d)})',
                      {**_object_values(d), 'distance_m': f'{dist:.2f}',
                       'max_distance_m': _num(p['max_distance_m']),
                       'position_m': ','.join(f'{c:.2f}' for c in d.position),
                       'spread_m': f'{d.position_spread:.2f}'})


def _new_untracked(d: Detection, rule: Rule, idx: int, mem: Appearances,
                   recent: list, has_past: bool) -> bool:
    pending = mem.pending.get(d.class_name)
    if pending is not None and d.box.iou(pending[0]) >= APPEARANCE_IOU:
        pending[0] = d.box  # the same appearance, a frame later
        return idx - pending[1] < rule.m
    seen = any(c == d.class_name and d.box.iou(b) >= APPEARANCE_IOU for c, b in recent)
    if seen or not has_past:
        return False
    mem.pending[d.class_name] = [d.box, idx]
    return True


def _frame_key(ctx: Context) -> str:
    return ctx.detections.frame_id or (ctx.frame.frame_id if ctx.frame else '') or 'camera'


def _black(rule: Rule, ctx: Context, _state) -> Iterator[Hit]:
    q, limit = ctx.quality, rule.params['max_mean']
    if q is not None and q.mean < limit:
        yield Hit(_frame_key(ctx), None, f'image too dark (mean {q.mean:.1f} < {limit:g})',
                  {'mean': f'{q.mean:.1f}', 'max_mean': _num(limit)})


def _overexposed(rule: Rule, ctx: Context, _state) -> Iterator[Hit]:
    q, limit = ctx.quality, rule.params['max_saturated_share']
    if q is not None and q.saturated_share > limit:
        yield Hit(_frame_key(ctx), None, f'image over-exposed ({q.saturated_share:.0%} of '
                  f'pixels saturated > {limit:.0%})',
                  {'saturated_share': f'{q.saturated_share:.3f}',
                   'max_saturated_share': _num(limit)})


def _blurred(rule: Rule, ctx: Context, _state) -> Iterator[Hit]:
    q, limit = ctx.quality, rule.params['min_laplacian_var']
    if q is not None and q.laplacian_var < limit:
        yield Hit(_frame_key(ctx), None, f'image blurred (sharpness {q.laplacian_var:.1f} < '
                  f'{limit:g})', {'laplacian_var': f'{q.laplacian_var:.1f}',
                                  'min_laplacian_var': _num(limit)})


FRAME_CONDITIONS = {
    'hazard_in_region': _hazard, 'detector_mllm_disagreement': _disagreement,
    'unknown_object': _unknown, 'sudden_close_appearance': _sudden, 'too_close': _too_close,
    'frame_black': _black, 'frame_overexposed': _overexposed, 'frame_blurred': _blurred,
    'person_down': _person_down,
}
QUALITY_TYPES = ('frame_black', 'frame_overexposed', 'frame_blurred')
