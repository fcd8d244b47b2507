"""One question's way through scene_node, shared by the `ask_scene` service
(ros/ask_service.py) and action (ros/ask_action.py): the checks, a fresh frame (a bounded
wait), the bounded queue to the MLLM thread, the answer awaited without holding the
executor, its progress as it is written, cancel and timeout.

Everything here runs on the node's one executor thread, as coroutines: a question waits on
its own `Wake`, which the MLLM thread (text written, job done), the frame thread (a new
pair), a cancel request or the desk's 10 Hz tick (deadlines) fires from wherever they
are. No question ever blocks the executor, and no timer is made per question.

Bounds: at most scene.vqa_queue_size questions wait, for a fresh frame or in the MLLM
queue together; more get "busy" at once, never after a wait (every coroutine runs on the
one executor thread, so a place counted at admission is still free when a question that
waited for its frame is queued). A cancelled question leaves the queue at once; a
cancelled answer stops within one decoding step (core.mllm.streaming).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from rclpy.task import Future

from ..core.mllm.streaming import TokenStream
from ..core.reasoning.vqa import (CANCELLED, QUEUED, WAITING_FOR_FRAME, AnswerProgress, VqaJob,
                                  stale_reason, validate_question)
from ..core.runtime.inference_worker import InferenceWorker
from . import conversions as conv

#: Period of the desk's timer: how late a deadline or the end of a frame wait is noticed.
TICK_S = 0.1
SHUTTING_DOWN = 'node is shutting down'


@dataclass(frozen=True)
class Question:
    text: str
    timeout_s: float | None          # None = scene.vqa_max_timeout_s
    stamp_ns: int = 0                # 0 = the newest frame
    max_age_s: float = 0.0           # 0 = scene.max_frame_age_s, negative = any age
    cameras: tuple[str, ...] = ()    # namespaces; empty = the node's own


@dataclass
class Outcome:
    """How a question ended: an answer (`job.answer`) or the reason there is none."""

    received: float
    error: str = ''
    job: VqaJob | None = None
    progress: AnswerProgress | None = None
    model: str = ''
    camera: str = ''
    finished: float = field(default_factory=time.monotonic)
    image_age_s: float = -1.0

    @property
    def success(self) -> bool:
        return not self.error and self.job is not None and self.job.answer is not None

    @property
    def latency_s(self) -> float:
        return self.finished - self.received

    @property
    def first_text_s(self) -> float:
        """Seconds from receipt to the first answer text; -1 when none came."""
        first = self.progress.first_text_s if self.progress is not None else None
        return first - self.received if first is not None else -1.0


class Cancel:
    """A cancel request for one question (set on the executor, e.g. by the action's
    cancel callback); wakes the question at once."""

    def __init__(self):
        self.requested = False
        self.reason = CANCELLED
        self._wake: Wake | None = None

    def request(self, reason: str = CANCELLED) -> None:
        if not self.requested:
            self.requested, self.reason = True, reason
        if self._wake is not None:
            self._wake.fire()


class Wake:
    """Wakes one coroutine on the node's executor from any thread. A fire while nobody
    waits is kept, so a wake-up between a check and the wait is never lost."""

    def __init__(self, node):
        self._node = node
        self._lock = threading.Lock()
        self._future: Future | None = None
        self._fired = False

    def fire(self) -> None:
        with self._lock:
            self._fired = True
            future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self) -> None:
        with self._lock:
            if self._fired:
                self._fired = False
                return
            future = self._future = Future(executor=self._node.executor)
            # set_result wakes the executor only through a done callback (rclpy schedules
            # it as a task): hence the no-op callback.
            future.add_done_callback(lambda _: None)
        await future
        with self._lock:
            self._fired = False


class _Flow:
    def __init__(self, node):
        self.wake = Wake(node)
        self.wake_at: float | None = None   # the tick fires the wake from then on
        self.frame_wait = False             # a new frame fires it


#: What a question needs from its node: (pipeline, frames, config), or why there is none.
StateFn = Callable[[], 'tuple | str']
#: on_progress(stage, text so far, stamp of the frame looked at, seconds since receipt)
ProgressFn = Callable[[str, str, int, float], None]


class AskDesk:
    """The questions of one scene_node. `state()` returns (ScenePipeline, SceneFrames,
    Config) while the node is active, else the reason it cannot answer."""

    def __init__(self, node, worker: InferenceWorker, state: StateFn, callback_group=None):
        self._node, self._worker, self._state = node, worker, state
        self._lock = threading.Lock()
        self._flows: set[_Flow] = set()
        self._frame_waiters = 0
        self._closed = False
        self._timer = node.create_timer(TICK_S, self._tick, callback_group=callback_group)

    def close(self) -> None:
        """Stop the tick; questions still in flight end ('node is shutting down')."""
        self._closed = True
        self._node.destroy_timer(self._timer)
        for flow in self._snapshot():
            flow.wake.fire()

    def frame_arrived(self) -> None:
        """A new frame with its detections (any thread): wakes questions waiting for one."""
        for flow in self._snapshot():
            if flow.frame_wait:
                flow.wake.fire()

    def in_flight(self) -> int:
        with self._lock:
            return len(self._flows)

    def full(self) -> bool:
        """True when a new question would get 'busy' now: as many wait (for a fresh frame
        or in the MLLM queue) as scene.vqa_queue_size allows."""
        state = self._state()
        return not isinstance(state, str) and self._full(state[2].scene)

    def _full(self, scene_config) -> bool:
        with self._lock:
            waiting = self._worker.pending() + self._frame_waiters
        return waiting >= scene_config.vqa_queue_size

    # ------------------------------------------------------------------ a question
    async def ask(self, q: Question, on_progress: ProgressFn | None = None,
                  cancel: Cancel | None = None) -> Outcome:
        received = time.monotonic()
        flow = _Flow(self._node)
        cancel = cancel if cancel is not None else Cancel()
        cancel._wake = flow.wake
        with self._lock:
            self._flows.add(flow)
        try:
            return await self._ask(q, received, flow, cancel, on_progress)
        finally:
            with self._lock:
                self._flows.discard(flow)

    async def _ask(self, q: Question, received: float, flow: _Flow, cancel: Cancel,
                   on_progress: ProgressFn | None) -> Outcome:
        state = self._state()
        if isinstance(state, str):
            return Outcome(received, state)
        pipeline, frames, config = state
        cfg = config.scene
        out = Outcome(received, model=pipeline.model_name, camera=self._node.get_namespace())
        reason = self._refusal(q, cfg, out.camera)
        if reason:
            out.error = reason
            return self._end(out)
        timeout = cfg.vqa_max_timeout_s if q.timeout_s is None else \
            min(q.timeout_s, cfg.vqa_max_timeout_s)
        deadline = received + timeout
        max_age = cfg.max_frame_age_s if q.max_age_s == 0 else \
            (None if q.max_age_s < 0 else q.max_age_s)
        progress = AnswerProgress(flow.wake.fire) if on_progress is not None else None
        sent = [-1, None]  # the progress version and what was last sent

        def report() -> None:
            if progress is None:
                return
            version, stage, text, stamp = progress.snapshot()
            if version != sent[0]:
                sent[0] = version
                if (stage, text, stamp) != sent[1]:  # markup alone changes no text
                    sent[1] = (stage, text, stamp)
                    on_progress(stage, text, stamp, time.monotonic() - received)

        if self._full(cfg):  # busy at once, never after a wait
            out.error = 'busy'
            return self._end(out)
        if q.stamp_ns == 0 and max_age is not None:
            reason = await self._fresh_frame(frames, max_age, received, deadline, cfg, flow,
                                             cancel, report)
            if reason:
                out.error = reason
                return self._end(out)
        job = VqaJob(q.text, q.stamp_ns, deadline, received,
                     max_age if q.stamp_ns == 0 else None,
                     progress.stream() if progress is not None else TokenStream(),
                     progress, on_done=flow.wake.fire)
        if not self._worker.submit(job, cfg.vqa_queue_size):
            out.error = 'busy'
            return self._end(out)
        if progress is not None:
            progress.stage(QUEUED)
        flow.wake_at = deadline
        while not job.done.is_set():
            if self._closed:
                job.cancel()
                out.error = SHUTTING_DOWN
                return self._end(out)
            if cancel.requested and not job.cancelled:
                job.cancel()  # running: stops within a decoding step and finishes the job
                if self._worker.withdraw(job):
                    job.finish()
            if time.monotonic() >= deadline:
                job.cancel()  # frees the MLLM; nobody waits for this answer any more
                self._worker.withdraw(job)
                out.error = f'timeout after {deadline - received:.1f} s'
                return self._end(out)
            report()
            await flow.wake.wait()
        report()
        out.job, out.progress = job, progress
        if job.cancelled and job.answer is None:
            out.error = cancel.reason if cancel.requested else CANCELLED
        elif job.answer is None:
            out.error = job.error or 'no answer'
        out = self._end(out)
        if job.frame_received_s is not None:
            out.image_age_s = out.finished - job.frame_received_s
        return out

    @staticmethod
    def _end(out: Outcome) -> Outcome:
        out.finished = time.monotonic()
        return out

    @staticmethod
    def _refusal(q: Question, cfg, camera: str) -> str:
        if q.cameras and _ns(camera) not in {_ns(c) for c in q.cameras}:
            return (f'this scene_node serves camera {_ns(camera)}, not '
                    f'{", ".join(sorted({_ns(c) for c in q.cameras}))}: ask '
                    f'<camera>/ask_scene')
        if not math.isfinite(q.max_age_s):
            return f'max_age_s must be a number of seconds, got {q.max_age_s}'
        timeout = cfg.vqa_max_timeout_s if q.timeout_s is None else float(q.timeout_s)
        return validate_question(q.text, timeout, cfg.max_question_chars)

    async def _fresh_frame(self, frames, max_age: float, received: float, deadline: float,
                           cfg, flow: _Flow, cancel: Cancel, report: Callable[[], None]) -> str:
        """'' once the newest frame with detections is at most `max_age` s old (waiting for
        one at most scene.fresh_frame_wait_s; `report()` says it waits), else why not
        (stale, cancelled, shutting down). A waiting question counts against the queue."""
        age = frames.newest_age(time.monotonic())
        if age is not None and age <= max_age:
            return ''
        with self._lock:
            self._frame_waiters += 1
        flow.frame_wait = True
        flow.wake_at = min(deadline, received + cfg.fresh_frame_wait_s)
        report()  # stage: waiting for a frame
        try:
            while True:
                now = time.monotonic()
                age = frames.newest_age(now)
                if age is not None and age <= max_age:
                    return ''
                if cancel.requested:
                    return cancel.reason
                if self._closed:
                    return SHUTTING_DOWN
                if now >= flow.wake_at:
                    return stale_reason(age, frames.newest_image_age(now), max_age)
                await flow.wake.wait()
        finally:
            flow.frame_wait = False
            with self._lock:
                self._frame_waiters -= 1

    # ------------------------------------------------------------------- the tick
    def _snapshot(self) -> list[_Flow]:
        with self._lock:
            return list(self._flows)

    def _tick(self) -> None:
        now = time.monotonic()
        for flow in self._snapshot():
            if flow.wake_at is not None and now >= flow.wake_at:
                flow.wake.fire()


def _ns(namespace: str) -> str:
    return '/' + namespace.strip('/')


def fill_answer(msg, out: Outcome):
    """The fields the AskScene service response and action result share."""
    msg.success, msg.error = out.success, out.error
    msg.mllm_model = out.model
    msg.latency_s = out.latency_s
    msg.image_age_s = out.image_age_s
    if out.success:
        a = out.job.answer
        msg.answer, msg.raw_answer = a.grounded_text.text, a.grounded_text.raw_text
        msg.grounding = conv.phrases_to_msg(a.grounded_text.phrases)
        msg.detections = [conv.detection_to_msg(d) for d in a.detections]
        msg.image_stamp = conv.ns_to_stamp(a.detections.stamp_ns)
        msg.mllm_model = a.mllm_model
    return msg


def refuse_queued(worker: InferenceWorker) -> None:
    """Answer whoever is still waiting in the queue: the node is going down."""
    for job in worker.drain():
        job.error = SHUTTING_DOWN
        job.finish()


__all__ = ['AskDesk', 'Cancel', 'Outcome', 'Question', 'fill_answer', 'refuse_queued',
           'WAITING_FOR_FRAME']
