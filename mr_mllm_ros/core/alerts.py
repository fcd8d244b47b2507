"""Corner-case alerts: a rule engine over detections and image statistics, plus the
debounce/cooldown of the MLLM's "anything unusual or hazardous?" judgement.

Rules come from a YAML file (packaged default: config/alert_rules.yaml, whose header
documents the format). Each rule yields, per frame, a set of *keys* (a track, a class, the
camera) for which its condition holds; a key raises an Alert when the condition held in
n of its last m evaluations and the key is not in its cooldown. The engine is ROS-free and
thread-safe: evaluate() runs on the image thread, check_stale() on a timer, judgement()
wherever the MLLM answers.

Optional rule keys have their defaults in _SCHEMA below (a rules file replaces the whole
rule set, so it should not have to repeat every threshold); the packaged file spells
every key out.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
import yaml

from .config import share_dir
from .errors import ConfigError
from .types import Alert, Box, Detection, DetectionSet, Frame, GroundedPhrase, Severity, Source

RULES_FILE_NAME = 'alert_rules.yaml'
ANCHORS = ('bottom_center', 'center', 'any_overlap')
DISAGREEMENT_KINDS = ('relabelled', 'rejected', 'missed_by_detector')
QUALITY_SIDE = 320      # frame_blurred measures sharpness at this longer side
SATURATED_LEVEL = 250   # grey level counted as over-exposed
APPEARANCE_IOU = 0.3    # untracked fallback: "same object" between frames

_REQUIRED = object()


@dataclass(frozen=True)
class _Field:
    kind: str  # float | int | bool | str | str_list | polygon | debounce | severity
    default: Any = _REQUIRED
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None


_COMMON = {
    'name': _Field('str'), 'type': _Field('str'), 'severity': _Field('severity'),
    'enabled': _Field('bool', True), 'debounce': _Field('debounce', {'n': 1, 'm': 1}),
    'cooldown_s': _Field('float', 10.0, 0.0, 86400.0),
}
_SCHEMA: dict[str, dict[str, _Field]] = {
    'hazard_in_region': {
        'classes': _Field('str_list', low=1), 'region': _Field('polygon'),
        'region_name': _Field('str', ''), 'min_score': _Field('float', 0.5, 0.0, 1.0),
        'anchor': _Field('str', 'bottom_center', choices=ANCHORS)},
    'detector_mllm_disagreement': {
        'kinds': _Field('str_list', list(DISAGREEMENT_KINDS), choices=DISAGREEMENT_KINDS),
        'min_score': _Field('float', 0.0, 0.0, 1.0)},
    'unknown_object': {
        'labels': _Field('str_list', ['unknown', 'object']),
        'min_score': _Field('float', 0.25, 0.0, 1.0),
        'max_score': _Field('float', 0.35, 0.0, 1.0), 'classes': _Field('str_list', [])},
    'sudden_close_appearance': {
        'min_area_share': _Field('float', 0.15, 0.0, 1.0),
        'memory_s': _Field('float', 2.0, 0.01, 3600.0), 'classes': _Field('str_list', []),
        'min_score': _Field('float', 0.3, 0.0, 1.0)},
    'frame_black': {'max_mean': _Field('float', 15.0, 0.0, 255.0)},
    'frame_overexposed': {'max_saturated_share': _Field('float', 0.5, 0.0, 1.0)},
    'frame_blurred': {'min_laplacian_var': _Field('float', 25.0, 0.0, 1e9)},
    'camera_stale': {'max_age_s': _Field('float', 2.0, 0.001, 86400.0)},
    'mllm_judgement': {'min_probability': _Field('float', low=0.0, high=1.0)},
}
RULE_TYPES = tuple(_SCHEMA)


@dataclass(frozen=True)
class Rule:
    name: str
    type: str
    severity: Severity
    enabled: bool
    n: int  # debounce: raise when the condition held in n ...
    m: int  # ... of the last m evaluations of the key
    cooldown_s: float
    params: Mapping[str, Any]  # the type-specific keys, validated (lists become tuples)


# ----------------------------------------------------------------------------- loading

def default_rules_path() -> Path:
    """The packaged config/alert_rules.yaml (checkout or install share/, like mr_mllm.yaml)."""
    return share_dir() / 'config' / RULES_FILE_NAME


def load_rules(path: str | os.PathLike) -> list[Rule]:
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f'cannot read alert rules file {path}: {e.strerror}') from e
    except yaml.YAMLError as e:
        raise ConfigError(f'alert rules file {path} is not valid YAML: {e}') from e
    if not isinstance(data, dict) or set(data) != {'rules'} \
            or not isinstance(data['rules'], (list, type(None))):
        raise ConfigError(f'alert rules file {path}: expected one top-level key `rules` '
                          f'holding a list of rules, got {str(data)[:80]!r}')
    rules = [parse_rule(entry, i) for i, entry in enumerate(data['rules'] or [])]
    _check_unique(rules)
    return rules


def _check_unique(rules: Sequence[Rule]) -> None:
    seen: set[str] = set()
    for r in rules:
        if r.name in seen:
            raise ConfigError(f'alert rule {r.name!r}: key \'name\' is used by two rules; '
                              'rule names must be unique')
        seen.add(r.name)


def parse_rule(entry: Any, index: int = 0) -> Rule:
    """One validated Rule from a mapping of the rules file (index: its position, for errors)."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f'alert rule #{index}: expected a mapping of keys, got {entry!r}')
    name = entry.get('name')
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f'alert rule #{index}: key \'name\' = {name!r} must be a non-empty '
                          'string')
    label = f'alert rule {name!r}'
    rtype = entry.get('type')
    if rtype not in _SCHEMA:
        raise ConfigError(f'{label}: key \'type\' = {rtype!r} is not allowed; choose one of: '
                          f'{", ".join(RULE_TYPES)}')
    fields = {**_COMMON, **_SCHEMA[rtype]}
    for key in entry:
        if key not in fields:
            raise ConfigError(f'{label}: unknown key {key!r} = {entry[key]!r}; allowed keys '
                              f'for type {rtype!r}: {", ".join(fields)}')
    values = {}
    for key, f in fields.items():
        if key not in entry and f.default is _REQUIRED:
            raise ConfigError(f'{label}: key {key!r} is missing (required for type {rtype!r})')
        values[key] = _check(label, key, entry.get(key, f.default), f)
    params = {k: v for k, v in values.items() if k not in _COMMON}
    if rtype == 'unknown_object' and params['min_score'] > params['max_score']:
        raise ConfigError(f'{label}: key \'max_score\' = {params["max_score"]!r} must be >= '
                          f'min_score = {params["min_score"]!r}')
    return Rule(name, rtype, values['severity'], values['enabled'], values['debounce'][0],
                values['debounce'][1], values['cooldown_s'], MappingProxyType(params))


def _check(label: str, key: str, value: Any, f: _Field) -> Any:
    def bad(allowed: str):
        return ConfigError(f'{label}: key {key!r} = {value!r} is not allowed; {allowed}')

    if f.kind == 'severity':
        if not isinstance(value, str) or value.upper() not in Severity.__members__:
            raise bad(f'choose one of: {", ".join(Severity.__members__)}')
        return Severity[value.upper()]
    if f.kind == 'debounce':
        return _check_debounce(value, bad)
    if f.kind == 'polygon':
        return _check_polygon(value, bad)
    if f.kind == 'str_list':
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad('expected a list of strings')
        if f.low and len(value) < f.low:
            raise bad(f'expected at least {int(f.low)} entries')
        if f.choices and not set(value) <= set(f.choices):
            raise bad(f'entries must be among: {", ".join(f.choices)}')
        return tuple(value)
    if f.kind == 'bool':
        if not isinstance(value, bool):
            raise bad('expected true or false')
        return value
    if f.kind == 'str':
        if not isinstance(value, str):
            raise bad('expected a string')
        if f.choices and value not in f.choices:
            raise bad(f'choose one of: {", ".join(f.choices)}')
        return value
    # float
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise bad('expected a finite number')
    if not f.low <= value <= f.high:
        raise bad(f'allowed: {f.low} <= value <= {f.high}')
    return float(value)


def _check_debounce(value: Any, bad) -> tuple[int, int]:
    ok = isinstance(value, Mapping) and set(value) == {'n', 'm'} and all(
        isinstance(value[k], int) and not isinstance(value[k], bool) for k in 'nm')
    if not ok or not 1 <= value['n'] <= value['m'] <= 1000:
        raise bad('expected {n: N, m: M} with integers 1 <= n <= m <= 1000')
    return value['n'], value['m']


def _check_polygon(value: Any, bad) -> tuple[tuple[float, float], ...]:
    def is_coord(c):
        return not isinstance(c, bool) and isinstance(c, (int, float)) and 0.0 <= c <= 1.0

    if not isinstance(value, (list, tuple)) or len(value) < 3 or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(map(is_coord, p))
            for p in value):
        raise bad('expected a polygon of at least 3 [x, y] points in normalised image '
                  'coordinates (0 <= x, y <= 1; 0,0 = top-left)')
    return tuple((float(x), float(y)) for x, y in value)


# ------------------------------------------------------------------------ geometry

def _on_segment(px, py, ax, ay, bx, by, eps=1e-9) -> bool:
    cross = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    return (abs(cross) <= eps and min(ax, bx) - eps <= px <= max(ax, bx) + eps
            and min(ay, by) - eps <= py <= max(ay, by) + eps)


def point_in_polygon(x: float, y: float, polygon: Sequence[tuple[float, float]]) -> bool:
    """Even-odd ray casting (works for concave polygons); points on an edge are inside, so
    an object standing exactly on a region border counts as in it."""
    inside = False
    for i, (ax, ay) in enumerate(polygon):
        bx, by = polygon[(i + 1) % len(polygon)]
        if _on_segment(x, y, ax, ay, bx, by):
            return True
        if (ay > y) != (by > y) and x < ax + (y - ay) * (bx - ax) / (by - ay):
            inside = not inside
    return inside


def _segments_cross(p, q, r, s) -> bool:
    def orient(a, b, c):
        v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return 0 if abs(v) < 1e-12 else (1 if v > 0 else -1)
    o1, o2, o3, o4 = orient(p, q, r), orient(p, q, s), orient(r, s, p), orient(r, s, q)
    if o1 != o2 and o3 != o4:
        return True
    return any(o == 0 and _on_segment(*pt, *a, *b) for o, pt, a, b in
               ((o1, r, p, q), (o2, s, p, q), (o3, p, r, s), (o4, q, r, s)))


def box_overlaps_polygon(x1, y1, x2, y2, polygon: Sequence[tuple[float, float]]) -> bool:
    """Do a box and a polygon share any point (touching counts)?"""
    corners = ((x1, y1), (x2, y1), (x2, y2), (x1, y2))
    if any(point_in_polygon(cx, cy, polygon) for cx, cy in corners):
        return True
    if any(x1 <= px <= x2 and y1 <= py <= y2 for px, py in polygon):
        return True
    edges = list(zip(polygon, polygon[1:] + polygon[:1]))
    return any(_segments_cross(a, b, c, d) for a, b in edges
               for c, d in zip(corners, corners[1:] + corners[:1]))


def in_region(box: Box, width: int, height: int, polygon, anchor: str) -> bool:
    x1, y1, x2, y2 = box.x1 / width, box.y1 / height, box.x2 / width, box.y2 / height
    if anchor == 'any_overlap':
        return box_overlaps_polygon(x1, y1, x2, y2, polygon)
    # bottom_center: where an upright object touches the floor, i.e. where it really is.
    y = y2 if anchor == 'bottom_center' else (y1 + y2) / 2
    return point_in_polygon((x1 + x2) / 2, y, polygon)


# ------------------------------------------------------------------- frame quality

@dataclass(frozen=True)
class FrameQuality:
    mean: float             # mean grey level 0..255
    saturated_share: float  # share of pixels with grey >= 250
    laplacian_var: float    # sharpness at longer side 320 (low = blurred or featureless)


def frame_quality(rgb: np.ndarray) -> FrameQuality:
    """Image statistics for the frame_* rules and diagnostics; ~1 ms for VGA (see tests)."""
    img = np.asarray(rgb)
    if img.dtype != np.uint8 or img.size == 0 or not (
            img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise ValueError(f'frame_quality needs an (H, W[, 3|4]) uint8 image, got shape '
                         f'{img.shape} dtype {img.dtype}')
    img = np.ascontiguousarray(img)
    grey = img if img.ndim == 2 else cv2.cvtColor(
        img, cv2.COLOR_RGB2GRAY if img.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
    saturated = np.count_nonzero(grey >= SATURATED_LEVEL) / grey.size
    h, w = grey.shape
    scale = QUALITY_SIDE / max(h, w)
    # A fixed analysis size makes the blur threshold independent of the camera resolution.
    small = grey if scale >= 1 else cv2.resize(
        grey, (max(1, round(w * scale)), max(1, round(h * scale))),
        interpolation=cv2.INTER_AREA)
    _, std = cv2.meanStdDev(cv2.Laplacian(small, cv2.CV_32F))
    return FrameQuality(float(cv2.mean(grey)[0]), float(saturated), float(std[0, 0]) ** 2)


# ------------------------------------------------------------------------ conditions

def _object_key(d: Detection) -> str:
    return f'track:{d.track_id}' if d.track_id >= 0 else f'class:{d.class_name}'


def _details(d: Detection) -> str:
    return f'score {d.score:.2f}' + (f', track {d.track_id}' if d.track_id >= 0 else '')


@dataclass
class _Context:
    frame: Frame | None
    detections: DetectionSet
    rejected: Sequence[Detection]
    now_s: float
    width: int
    height: int
    quality: FrameQuality | None = None


# A condition yields (key, offending detection or None, one-line message) for every key
# whose condition holds on this frame.
_Hit = tuple[str, Detection | None, str]


def _hazard(rule: Rule, ctx: _Context, _state) -> Iterator[_Hit]:
    p = rule.params
    region = p['region_name'] or rule.name
    if ctx.width <= 0 or ctx.height <= 0:
        return
    for d in ctx.detections:
        if d.class_name in p['classes'] and d.score >= p['min_score'] and in_region(
                d.box, ctx.width, ctx.height, p['region'], p['anchor']):
            yield _object_key(d), d, f'{d.class_name} in region {region!r} ({_details(d)})'


def _disagreement(rule: Rule, ctx: _Context, _state) -> Iterator[_Hit]:
    kinds, min_score = rule.params['kinds'], rule.params['min_score']
    for d in ctx.detections:
        if d.score < min_score:
            continue
        if 'relabelled' in kinds and d.original_class_name not in (None, d.class_name):
            key = (f'track:{d.track_id}' if d.track_id >= 0
                   else f'class:{d.original_class_name}->{d.class_name}')
            yield (f'relabelled:{key}', d, f'{d.class_name} relabelled by the MLLM, detector '
                   f'said {d.original_class_name!r} ({_details(d)})')
        if 'missed_by_detector' in kinds and d.source == Source.MLLM:
            yield (f'missed:class:{d.class_name}', d,
                   f'{d.class_name} named by the MLLM but not found by the detector')
    if 'rejected' in kinds:
        for d in ctx.rejected:
            if d.score >= min_score:
                yield (f'rejected:{_object_key(d)}', d,
                       f'{d.class_name} rejected by MLLM verification ({_details(d)})')


def _unknown(rule: Rule, ctx: _Context, _state) -> Iterator[_Hit]:
    p = rule.params
    for d in ctx.detections:
        if d.class_name in p['labels']:
            yield _object_key(d), d, f'{d.class_name} (unidentified object, {_details(d)})'
        # Verified = the MLLM confirmed it, so a low score alone is no longer a corner case.
        elif (p['min_score'] <= d.score < p['max_score'] and not d.verified
              and (not p['classes'] or d.class_name in p['classes'])):
            yield (_object_key(d), d, f'{d.class_name} (low confidence, not confirmed by '
                   f'the MLLM, {_details(d)})')


class _Appearances:
    """Memory of the sudden_close_appearance rule: which objects were seen recently."""

    def __init__(self):
        self.frame_index = 0
        self.last_frame_s: float | None = None
        self.tracks: dict[int, list] = {}  # track id -> [first frame index, last seen s]
        self.recent: deque = deque(maxlen=4096)  # (time, class name, box) of untracked ones
        self.pending: dict[str, list] = {}  # class -> [box, first frame index]


def _sudden(rule: Rule, ctx: _Context, mem: _Appearances) -> Iterator[_Hit]:
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
        if d.track_id >= 0:
            st = mem.tracks.get(d.track_id)
            if st is None or not 0 <= now - st[1] <= memory_s:
                st = mem.tracks[d.track_id] = [idx if has_past else -math.inf, now]
            st[1] = now
            young = idx - st[0] < rule.m
        else:
            mem.recent.append((now, d.class_name, d.box))
            young = share >= p['min_area_share'] and _new_untracked(d, rule, idx, mem,
                                                                     recent, has_past)
        if young and share >= p['min_area_share']:
            yield (_object_key(d), d, f'{d.class_name} appeared close ({share:.0%} of the '
                   f'image, {_details(d)})')
    # Bounded memory: forget tracks and pending appearances that are gone.
    for tid in [t for t, st in mem.tracks.items() if not 0 <= now - st[1] <= memory_s]:
        del mem.tracks[tid]
    for cls in [c for c, pe in mem.pending.items() if idx - pe[1] >= rule.m]:
        del mem.pending[cls]


def _new_untracked(d: Detection, rule: Rule, idx: int, mem: _Appearances,
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


def _frame_key(ctx: _Context) -> str:
    return ctx.detections.frame_id or (ctx.frame.frame_id if ctx.frame else '') or 'camera'


def _black(rule: Rule, ctx: _Context, _state) -> Iterator[_Hit]:
    q, limit = ctx.quality, rule.params['max_mean']
    if q is not None and q.mean < limit:
        yield _frame_key(ctx), None, f'image too dark (mean {q.mean:.1f} < {limit:g})'


def _overexposed(rule: Rule, ctx: _Context, _state) -> Iterator[_Hit]:
    q, limit = ctx.quality, rule.params['max_saturated_share']
    if q is not None and q.saturated_share > limit:
        yield (_frame_key(ctx), None, f'image over-exposed ({q.saturated_share:.0%} of '
               f'pixels saturated > {limit:.0%})')


def _blurred(rule: Rule, ctx: _Context, _state) -> Iterator[_Hit]:
    q, limit = ctx.quality, rule.params['min_laplacian_var']
    if q is not None and q.laplacian_var < limit:
        yield (_frame_key(ctx), None, f'image blurred (sharpness {q.laplacian_var:.1f} < '
               f'{limit:g})')


_FRAME_CONDITIONS = {
    'hazard_in_region': _hazard, 'detector_mllm_disagreement': _disagreement,
    'unknown_object': _unknown, 'sudden_close_appearance': _sudden,
    'frame_black': _black, 'frame_overexposed': _overexposed, 'frame_blurred': _blurred,
}
_QUALITY_TYPES = ('frame_black', 'frame_overexposed', 'frame_blurred')


# ---------------------------------------------------------------------------- engine

class _KeyState:
    __slots__ = ('history', 'last_raised_s')

    def __init__(self, m: int):
        self.history: deque[bool] = deque(maxlen=m)
        self.last_raised_s: float | None = None

    def cooling(self, now_s: float, cooldown_s: float) -> bool:
        # A clock that jumps back (bag loop, sim time reset) ends the cooldown.
        return self.last_raised_s is not None and 0 <= now_s - self.last_raised_s < cooldown_s


class AlertEngine:
    def __init__(self, rules: Iterable[Rule], max_keys: int = 1000):
        self.rules = tuple(rules)
        _check_unique(self.rules)
        self.max_keys = max_keys  # per rule; the oldest key is evicted beyond it
        self._lock = threading.Lock()
        self._raised = {r.name: 0 for r in self.rules}  # for /diagnostics; reset() keeps it
        self.reset()

    @classmethod
    def from_file(cls, path: str | os.PathLike | None = None, **kwargs) -> 'AlertEngine':
        return cls(load_rules(path or default_rules_path()), **kwargs)

    def reset(self) -> None:
        """Forget all debounce, cooldown and appearance state (counters are kept)."""
        with self._lock:
            self._keys = {r.name: OrderedDict() for r in self.rules}
            self._memory = {r.name: _Appearances() for r in self.rules
                            if r.type == 'sudden_close_appearance'}

    def _active(self, types: Iterable[str]) -> list[Rule]:
        return [r for r in self.rules if r.enabled and r.type in types]

    def evaluate(self, frame: Frame | None, detections: DetectionSet, now_s: float,
                 rejected: Sequence[Detection] = (),
                 types: Iterable[str] | None = None) -> list[Alert]:
        """Alerts raised on this frame (rules in file order). `rejected`: detections the
        MLLM verification removed; `frame` None skips the frame_* rules; `types` limits
        the rule types evaluated (the scene node evaluates detector_mllm_disagreement
        after the MLLM's feedback, the others on every frame: once each per frame)."""
        rules = self._active(_FRAME_CONDITIONS if types is None
                             else set(types) & set(_FRAME_CONDITIONS))
        width = detections.image_width or (frame.width if frame is not None else 0)
        height = detections.image_height or (frame.height if frame is not None else 0)
        ctx = _Context(frame, detections, rejected, now_s, width, height)
        if frame is not None and any(r.type in _QUALITY_TYPES for r in rules):
            ctx.quality = frame_quality(frame.image)  # once per frame, shared by the rules
        stamp_ns = detections.stamp_ns or (frame.stamp_ns if frame is not None else 0)
        frame_id = detections.frame_id or (frame.frame_id if frame is not None else '')
        alerts: list[Alert] = []
        with self._lock:
            for rule in rules:
                if rule.type in _QUALITY_TYPES and ctx.quality is None:
                    continue  # no image: not evaluated (does not count in the debounce)
                hits = _FRAME_CONDITIONS[rule.type](rule, ctx, self._memory.get(rule.name))
                alerts += self._debounce(rule, hits, now_s, stamp_ns, frame_id, 'rule')
        return alerts

    def check_stale(self, now_s: float, last_frame_time_s: float | None,
                    frame_id: str = '') -> list[Alert]:
        """camera_stale rules; call from a timer. last_frame_time_s None = no frame yet
        (pass the start time until the first frame if startup should not count)."""
        alerts: list[Alert] = []
        with self._lock:
            for rule in self._active(('camera_stale',)):
                limit = rule.params['max_age_s']
                age = None if last_frame_time_s is None else now_s - last_frame_time_s
                hits = []
                if age is None or age > limit:
                    what = 'no image received yet' if age is None else \
                        f'no image for {age:.1f} s (limit {limit:g} s)'
                    hits.append((frame_id or 'camera', None,
                                 f'camera {frame_id or "camera"!r} stale: {what}'))
                alerts += self._debounce(rule, hits, now_s, int(now_s * 1e9), frame_id,
                                         'rule')
        return alerts

    def judgement(self, detections: DetectionSet | Sequence[Detection], p_yes: float,
                  reason: str, stamp_ns: int, frame_id: str, model_name: str,
                  now_s: float | None = None) -> list[Alert]:
        """The MLLM's "unusual or hazardous?" answer through the mllm_judgement rules.
        `detections`: the objects the reason is about; the clock is the image stamp
        unless now_s is given (so replays debounce like the live run)."""
        now_s = stamp_ns * 1e-9 if now_s is None else now_s
        dets = list(detections)
        reason = ' '.join(str(reason).split()) or 'unusual scene'
        alerts: list[Alert] = []
        with self._lock:
            for rule in self._active(('mllm_judgement',)):
                hits = []
                if p_yes >= rule.params['min_probability']:
                    key = frame_id or 'scene'
                    names = _phrase_text(dets)
                    msg = f'{names + ": " if names else ""}{reason} (p_yes {p_yes:.2f})'
                    hits = [(key, d, msg) for d in dets] or [(key, None, msg)]
                alerts += self._debounce(rule, hits, now_s, stamp_ns, frame_id,
                                         model_name or 'mllm')
        return alerts

    def stats(self) -> dict[str, int]:
        """Alerts raised so far per rule name (every rule listed, 0 included)."""
        with self._lock:
            return dict(self._raised)

    def keys(self, rule_name: str) -> list[str]:
        """Keys a rule currently remembers (debouncing or cooling), oldest first."""
        with self._lock:
            return list(self._keys[rule_name])

    # Called with the lock held.
    def _debounce(self, rule: Rule, hits: Iterable[_Hit], now_s: float, stamp_ns: int,
                  frame_id: str, raised_by: str) -> list[Alert]:
        grouped: dict[str, tuple[list[Detection], str]] = {}
        for key, det, message in hits:
            dets, _ = grouped.setdefault(key, ([], message))
            if det is not None:
                dets.append(det)
        keys = self._keys[rule.name]
        for key in grouped:
            if key in keys:
                keys.move_to_end(key)  # most recently true last: eviction takes the oldest
            else:
                while len(keys) >= self.max_keys:
                    keys.popitem(last=False)
                keys[key] = _KeyState(rule.m)
        alerts = []
        for key, st in list(keys.items()):
            active = key in grouped
            st.history.append(active)
            if active and sum(st.history) >= rule.n and not st.cooling(now_s, rule.cooldown_s):
                st.last_raised_s = now_s
                self._raised[rule.name] += 1
                dets, message = grouped[key]
                alerts.append(_alert(rule, dets, message, stamp_ns, frame_id, raised_by))
            elif not any(st.history) and not st.cooling(now_s, rule.cooldown_s):
                del keys[key]  # gone for m evaluations and not cooling: forget it
        return alerts


def _phrase_text(dets: Sequence[Detection]) -> str:
    return ', '.join(dict.fromkeys(d.class_name for d in dets))


def _alert(rule: Rule, dets: list[Detection], message: str, stamp_ns: int, frame_id: str,
           raised_by: str) -> Alert:
    if len(dets) > 1 and rule.type != 'mllm_judgement':
        message += f' (+{len(dets) - 1} more)'
    phrases = ()
    if dets:
        text = _phrase_text(dets)
        start = max(message.find(text), 0)
        phrases = (GroundedPhrase(text, start, start + len(text), tuple(range(len(dets)))),)
    return Alert(severity=rule.severity, code=rule.type, rule=rule.name, raised_by=raised_by,
                 message=message, stamp_ns=stamp_ns, frame_id=frame_id,
                 detections=tuple(dets), phrases=phrases)


#: Rule types that judge the MLLM's feedback on perception; evaluated after it runs.
FEEDBACK_TYPES = ('detector_mllm_disagreement',)
#: Rule types evaluated on every frame as it arrives.
PER_FRAME_TYPES = tuple(t for t in _FRAME_CONDITIONS if t not in FEEDBACK_TYPES)
