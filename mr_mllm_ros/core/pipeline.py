"""The one processing path shared by the nodes, replay and the CLI.

PerceptionPipeline: Frame -> DetectionSet                              (perception_node)
ScenePipeline:      `on_frame`: rule alerts, scene-change detection, the frame noted for
                    the schedule (core.reasoning.schedule) -> whether a step is due;
                    `step`: the reasoning step on the newest frame noted, when the
                    schedule starts one: MLLM verification/labels -> description ->
                    re-detection -> feedback alerts -> MLLM judgement   (scene_node)
Pipeline:           both in one process, on_frame then step on the caller's clock
                    (`mr-mllm describe`, replay, the evaluation).
The nodes call these same objects, so a node and an offline replay cannot drift apart: the
schedule handshake (note the frame, start, succeeded / failed) lives in ScenePipeline only;
callers move frames between threads and publish what comes back.
`now_s` is the caller's clock for the schedule and alert debounce/cooldown: monotonic time
in a node, the message time in a replay (so a bag reasons and debounces as it did live).
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
import time
from dataclasses import dataclass, field
from typing import Callable

from .alerts import FEEDBACK_TYPES, PER_FRAME_TYPES, AlertEngine, FrameArrivals
from .alerts.evidence import with_evidence
from .config import Config, with_changes
from .detection import Detector, create_detector
from .detection.tracking import create_tracker
from .errors import BackendError, MrMllmError
from .looking.looker import Looker
from .geometry import DepthFrame, locate
from .mllm import MllmBackend
from .mllm.streaming import TokenStream
from .reasoning.reinforce import Reinforcer
from .reasoning.scene import SceneReasoner
from .reasoning.scene_change import SceneChanges
from .reasoning.schedule import ReasoningSchedule
from .types import Alert, Answer, Detection, DetectionSet, Frame, SceneDescription


class PerceptionPipeline:
    """Frame in, DetectionSet out, with per-stage timings (ms) including 'total'."""

    def __init__(self, config: Config, detector: Detector | None = None):
        self.config = config
        self.detector = detector if detector is not None else create_detector(config)
        self.tracker = create_tracker(config.tracker, config.detector.conf)
        self._detector_settings(config)

    def detect(self, frame: Frame, depth: DepthFrame | None = None) -> DetectionSet:
        """`depth`: aligned depth paired with the frame: each detection gets a position
        (core.geometry; raises CameraInfoError when depth and frame are not one view)."""
        t0 = time.perf_counter()
        result = self.detector.detect(frame)
        timings = dict(result.timings_ms)
        if self.tracker is not None:
            t1 = time.perf_counter()
            result = self.tracker.update(result, frame)
            timings['track'] = (time.perf_counter() - t1) * 1e3
        if depth is not None:
            result = locate(result.with_detections(result.detections, timings_ms=timings),
                            depth, self.config.depth)
            timings = dict(result.timings_ms)
        timings['total'] = (time.perf_counter() - t0) * 1e3
        return result.with_detections(result.detections, timings_ms=timings)

    def update_config(self, config: Config) -> None:
        """Apply run-time changeable settings (thresholds, class filter) to the next frame."""
        self.config = config
        self._detector_settings(config)

    def _detector_settings(self, config: Config) -> None:
        """The detector returns boxes down to the tracker's low score (its second
        association stage); the tracker publishes those below detector.conf only where
        they continue a confirmed track."""
        det = config.detector
        if self.tracker is not None:
            self.tracker.publish_conf = det.conf
            det = dataclasses.replace(det, conf=self.tracker.detector_conf(det.conf))
        self.detector.settings = det

    def reset_tracking(self, first_id: int = 1) -> None:
        """Forget every track; new ones are numbered from `first_id` (replay units)."""
        if self.tracker is not None:
            self.tracker.reset(first_id)

    def close(self) -> None:
        self.detector.close()


@dataclass(frozen=True)
class Reasoning:
    """One MLLM reasoning step on a frame."""

    refined: DetectionSet
    rejected: tuple[Detection, ...] = ()
    description: SceneDescription | None = None
    alerts: tuple[Alert, ...] = ()
    #: the looker's votes on this frame's boxes (core.reasoning.reinforce.Refinement.
    #: looker_counts); empty when the looker or the reinforcement is off
    looker_counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FrameUpdate:
    """What `ScenePipeline.on_frame` produced: the per-frame rule alerts, and whether a
    reasoning step is due (a node wakes its MLLM thread to call `step`)."""

    alerts: tuple[Alert, ...] = ()
    step_due: bool = False


@dataclass(frozen=True)
class Step:
    """One reasoning step that ran: why (`trigger`, core.reasoning.schedule.TRIGGERS), on
    which frame, its result, and how long it took (ms, wall clock)."""

    trigger: str
    frame: Frame
    reasoning: Reasoning
    elapsed_ms: float


class StepFailed(BackendError):
    """A reasoning step failed (the MLLM's error is the message and `__cause__`); the
    schedule backs off `retry_in_s` seconds (0 when it does not: every frame)."""

    def __init__(self, cause: Exception, trigger: str, retry_in_s: float):
        super().__init__(str(cause))
        self.trigger, self.retry_in_s = trigger, retry_in_s


class ScenePipeline:
    """Everything scene_node does, without ROS. Thread-safety: `on_frame` runs on one
    frame thread, `step` and `answer` on the MLLM thread; the backend serialises
    inference, the alert engine and the schedule lock themselves, and the schedule never
    starts a step while one runs.

    Frames are keyed by the order they reach `on_frame` (a header stamp may repeat: the
    per-image commands stamp every photo 0), and a step always takes the newest frame
    noted, however many came while the previous step ran (no backlog)."""

    def __init__(self, config: Config, *, backend: MllmBackend | None = None,
                 redetector: Detector | None = None, looker: Looker | None = None):
        self.config = config
        self.alerts = AlertEngine.from_file(config.alerts.rules_file or None) \
            if config.alerts.enabled else None
        # mllm.backend none: rule alerts only (no descriptions, VQA or feedback).
        self.reasoner = SceneReasoner(config, backend) \
            if backend is not None or config.mllm.backend != 'none' else None
        # The looker runs in the reasoning step only: no step, no looker.
        self.looker = (looker if looker is not None else Looker(config)) \
            if self.reasoner is not None and config.looker.enabled else None
        self.reinforcer = Reinforcer(config, self.reasoner.backend, self.reasoner.prompts,
                                     redetector, self.reasoner.rescore
                                     if self.reasoner.fusion is not None else None,
                                     looker=self.looker) \
            if self.reasoner is not None and config.reinforce.enabled else None
        self.schedule = ReasoningSchedule(config.scene, config.alerts)
        self.changes = SceneChanges(config.scene)
        self._lock = threading.Lock()  # _newest: the frame thread vs the MLLM thread
        self._newest: tuple[int, Frame, DetectionSet] | None = None  # (key, frame, ds)
        self._looker_totals: Counter = Counter()  # the looker's votes over all steps

    def fresh(self) -> 'ScenePipeline':
        """A ScenePipeline on the same models with empty state (alert debounce and
        cooldowns, scene-change memory, schedule): a new recording or camera."""
        return ScenePipeline(self.config,
                             backend=self.reasoner.backend if self.reasoner else None,
                             looker=self.looker)

    @property
    def model_name(self) -> str:
        return self.reasoner.model_name if self.reasoner is not None \
            else 'no MLLM (rules only)'

    @property
    def has_mllm(self) -> bool:
        """False with mllm.backend none: rule alerts only (no steps, no answers)."""
        return self.reasoner is not None

    @property
    def reinforces(self) -> bool:
        """Whether a step refines the detections (reinforce.enabled)."""
        return self.reinforcer is not None

    def summary(self) -> str:
        """One line for a log: model, alert rules, reinforcement."""
        rules = len(self.alerts.rules) if self.alerts is not None else 0
        return (f'{self.model_name}, {rules} alert rules, reinforcement '
                f'{"on" if self.reinforces else "off"}')

    def wake_period_s(self) -> float | None:
        """How often a caller with no new frames should try `step` (a rate step, or a
        change waiting out the minimum interval, can fall due between frames); None when
        nothing can."""
        return self.schedule.wake_period_s() if self.has_mllm else None

    def step_counts(self) -> dict[str, int]:
        """Steps started per trigger, and questions answered."""
        return self.schedule.counts()

    def alert_counts(self) -> dict[str, int]:
        """Alerts raised per rule."""
        return self.alerts.stats() if self.alerts is not None else {}

    def looker_counts(self) -> dict[str, int]:
        """The looker's votes over all steps so far (verified, relabelled, rejected, named,
        unsure boxes; objects added); {} without the looker or the reinforcement."""
        with self._lock:
            return dict(self._looker_totals)

    # ------------------------------------------------------------ the frame thread
    def on_frame(self, frame: Frame, ds: DetectionSet, now_s: float) -> FrameUpdate:
        """A new frame with its detections: the per-frame rule alerts, the scene-change
        check, and the frame noted as the newest for the next step."""
        alerts = tuple(self.frame_alerts(frame, ds, now_s))
        changed = self.scene_changed(ds, now_s)
        if not self.has_mllm:
            return FrameUpdate(alerts)
        with self._lock:  # noted and stored at once: a step never sees it un-noted
            key = self._newest[0] + 1 if self._newest is not None else 1
            self._newest = (key, frame, ds)
            due = self.schedule.note_frame(key, changed, now_s)
        return FrameUpdate(alerts, due)

    # ------------------------------------------------------------- the MLLM thread
    def step(self, now_s: float, clock: Callable[[], float] | None = None) -> Step | None:
        """The reasoning step on the newest frame noted, when the schedule starts one at
        `now_s`; None when none is due (or one is running). `clock` reads the caller's
        clock again when a step fails, for the back-off (a node: time.monotonic); None:
        a step takes no time on the caller's clock (message time). Raises StepFailed when
        the MLLM fails (the schedule backs off)."""
        if not self.has_mllm:
            return None
        with self._lock:
            newest = self._newest
            trigger = self.schedule.start(newest[0], now_s) if newest is not None else None
        if trigger is None:
            return None
        _, frame, ds = newest
        t0 = time.perf_counter()
        try:
            reasoning = self.reason(frame, ds, now_s)
        except Exception as e:  # a bug too must end the step, or none would start again
            retry_in_s = self.schedule.failed(clock() if clock is not None else now_s)
            if isinstance(e, MrMllmError):
                raise StepFailed(e, trigger, retry_in_s) from e
            raise
        self.schedule.succeeded()
        return Step(trigger, frame, reasoning, (time.perf_counter() - t0) * 1e3)

    def frame_alerts(self, frame: Frame, ds: DetectionSet, now_s: float) -> list[Alert]:
        """Per-frame rule alerts (cheap; every frame)."""
        if self.alerts is None:
            return []
        return self._with_evidence(self.alerts.evaluate(frame, ds, now_s,
                                                        types=PER_FRAME_TYPES), frame, ds)

    def _with_evidence(self, alerts: list[Alert], frame: Frame, ds: DetectionSet) -> list[Alert]:
        cfg = self.config.alerts
        return with_evidence(alerts, frame, ds, cfg.evidence_max_side, cfg.evidence_jpeg_quality)

    def scene_changed(self, ds: DetectionSet, now_s: float) -> bool:
        """True when this frame settles a change a person would name (the first frame, a
        class appearing or leaving, a class count that changed and stays, a track entering
        or leaving: core.reasoning.scene_change); `changes.last_reason` says which."""
        return bool(self.changes.update(ds, now_s))

    def reason(self, frame: Frame, ds: DetectionSet, now_s: float) -> Reasoning:
        """MLLM feedback on perception, then the description (citing the refined set),
        then re-detection of objects it named without a box, feedback alerts and the
        MLLM judgement. Raises BackendError when the MLLM fails."""
        if self.reasoner is None:
            return Reasoning(ds)
        looks = self.looker.look(frame, ds) if self.looker is not None else None
        if looks is not None:
            ds = looks.detections.with_detections(
                looks.detections.detections,
                timings_ms={**ds.timings_ms, **looks.timings_ms})
        refined, rejected, rejected_by, looker_counts = ds, (), (), {}
        if self.reinforcer is not None:
            refinement = self.reinforcer.refine(frame, ds, looks)
            refined, rejected = refinement.refined, refinement.rejected
            rejected_by = refinement.rejected_by
            if looks is not None:
                looker_counts = refinement.looker_counts()
                with self._lock:
                    self._looker_totals.update(looker_counts)
        description = self.reasoner.describe(frame, refined)
        if self.reinforcer is not None:
            added = self.reinforcer.redetect(frame, refined, description.grounded_text)
            if added:
                refined = refined.with_detections(refined.detections + tuple(added))
        alerts: list[Alert] = []
        if self.alerts is not None:
            alerts += self.alerts.evaluate(None, refined, now_s, rejected, types=FEEDBACK_TYPES,
                                           rejected_by=rejected_by)
            alerts += self._judge(frame, refined, now_s)
        alerts = self._with_evidence(alerts, frame, refined)
        return Reasoning(refined, tuple(rejected), description, tuple(alerts), looker_counts)

    def _judge(self, frame: Frame, ds: DetectionSet, now_s: float) -> list[Alert]:
        """The MLLM judgement through the mllm_judgement rule, when the schedule says."""
        rule = next((r for r in self.alerts.rules
                     if r.type == 'mllm_judgement' and r.enabled), None)
        if rule is None or not self.schedule.judgement_due(now_s):
            return []
        p_yes, reason = self.reasoner.judge(frame, ds, rule.params['min_probability'])
        return self.alerts.judgement(ds, p_yes, reason, frame.stamp_ns, frame.frame_id,
                                     self.reasoner.model_name, now_s=now_s)

    def stale_alerts(self, now_s: float, arrivals: FrameArrivals,
                     camera: str) -> list[Alert]:
        return self.alerts.check_stale(now_s, arrivals, camera) \
            if self.alerts is not None else []

    def answer(self, frame: Frame, ds: DetectionSet, question: str,
               stream: TokenStream | None = None) -> Answer:
        """A visual question about `frame`; `stream`: its text as it is written, and
        cancel (core.mllm.streaming)."""
        if self.reasoner is None:
            raise ValueError('no MLLM configured (mllm.backend is none)')
        self.schedule.note_question()
        if self.looker is not None:  # the looker's words and votes (no MLLM check)
            looks = self.looker.look(frame, ds)
            ds = self.reinforcer.apply_looks(looks) if self.reinforcer is not None \
                else looks.detections
        return self.reasoner.answer(frame, ds, question, stream)

    def close(self) -> None:
        if self.reasoner is not None:
            self.reasoner.close()


@dataclass(frozen=True)
class FrameResult:
    """Everything the in-process pipeline produced for one frame. `trigger`: why the
    frame was reasoned on (core.reasoning.schedule.TRIGGERS), None when it was not."""

    frame: Frame
    detections: DetectionSet
    refined: DetectionSet | None = None
    description: SceneDescription | None = None
    alerts: tuple[Alert, ...] = ()
    timings_ms: dict = field(default_factory=dict)
    trigger: str | None = None
    #: the looker's votes in this frame's reasoning step (Reasoning.looker_counts)
    looker_counts: dict = field(default_factory=dict)


class Pipeline:
    """Detection + scene pipeline in one process, reasoning when `scene.schedule` says:
    `mr-mllm describe` and the per-image evaluations (scene.describe_every_frame), replay
    and the alert evaluation (the live schedule, in message time)."""

    def __init__(self, config: Config, *, detector: Detector | None = None,
                 backend: MllmBackend | None = None, with_mllm: bool = True):
        self.config = config
        self.perception = PerceptionPipeline(config, detector)
        self.scene = ScenePipeline(config if with_mllm else with_changes(
            config, {'mllm.backend': 'none'}), backend=backend if with_mllm else None)

    @property
    def model_names(self) -> dict[str, str]:
        names = {'detector': self.perception.detector.name}
        if self.scene.reasoner is not None:
            names['mllm'] = self.scene.model_name
        return names

    def reset(self) -> None:
        """Empty scene state (debounce, cooldowns, scene-change memory, schedule) on the
        same models: the next frame starts a new recording."""
        self.scene = self.scene.fresh()

    def process(self, frame: Frame, now_s: float | None = None,
                describe: bool = True, depth: DepthFrame | None = None) -> FrameResult:
        """Detect, rule alerts, and a reasoning step when the schedule says so (and
        `describe`). Raises StepFailed (a BackendError) when that step fails (the schedule
        backs off)."""
        now_s = frame.stamp_ns / 1e9 if now_s is None else now_s
        t0 = time.perf_counter()
        ds = self.perception.detect(frame, depth)
        t1 = time.perf_counter()
        update = self.scene.on_frame(frame, ds, now_s)
        step = self.scene.step(now_s) if describe else None
        reasoning = step.reasoning if step is not None else Reasoning(ds)
        t2 = time.perf_counter()
        return FrameResult(frame, ds, reasoning.refined, reasoning.description,
                           update.alerts + reasoning.alerts,
                           {'perception': (t1 - t0) * 1e3, 'scene': (t2 - t1) * 1e3},
                           step.trigger if step is not None else None,
                           reasoning.looker_counts)

    def close(self) -> None:
        self.perception.close()
        self.scene.close()
