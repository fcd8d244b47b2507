"""core.reasoning.schedule without ROS: when a reasoning step runs (rate, change, minimum interval,
back-off, every frame, judgement rate), and Pipeline.process following it on the
caller's clock."""

import numpy as np
import pytest
from helpers.scripted_backend import ScriptedBackend

from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.errors import BackendError
from mr_mllm_ros.core.pipeline import Pipeline, StepFailed
from mr_mllm_ros.core.reasoning.schedule import MAX_BACKOFF_S, ReasoningSchedule
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame


def schedule(**scene):
    config = load_config(overrides={f'scene.{k}': v for k, v in scene.items()})
    return ReasoningSchedule(config.scene, config.alerts)


def run(s, frames, period_s=0.5, changes=()):
    """Feed `frames` frames `period_s` apart (frame k changes the scene when k is in
    `changes`); returns {time: trigger} of the steps started."""
    started = {}
    for k in range(frames):
        now = k * period_s
        s.note_frame(k + 1, k in changes, now)
        trigger = s.start(k + 1, now)
        if trigger:
            started[now] = trigger
            s.succeeded()
    return started


def test_default_schedule_rate_and_change():
    s = schedule()  # YAML defaults: 0.2 Hz, on change, min 2 s
    # the change at 6.5 s comes 1.5 s after the step at 5.0 s: it waits for 7.0 s
    assert run(s, 30, changes={0, 13}) == {0.0: 'change', 5.0: 'rate', 7.0: 'change',
                                           12.0: 'rate'}
    s = schedule()
    # rate counts from the last step, whatever started it
    assert run(s, 30, changes={0, 5}) == {0.0: 'change', 2.5: 'change', 7.5: 'rate',
                                          12.5: 'rate'}
    assert s.counts() == {'change': 2, 'rate': 2, 'every_frame': 0, 'question': 0}


def test_deferred_change_runs_when_the_interval_has_passed():
    s = schedule(description_rate_hz=0.0, min_description_interval_s=2.0)
    # change at 0 and at 1.0 s: the second waits until 2.0 s, then runs on that frame
    assert run(s, 10, changes={0, 2}) == {0.0: 'change', 2.0: 'change'}


def test_rate_zero_and_no_change_trigger_never_runs():
    s = schedule(description_rate_hz=0.0, describe_on_change=False)
    assert run(s, 20, changes={0, 5}) == {}


def test_never_twice_on_one_frame_and_note_frame_says_when_due():
    s = schedule(min_description_interval_s=0.0)
    assert s.note_frame(1, True, 0.0)
    assert s.start(1, 0.0) == 'change'
    s.succeeded()
    assert s.start(1, 100.0) is None          # same frame, however late
    assert not s.note_frame(2, False, 1.0)    # nothing due: no need to wake anyone
    assert s.note_frame(3, False, 5.0)        # rate due
    assert s.start(3, 5.0) == 'rate'


def test_never_starts_while_a_step_runs():
    s = schedule(min_description_interval_s=0.0, describe_every_frame=True)
    s.note_frame(1, True, 0.0)
    assert s.start(1, 0.0) == 'every_frame'
    assert s.note_frame(2, True, 0.1)         # due: the caller may wake its thread ...
    assert s.start(2, 0.1) is None            # ... but step 1 has not ended
    s.succeeded()
    assert s.start(2, 0.2) == 'every_frame'
    assert s.start(3, 0.3) is None
    s.failed(0.3)                             # a failure ends the step too
    assert s.start(3, 0.3) == 'every_frame'


def test_a_change_on_a_frame_already_reasoned_on_is_served():
    # a node's MLLM thread may start a step on a frame before its frame thread notes it
    s = schedule(min_description_interval_s=0.0, description_rate_hz=1.0)
    s.note_frame(1, True, 0.0)
    assert s.start(1, 0.0) == 'change'
    s.succeeded()
    assert s.start(2, 1.0) == 'rate'          # frame 2 reasoned on before it was noted
    s.succeeded()
    assert not s.note_frame(2, True, 1.0)     # its change is served: nothing pending
    s.note_frame(3, False, 1.5)
    assert s.start(3, 1.5) is None


def test_back_off_doubles_to_thirty_seconds_and_resets_on_success():
    s = schedule(min_description_interval_s=0.0, description_rate_hz=30.0)
    delays, now, key = [], 0.0, 0
    for _ in range(8):
        key += 1
        s.note_frame(key, False, now)
        assert s.start(key, now) == 'rate'
        delay = s.failed(now)
        delays.append(delay)
        key += 1
        s.note_frame(key, False, now + delay - 0.01)
        assert s.start(key, now + delay - 0.01) is None  # still backing off
        now += delay
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30] and MAX_BACKOFF_S == 30
    key += 1
    s.note_frame(key, False, now)
    assert s.start(key, now) == 'rate'
    s.succeeded()
    assert s.failures == 0
    s.note_frame(key + 1, False, now + 0.05)
    assert s.start(key + 1, now + 0.05) == 'rate'  # no back-off left


def test_every_frame_ignores_rate_interval_and_back_off():
    s = schedule(describe_every_frame=True)
    assert run(s, 5, period_s=0.01) == {k * 0.01: 'every_frame' for k in range(5)}
    assert s.failed(1.0) == 0.0
    s.note_frame(99, False, 1.0)
    assert s.start(99, 1.0) == 'every_frame'


def test_judgement_at_most_its_rate():
    config = load_config(overrides={'alerts.mllm_judgement': True,
                                    'alerts.judgement_rate_hz': 0.5})
    s = ReasoningSchedule(config.scene, config.alerts)
    assert [t for t in (0.0, 1.0, 1.9, 2.0, 3.0, 4.5) if s.judgement_due(t)] == [0.0, 2.0, 4.5]
    off = ReasoningSchedule(config.scene, load_config().alerts)  # mllm_judgement false
    assert not off.judgement_due(0.0)


# ------------------------------------------------------------------ Pipeline.process

class ClassesDetector:
    """Stub detector: the classes are written into the frame's first pixel row
    (pixel value k -> class 'c<k>'), so a test decides when the scene changes."""

    name = 'classes stub'
    settings = None

    def detect(self, frame):
        k = int(frame.image[0, 0, 0])
        dets = (Detection(0, f'c{k}', 0.9, Box(0, 0, 4, 4)),) if k else ()
        return DetectionSet(dets, frame.width, frame.height, frame.stamp_ns, frame.frame_id,
                            self.name, {})

    def close(self):
        pass


def frame(k, scene, stamp_ns=0):
    img = np.zeros((8, 8, 3), np.uint8)
    img[0, 0, 0] = scene
    return Frame(img, stamp_ns, 'cam')


def describing(**overrides):
    backend = ScriptedBackend(reply=lambda r: '<ground>It</ground><objects><obj0></objects>.'
                              if r.task == 'describe' else 'fine')
    config = load_config(overrides={'alerts.enabled': False, 'reinforce.enabled': False,
                                    **overrides})
    return Pipeline(config, detector=ClassesDetector(), backend=backend), backend


def test_pipeline_reasons_when_the_schedule_says_in_message_time():
    p, backend = describing()
    # 30 Hz for 12 s: scene 1 until 4.5 s, then scene 2; header stamps all 0 (a frame
    # counter, not the stamp, tells frames apart)
    triggers = {}
    for k in range(360):
        r = p.process(frame(k, 1 if k < 135 else 2), now_s=k / 30)
        assert (r.description is not None) == (r.trigger is not None)
        if r.trigger:
            triggers[round(k / 30, 3)] = r.trigger
    # The switch at 4.5 s is a change once it held (scene.change_hold_s 2 s: scene 2 in
    # 75 % of the last 2 s) at 6.0 s, 1 s after the 5 s rate step: it waits for the 2 s
    # interval (7.0 s), then runs on the newest frame.
    assert triggers == {0.0: 'change', 5.0: 'rate', 7.0: 'change'}
    assert sum(1 for r in backend.requests if r.task == 'describe') == 3
    assert p.scene.step_counts()['rate'] == 1


def test_describe_every_frame_reasons_on_each_frame():
    p, backend = describing(**{'scene.describe_every_frame': True})
    assert all(p.process(frame(k, 1), now_s=0.0).trigger == 'every_frame' for k in range(5))
    assert sum(1 for r in backend.requests if r.task == 'describe') == 5


def test_a_failing_step_backs_off_in_message_time_and_reset_forgets_it():
    p, backend = describing()
    calls = []

    def broken(request):
        calls.append(request)
        raise BackendError('server down')
    backend._reply = broken
    with pytest.raises(StepFailed) as failed:
        p.process(frame(0, 1), now_s=0.0)
    assert (failed.value.trigger, failed.value.retry_in_s) == ('change', 1.0)
    assert isinstance(failed.value, BackendError) and str(failed.value) == 'server down'
    # the next 1 s (back-off) and then the 2 s minimum interval: no step
    assert all(p.process(frame(k, 2), now_s=k * 0.1).trigger is None for k in range(1, 20))
    with pytest.raises(BackendError):
        p.process(frame(20, 2), now_s=2.0)  # the change of frame 1 was kept for it
    assert len(calls) == 2
    p.reset()
    with pytest.raises(BackendError):
        p.process(frame(21, 2), now_s=2.1)  # new recording: first frame is a change


def test_judgement_prompt_comes_from_the_reasoner():
    backend = ScriptedBackend(reply=lambda r: 'a fallen person' if r.task == 'judge' else
                              '<ground>It</ground><objects><obj0></objects>.',
                              yes=lambda r: 0.9)
    config = load_config(overrides={'reinforce.enabled': False, 'alerts.mllm_judgement': True,
                                    'alerts.judgement_rate_hz': 1.0})
    p = Pipeline(config, detector=ClassesDetector(), backend=backend)
    raised = [a for k in range(6) for a in p.process(frame(k, 1 + k % 2), now_s=k * 1.0).alerts
              if a.rule == 'mllm_judgement']
    # packaged rule: min_probability 0.7 (its YAML default), debounce 2 of 3, cooldown 15 s
    assert len(raised) == 1 and 'a fallen person' in raised[0].message
    assert [r.task for r in backend.requests].count('judge') >= 2
