"""ScenePipeline and its helpers without ROS: stamp pairing, scene-change detection,
question validation, the order of the reasoning step."""

import threading

import numpy as np
import pytest
from helpers.scripted_backend import ScriptedBackend

from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.errors import BackendError
from mr_mllm_ros.core.pipeline import ScenePipeline, StepFailed
from mr_mllm_ros.core.reasoning.vqa import validate_question
from mr_mllm_ros.core.runtime.pairing import StampPairer
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame


def test_pairer_pairs_by_stamp_in_either_order_and_is_bounded():
    p = StampPairer(capacity=3)
    assert not p.add_frame(1, 'f1')
    assert p.add_detections(1, 'd1')          # detections after the frame
    assert not p.add_detections(2, 'd2')
    assert p.add_frame(2, 'f2')               # frame after the detections
    assert p.latest() == (2, 'f2', 'd2') and p.get(1) == ('f1', 'd1')
    for s in range(3, 8):
        p.add_frame(s, f'f{s}')
    assert p.get(1) is None                   # evicted
    assert p.unpaired_dropped == 2            # frames 3 and 4 never got detections
    assert p.stamps() == []


def _ds(names, tracks=None, stamp=1):
    tracks = tracks or [-1] * len(names)
    return DetectionSet(tuple(Detection(0, n, 0.9, Box(0, 0, 10, 10), track_id=t)
                              for n, t in zip(names, tracks)), 640, 480, stamp, 'c')


def test_scene_change_is_a_change_that_holds_not_a_new_track_id():
    """ScenePipeline asks core.reasoning.scene_change (test_scene_change.py has the
    rules): the first frame, then a class that stays; id churn is no change."""
    sp = ScenePipeline(load_config(overrides={'mllm.backend': 'none',
                                              'scene.change_hold_s': 1.0}))
    assert sp.scene_changed(_ds(['person'], [1]), 0.0)                     # first frame
    changed = [sp.scene_changed(_ds(['person'], [2 + k]), 0.1 * k) for k in range(1, 10)]
    assert not any(changed)                                 # a new id on every frame
    changed = [sp.scene_changed(_ds(['person', 'dog']), 1.0 + 0.1 * k) for k in range(12)]
    assert changed.count(True) == 1 and sp.changes.last_reason == 'dog appeared'


@pytest.mark.parametrize('question, timeout, ok', [
    ('What is here?', 5.0, True), ('', 5.0, False), ('  ', 5.0, False),
    ('x' * 1001, 5.0, False), ('a\ufffdb', 5.0, False), ('a\udcffb', 5.0, False),
    ('ok?', 0.0, False), ('ok?', float('inf'), False), ('ok?', float('nan'), False),
])
def test_validate_question(question, timeout, ok):
    assert (validate_question(question, timeout, 1000) == '') == ok


def test_reasoning_verifies_before_describing_so_the_text_cites_the_refined_set():
    backend = ScriptedBackend(
        yes=lambda r: 0.0 if 'dog (1):\n<obj0>' in r.user and 'Is <obj0>' in r.user else 0.9,
        reply=lambda r: '<ground>A person</ground><objects><obj0></objects>.'
        if r.task == 'describe' else '')
    # the scripted MLLM is blind: asked to verify only with reinforce.verify_blind
    config = load_config(overrides={'alerts.enabled': False, 'reinforce.verify_blind': True})
    sp = ScenePipeline(config, backend=backend)
    ds = DetectionSet((Detection(0, 'dog', 0.3, Box(0, 0, 50, 50)),
                       Detection(1, 'person', 0.45, Box(100, 0, 200, 200))), 640, 480, 7, 'c')
    frame = Frame(np.zeros((480, 640, 3), np.uint8), 7, 'c')
    out = sp.reason(frame, ds, now_s=1.0)
    assert [d.class_name for d in out.refined] == ['person']     # dog rejected
    assert [d.class_name for d in out.rejected] == ['dog']
    assert out.description.detections is out.refined or \
        [d.class_name for d in out.description.detections] == ['person']
    assert out.description.grounded_text.phrases[0].indices == (0,)
    tasks = [r.task for r in backend.requests]
    assert tasks.index('verify') < tasks.index('describe')


def test_rules_only_pipeline_has_no_reasoner():
    sp = ScenePipeline(load_config(overrides={'mllm.backend': 'none'}))
    assert sp.reasoner is None and sp.model_name == 'no MLLM (rules only)'
    out = sp.reason(Frame(np.zeros((4, 4, 3), np.uint8), 1, 'c'), _ds(['x']), 0.0)
    assert out.description is None
    with pytest.raises(ValueError):
        sp.answer(None, _ds(['x']), 'q?')


# ------------------------------------------------------- on_frame / step (both callers)

def _frame(stamp):
    return Frame(np.zeros((8, 8, 3), np.uint8), stamp, 'c')


def _describing(reply):
    config = load_config(overrides={'alerts.enabled': False, 'reinforce.enabled': False,
                                    'scene.describe_every_frame': True})
    return ScenePipeline(config, backend=ScriptedBackend(reply=reply))


def test_a_step_takes_the_newest_frame_and_none_starts_while_one_runs():
    entered, release = threading.Event(), threading.Event()

    def reply(request):
        if request.task == 'describe' and not release.is_set():
            entered.set()
            assert release.wait(10.0)
        return '<ground>It</ground><objects><obj0></objects>.'
    sp = _describing(reply)
    assert sp.on_frame(_frame(1), _ds(['person'], stamp=1), 0.0).step_due
    steps = []
    mllm = threading.Thread(target=lambda: steps.append(sp.step(0.0)))
    mllm.start()
    assert entered.wait(10.0)                  # the step on frame 1 runs ...
    for stamp in (2, 3, 4):                    # ... while three frames come
        assert sp.on_frame(_frame(stamp), _ds(['person'], stamp=stamp), 0.1).step_due
    assert sp.step(0.1) is None                # a second caller starts none meanwhile
    release.set()
    mllm.join(10.0)
    assert not mllm.is_alive() and steps[0].frame.stamp_ns == 1
    newest = sp.step(0.2)                      # no backlog: frame 4, then nothing
    assert newest.frame.stamp_ns == 4 and newest.trigger == 'every_frame'
    assert newest.reasoning.description is not None and sp.step(0.3) is None
    assert sp.step_counts()['every_frame'] == 2


def test_repeated_stamps_are_still_new_frames():
    sp = _describing(lambda r: '<ground>It</ground><objects><obj0></objects>.')
    for k in range(3):  # `mr-mllm describe` stamps every photo 0
        sp.on_frame(_frame(0), _ds(['person'], stamp=0), float(k))
        assert sp.step(float(k)) is not None


def test_a_failing_step_says_why_and_a_bug_does_not_stall_the_schedule():
    calls = []

    def reply(request):
        calls.append(request.task)
        if len(calls) == 1:
            raise BackendError('server down')
        if len(calls) == 2:
            raise KeyError('a bug')
        return '<ground>It</ground><objects><obj0></objects>.'
    sp = _describing(reply)
    sp.on_frame(_frame(1), _ds(['person']), 0.0)
    with pytest.raises(StepFailed, match='server down') as failed:
        sp.step(0.0, clock=lambda: 5.0)
    assert failed.value.trigger == 'every_frame' and failed.value.retry_in_s == 0.0
    sp.on_frame(_frame(2), _ds(['person'], stamp=2), 1.0)
    with pytest.raises(KeyError):
        sp.step(1.0)
    sp.on_frame(_frame(3), _ds(['person'], stamp=3), 2.0)
    assert sp.step(2.0).frame.stamp_ns == 3


def test_rules_only_frames_raise_alerts_and_never_a_step():
    sp = ScenePipeline(load_config(overrides={'mllm.backend': 'none'}))
    update = sp.on_frame(_frame(1), _ds(['person']), 0.0)
    assert not update.step_due and sp.step(0.0) is None and not sp.has_mllm
    assert sp.wake_period_s() is None and 'no MLLM' in sp.summary()
