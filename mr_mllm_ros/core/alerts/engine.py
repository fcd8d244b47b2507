"""The alert engine: rule conditions through a per-key N-of-M debounce and cooldown.

A key raises an Alert when its rule's condition held in n of its last m evaluations and
the key is not in its cooldown. The engine is ROS-free and thread-safe: evaluate() runs
on the image thread, check_stale() on a timer, judgement() wherever the MLLM answers.
Each alert carries its proof: the stamps of the frames in the window where the condition
held, the condition's values, and a rationale built from them.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict, deque
from typing import Iterable, Sequence

from ..types import Alert, Detection, DetectionSet, Frame, GroundedPhrase
from .arrivals import FrameArrivals
from .conditions import FRAME_CONDITIONS, QUALITY_TYPES, Appearances, Context, Hit
from .quality import frame_quality
from .rules import Rule, check_unique, default_rules_path, load_rules


class _KeyState:
    __slots__ = ('history', 'last_raised_s')

    def __init__(self, m: int):
        # Per evaluation: the frame stamp when the condition held, else None.
        self.history: deque[int | None] = deque(maxlen=m)
        self.last_raised_s: float | None = None

    def held(self) -> list[int]:
        return [s for s in self.history if s is not None]

    def cooling(self, now_s: float, cooldown_s: float) -> bool:
        # A clock that jumps back (bag loop, sim time reset) ends the cooldown.
        return self.last_raised_s is not None and 0 <= now_s - self.last_raised_s < cooldown_s


class AlertEngine:
    def __init__(self, rules: Iterable[Rule], max_keys: int = 1000):
        self.rules = tuple(rules)
        check_unique(self.rules)
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
            self._memory = {r.name: Appearances() for r in self.rules
                            if r.type == 'sudden_close_appearance'}

    def _active(self, types: Iterable[str]) -> list[Rule]:
        return [r for r in self.rules if r.enabled and r.type in types]

    def evaluate(self, frame: Frame | None, detections: DetectionSet, now_s: float,
                 rejected: Sequence[Detection] = (),
                 types: Iterable[str] | None = None,
                 rejected_by: Sequence[str] = ()) -> list[Alert]:
        """Alerts raised on this frame (rules in file order). `rejected`: detections the
        MLLM side removed, `rejected_by` who removed each (the looker or MLLM
        verification; empty = MLLM verification); `frame` None skips the frame_* rules;
        `types` limits the rule types evaluated (the scene node evaluates detector_mllm_disagreement
        after the MLLM's feedback, the others on every frame: once each per frame)."""
        rules = self._active(FRAME_CONDITIONS if types is None
                             else set(types) & set(FRAME_CONDITIONS))
        width = detections.image_width or (frame.width if frame is not None else 0)
        height = detections.image_height or (frame.height if frame is not None else 0)
        ctx = Context(frame, detections, rejected, now_s, width, height,
                      rejected_by=tuple(rejected_by))
        if frame is not None and any(r.type in QUALITY_TYPES for r in rules):
            ctx.quality = frame_quality(frame.image)  # once per frame, shared by the rules
        stamp_ns = detections.stamp_ns or (frame.stamp_ns if frame is not None else 0)
        frame_id = detections.frame_id or (frame.frame_id if frame is not None else '')
        alerts: list[Alert] = []
        with self._lock:
            for rule in rules:
                if rule.type in QUALITY_TYPES and ctx.quality is None:
                    continue  # no image: not evaluated (does not count in the debounce)
                hits = FRAME_CONDITIONS[rule.type](rule, ctx, self._memory.get(rule.name))
                alerts += self._debounce(rule, hits, now_s, stamp_ns, frame_id, 'rule')
        return alerts

    def check_stale(self, now_s: float, arrivals: FrameArrivals,
                    frame_id: str = '') -> list[Alert]:
        """camera_stale rules; call from a timer with the camera's frame arrivals (on the
        clock of now_s). Only a streaming camera goes stale (core.alerts.arrivals): one
        that has sent nothing yet, or a one-shot source, is not."""
        alerts: list[Alert] = []
        last = arrivals.last
        with self._lock:
            for rule in self._active(('camera_stale',)):
                limit = rule.params['max_age_s']
                hits = []
                if last is not None and now_s - last > limit and arrivals.streaming(
                        rule.params['min_stream_frames'], limit):
                    age = now_s - last
                    hits.append(Hit(frame_id or 'camera', None,
                                    f'camera {frame_id or "camera"!r} stale: no image for '
                                    f'{age:.1f} s (limit {limit:g} s)',
                                    {'age_s': f'{age:.2f}', 'max_age_s': f'{limit:g}'}))
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
                    values = {'p_yes': f'{p_yes:.3f}',
                              'min_probability': f'{rule.params["min_probability"]:g}',
                              'reason': reason, 'model': model_name or 'mllm'}
                    hits = [Hit(key, d, msg, values) for d in dets] or \
                        [Hit(key, None, msg, values)]
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
    def _debounce(self, rule: Rule, hits: Iterable[Hit], now_s: float, stamp_ns: int,
                  frame_id: str, raised_by: str) -> list[Alert]:
        grouped: dict[str, tuple[list[Detection], Hit]] = {}
        for hit in hits:
            dets, _ = grouped.setdefault(hit.key, ([], hit))
            if hit.detection is not None:
                dets.append(hit.detection)
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
            st.history.append(stamp_ns if active else None)
            window = st.held()
            if active and len(window) >= rule.n and not st.cooling(now_s, rule.cooldown_s):
                st.last_raised_s = now_s
                self._raised[rule.name] += 1
                dets, hit = grouped[key]
                alerts.append(_alert(rule, dets, hit, tuple(window), len(st.history),
                                     stamp_ns, frame_id, raised_by))
            elif not window and not st.cooling(now_s, rule.cooldown_s):
                del keys[key]  # gone for m evaluations and not cooling: forget it
        return alerts


def _phrase_text(dets: Sequence[Detection]) -> str:
    return ', '.join(dict.fromkeys(d.class_name for d in dets))


def rationale(rule: Rule, values: dict[str, str], held: int, evaluations: int,
              objects: int) -> str:
    """Why, for people: the condition's values (or the MLLM's reason) and the debounce."""
    if rule.type == 'mllm_judgement':
        why = (f'{values.get("model", "the MLLM")} judged the scene unusual '
               f'(p_yes {values["p_yes"]} >= {values["min_probability"]}): '
               f'{values["reason"]}')
        if objects:
            why += f' [about {objects} object{"s" if objects > 1 else ""}, boxes in the ' \
                   'evidence image]'
    else:
        why = f'{rule.type}: ' + ', '.join(f'{k} {v}' for k, v in values.items())
    return f'{why}; held in {held} of the last {evaluations} evaluations ' \
           f'(debounce {rule.n} of {rule.m})'


def _alert(rule: Rule, dets: list[Detection], hit: Hit, window: tuple[int, ...],
           evaluations: int, stamp_ns: int, frame_id: str, raised_by: str) -> Alert:
    message = hit.message
    if len(dets) > 1 and rule.type != 'mllm_judgement':
        message += f' (+{len(dets) - 1} more)'
    phrases = ()
    if dets:
        text = _phrase_text(dets)
        start = max(message.find(text), 0)
        phrases = (GroundedPhrase(text, start, start + len(text), tuple(range(len(dets)))),)
    values = {**hit.values, 'held': str(len(window)), 'evaluations': str(evaluations)}
    return Alert(severity=rule.severity, code=rule.type, rule=rule.name, raised_by=raised_by,
                 message=message, stamp_ns=stamp_ns, frame_id=frame_id,
                 detections=tuple(dets), phrases=phrases, window_stamps_ns=window,
                 rationale=rationale(rule, hit.values, len(window), evaluations, len(dets)),
                 values=tuple(values.items()))


#: Rule types evaluated in the reasoning step, on its refined detections: the MLLM's
#: feedback on perception, and the looker's posture (estimated only there).
FEEDBACK_TYPES = ('detector_mllm_disagreement', 'person_down')
#: Rule types evaluated on every frame as it arrives.
PER_FRAME_TYPES = tuple(t for t in FRAME_CONDITIONS if t not in FEEDBACK_TYPES)
