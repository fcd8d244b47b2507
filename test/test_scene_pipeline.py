"""ScenePipeline and its helpers without ROS: stamp pairing, scene-change detection,
question validation, the order of the reasoning step."""

import numpy as np
import pytest
from helpers.scripted_backend import ScriptedBackend

from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.pipeline import ScenePipeline
from mr_mllm_ros.core.reasoning.schedule import validate_question
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


def test_scene_change_is_new_class_set_or_new_track():
    sp = ScenePipeline(load_config(overrides={'mllm.backend': 'none'}))
    assert sp.scene_changed(_ds(['person']))                # first frame
    assert not sp.scene_changed(_ds(['person']))
    assert sp.scene_changed(_ds(['person', 'dog']))
    assert sp.scene_changed(_ds(['person', 'dog'], [1, 2]))  # tracks appear
    assert not sp.scene_changed(_ds(['person', 'dog'], [1, 2]))
    assert not sp.scene_changed(_ds(['person', 'dog'], [1, -1]))  # a track left: no news
    assert sp.scene_changed(_ds(['person', 'dog'], [1, 9]))      # a new track is


@pytest.mark.parametrize('question, timeout, ok', [
    ('What is here?', 5.0, True), ('', 5.0, False), ('  ', 5.0, False),
    ('x' * 1001, 5.0, False), ('a\ufffdb', 5.0, False), ('a\udcffb', 5.0, False),
    ('ok?', 0.0, False), ('ok?', float('inf'), False), ('ok?', float('nan'), False),
])
def test_validate_question(question, timeout, ok):
    assert (validate_question(question, timeout, 1000) == '') == ok


def test_reasoning_verifies_before_describing_so_the_text_cites_the_refined_set():
    backend = ScriptedBackend(
        yes=lambda r: 0.0 if '<obj0> dog' in r.user and 'Is <obj0>' in r.user else 0.9,
        reply=lambda r: '<ground>A person</ground><objects><obj0></objects>.'
        if r.task == 'describe' else '')
    config = load_config(overrides={'alerts.enabled': False})
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
