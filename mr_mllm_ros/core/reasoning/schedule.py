"""When to reason: the one schedule of MLLM work shared by scene_node, replay, eval and
`mr-mllm describe`.

A reasoning step (MLLM verification, description, feedback alerts, judgement) runs on the
newest frame when one of these triggers holds (`TRIGGERS`, counted in `calls`):
- change:      the scene changed (`scene.describe_on_change`: a new track id or a
               different set of classes) since the last step; it waits, if it must, for
               the minimum interval to pass;
- rate:        `1 / scene.description_rate_hz` s have passed since the last step started;
- every_frame: `scene.describe_every_frame` (each new frame; no interval, no back-off:
               the per-image commands and `replay --describe-every-frame`);
never more often than `scene.min_description_interval_s`, never twice on one frame, never
while a step runs (started, not yet `succeeded` or `failed`: the caller then takes the
newest frame, not the ones that came meanwhile), and never while backing off after a
failure (1, 2, 4 ... 30 s; the first success resets it).
The MLLM judgement runs inside a step at most `alerts.judgement_rate_hz`.
`question` counts the ask_scene answers (they are not scheduled: a person is waiting).

The clock is the caller's: monotonic seconds in a node, message (log) time in a replay,
so a bag is reasoned on at the moments the live graph reasoned on it. Frames are named by
an increasing integer key (core.pipeline.ScenePipeline counts the frames it is given).
Thread-safe: a node notes frames on its frame thread and starts steps on its MLLM thread.

The ask_scene questions themselves (request check, queued job, streaming, freshness) are
in core.reasoning.vqa.
"""

from __future__ import annotations

import math
import threading
from collections import Counter

from ..config import AlertsConfig, SceneConfig

TRIGGERS = ('change', 'rate', 'every_frame')
MAX_BACKOFF_S = 30.0


class ReasoningSchedule:
    def __init__(self, scene: SceneConfig, alerts: AlertsConfig):
        self.scene, self.alerts = scene, alerts
        self._lock = threading.Lock()
        self._reasoned: int | None = None   # key of the newest frame reasoned on
        self._last_start_s: float | None = None
        self._change_pending = False
        self._retry_at_s = -math.inf
        self._running = False               # a step started and not yet ended
        self._last_judgement_s: float | None = None
        self.failures = 0                   # consecutive failed steps (back-off)
        self.last_trigger: str | None = None  # of the newest step started
        self.calls: Counter = Counter()     # trigger (or 'question') -> steps started

    # ------------------------------------------------------------------ frames
    def note_frame(self, key: int, changed: bool, now_s: float) -> bool:
        """A new frame (`changed`: scene_changed said so). True when a step is due now
        (or as soon as the running one ends), i.e. the caller should wake its MLLM thread."""
        with self._lock:
            # A step may already have run on this very frame (a node's MLLM thread can see
            # a frame before its frame thread notes it): then the change is served.
            if changed and self.scene.describe_on_change and \
                    (self._reasoned is None or key > self._reasoned):
                self._change_pending = True
            return self._trigger(key, now_s) is not None

    def start(self, key: int, now_s: float) -> str | None:
        """The trigger when a step on frame `key` is to start now (and records it as
        started: end it with `succeeded` or `failed`), else None: skip."""
        with self._lock:
            trigger = self._trigger(key, now_s) if not self._running else None
            if trigger is not None:
                self._running = True
                self._reasoned, self._last_start_s = key, now_s
                self._change_pending = False
                self.calls[trigger] += 1
                self.last_trigger = trigger
            return trigger

    def succeeded(self) -> None:
        with self._lock:
            self._running = False
            self.failures, self._retry_at_s = 0, -math.inf

    def failed(self, now_s: float) -> float:
        """Back off after a failed step; returns the delay (s) before the next try."""
        with self._lock:
            self._running = False
            if self.scene.describe_every_frame:
                return 0.0
            self.failures += 1
            delay = min(MAX_BACKOFF_S, 2.0 ** (self.failures - 1))
            self._retry_at_s = now_s + delay
            return delay

    def _trigger(self, key: int, now_s: float) -> str | None:
        if self._reasoned is not None and key <= self._reasoned:
            return None
        if self.scene.describe_every_frame:
            return 'every_frame'
        if now_s < self._retry_at_s:
            return None
        last = self._last_start_s
        if last is not None and now_s - last < self.scene.min_description_interval_s:
            return None
        if self._change_pending:
            return 'change'
        rate = self.scene.description_rate_hz
        if rate > 0 and (last is None or now_s - last >= 1.0 / rate):
            return 'rate'
        return None

    def wake_period_s(self) -> float | None:
        """How often a node with no new frames should look again (a rate step, or a
        change waiting out the minimum interval, can fall due between frames); None when
        nothing can."""
        s = self.scene
        periods = [1.0 / s.description_rate_hz] if s.description_rate_hz > 0 else []
        if s.describe_on_change and s.min_description_interval_s > 0:
            periods.append(s.min_description_interval_s)
        return min(periods) if periods and not s.describe_every_frame else None

    # -------------------------------------------------------------- judgement
    def judgement_due(self, now_s: float) -> bool:
        """Whether a step at `now_s` also asks the MLLM judgement (and records it)."""
        cfg = self.alerts
        if not cfg.mllm_judgement or cfg.judgement_rate_hz <= 0:
            return False
        with self._lock:
            if self._last_judgement_s is not None and \
                    now_s - self._last_judgement_s < 1.0 / cfg.judgement_rate_hz:
                return False
            self._last_judgement_s = now_s
            return True

    def note_question(self) -> None:
        with self._lock:
            self.calls['question'] += 1

    def counts(self) -> dict[str, int]:
        """Steps started per trigger, and questions answered, every key present."""
        with self._lock:
            return {k: self.calls.get(k, 0) for k in (*TRIGGERS, 'question')}
