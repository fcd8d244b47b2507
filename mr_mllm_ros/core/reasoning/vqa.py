"""A visual question's way through a node's MLLM thread: the request check, the queued
job, its progress as the answer is written, cancel, and freshness (how old the frame it
is about may be).

    validate_question   '' or why a question is refused
    VqaJob              one queued question: what the MLLM thread fills in; `cancel()`
    answer_job          the MLLM thread's part: the frame (fresh enough?), the answer
    AnswerProgress      stage + the answer's text so far, readable (markup removed)
    stale_reason        "stale: newest frame 4.2 s old"

Ages are seconds since the node received the frame (its own monotonic clock): camera and
node clocks need not agree, and recorded or simulated stamps work. Times are
time.monotonic() seconds. ROS-free: scene_node (ros/ask_flow.py) and tests drive it.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import MrMllmError
from ..mllm.streaming import GenerationCancelled, TokenStream
from ..types import Answer, DetectionSet, Frame
from .grounding import parse_grounded

# Stages of a question, in order (the AskScene action's feedback names them by number).
WAITING_FOR_FRAME, QUEUED, LOOKING, THINKING = ('waiting for a frame', 'queued', 'looking',
                                                'thinking')
STAGES = (WAITING_FOR_FRAME, QUEUED, LOOKING, THINKING)
CANCELLED = 'cancelled'


def validate_question(question: str, timeout_s: float, max_chars: int) -> str:
    """'' when the request is acceptable, else the reason it is refused."""
    if not isinstance(question, str) or any(0xD800 <= ord(c) <= 0xDFFF for c in question):
        return 'question is not valid UTF-8 text'
    if '\ufffd' in question:
        # rclpy decodes invalid UTF-8 bytes in a string field to U+FFFD.
        return 'question is not valid UTF-8 (it arrived with replacement characters)'
    if not question.strip():
        return 'empty question'
    if len(question) > max_chars:
        return f'question too long: {len(question)} characters (max {max_chars})'
    if not (isinstance(timeout_s, float) and math.isfinite(timeout_s) and timeout_s > 0):
        return f'timeout_s must be a positive number of seconds, got {timeout_s}'
    return ''


def stale_reason(age_s: float | None, newest_image_age_s: float | None = None,
                 max_age_s: float | None = None) -> str:
    """Why a question was refused for want of a fresh frame. `age_s`: the newest frame
    with detections (None: none yet); `newest_image_age_s`: the newest image at all, which
    tells stopped detections (images still fresh) from a stopped camera."""
    if age_s is None:
        text = 'stale: no frame with detections received yet'
    else:
        text = f'stale: newest frame {age_s:.1f} s old'
    if newest_image_age_s is None:
        return text + ' (no image received: is the camera publishing?)'
    if max_age_s is not None and newest_image_age_s <= max_age_s:
        return text + (f' (images keep arriving, newest {newest_image_age_s:.1f} s old, but '
                       'none newer has its detections: is perception_node running, or '
                       'behind?)')
    return text + f' (no image for {newest_image_age_s:.1f} s: is the camera publishing?)'


# ----------------------------------------------------------------------- progress

_PARTIAL_TAG = re.compile(r'<[^<>]*$')


def visible_text(raw: str, class_names=None) -> str:
    """The readable form of a reply in the grounding grammar as far as it is written:
    markup removed, a tag still being written at the end left out (the parser's rules:
    a bare <objN> reads as its class name)."""
    return parse_grounded(_PARTIAL_TAG.sub('', raw), None, class_names).text


class AnswerProgress:
    """Where a question is (stage, the frame it looks at) and the answer's text so far.
    The MLLM thread writes (through the job's TokenStream), the node's executor reads
    `snapshot()`; `on_change()` is called (on the writing thread) after every change."""

    def __init__(self, on_change: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self.on_change = on_change
        self._stage = WAITING_FOR_FRAME
        self._raw = ''
        self._names: list[str] | None = None
        self._stamp_ns = 0
        self._first_text_s: float | None = None
        self._version = 0

    def stage(self, name: str, stamp_ns: int | None = None,
              class_names=None) -> None:
        with self._lock:
            self._stage = name
            if stamp_ns is not None:
                self._stamp_ns = stamp_ns
            if class_names is not None:
                self._names = list(class_names)
            self._version += 1
        self._changed()

    def add_text(self, piece: str) -> None:
        with self._lock:
            self._raw += piece
            self._stage = THINKING
            if self._first_text_s is None and visible_text(self._raw, self._names):
                self._first_text_s = self._clock()
            self._version += 1
        self._changed()

    def snapshot(self) -> tuple[int, str, str, int]:
        """(version, stage, readable text so far, stamp of the frame looked at)."""
        with self._lock:
            return self._version, self._stage, visible_text(self._raw, self._names), \
                self._stamp_ns

    @property
    def first_text_s(self) -> float | None:
        """When the first readable text came (monotonic s), None before."""
        with self._lock:
            return self._first_text_s

    def stream(self) -> TokenStream:
        """A TokenStream that writes into this progress."""
        return TokenStream(self.add_text, lambda name: self.stage(name))

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


# ---------------------------------------------------------------------------- jobs

@dataclass(eq=False)  # a job is itself: InferenceWorker.withdraw finds it by identity
class VqaJob:
    """One queued question; the MLLM thread fills `answer` or `error`, then sets `done`.
    `stream` carries the cancel flag (and the text, when someone follows the progress);
    `max_age_s` (None: any age) applies to a question about the newest frame
    (`stamp_ns` 0). Times are time.monotonic() seconds."""

    question: str
    stamp_ns: int        # the frame asked about; 0 = the newest
    deadline: float
    received: float
    max_age_s: float | None = None
    stream: TokenStream = field(default_factory=TokenStream)
    progress: AnswerProgress | None = None
    done: threading.Event = field(default_factory=threading.Event)
    answer: Answer | None = None
    error: str = ''
    cancelled: bool = False
    frame_received_s: float | None = None  # when the node received the frame answered
    on_done: Callable[[], None] | None = None  # also called when finished (wakes a waiter)

    def finish(self) -> None:
        self.done.set()
        if self.on_done is not None:
            self.on_done()

    def cancel(self) -> None:
        """Stop it (any thread): a job not yet started is skipped, a generation stops
        within one decoding step; the MLLM thread then finishes it with 'cancelled'."""
        self.cancelled = True
        self.stream.cancel()


def answer_job(job: VqaJob, frame_for: Callable[[int], tuple[Frame, DetectionSet] | str],
               answer: Callable[..., Answer],
               on_bug: Callable[[Exception], None] | None = None,
               received_at: Callable[[int], float | None] | None = None,
               clock: Callable[[], float] = time.monotonic) -> None:
    """Answer `job` (on the MLLM thread): `frame_for(stamp_ns)` gives the frame and its
    detections or the reason there is none; `received_at(stamp_ns)` when the node
    received that frame (its age, for `max_age_s`); `answer(frame, ds, question,
    stream)` runs the MLLM. Always finishes it."""
    try:
        if job.cancelled:
            job.error = CANCELLED
            return
        if clock() >= job.deadline:
            job.error = 'timeout before the question was reached'
            return
        pair = frame_for(job.stamp_ns)
        if isinstance(pair, str):
            job.error = pair
            return
        frame, ds = pair
        job.frame_received_s = received_at(frame.stamp_ns) if received_at else None
        if job.stamp_ns == 0 and job.max_age_s is not None and \
                job.frame_received_s is not None:
            age = clock() - job.frame_received_s
            if age > job.max_age_s:  # no newer frame came while the question was queued
                job.error = (f'stale: newest frame {age:.1f} s old when the question\'s turn '
                             'came')
                return
        if job.progress is not None:
            job.progress.stage(LOOKING, frame.stamp_ns, [d.class_name for d in ds])
        job.answer = answer(frame, ds, job.question, job.stream)
    except GenerationCancelled:  # cancelled, or its waiter gave up (timeout)
        job.error = CANCELLED
    except MrMllmError as e:
        job.error = f'answering failed: {e}'
    except Exception as e:  # a bug must not leave the caller waiting out its timeout
        if on_bug is not None:
            on_bug(e)
        job.error = 'internal error'
    finally:
        job.finish()
