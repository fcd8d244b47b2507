"""MLLM -> perception feedback (core.reasoning.reinforce) with a scripted backend: verification
re-scores or drops uncertain boxes, unknown boxes get a label, objects the MLLM names
without a box are re-detected by an open-vocabulary detector."""

import re
from functools import partial

import numpy as np
import pytest
from helpers.builders import det, dset
from helpers.scripted_backend import ScriptedBackend

from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.reasoning.grounding import parse_grounded
from mr_mllm_ros.core.reasoning.prompts import PromptBuilder, load_template
from mr_mllm_ros.core.reasoning.reinforce import (
    Reinforcer,
    clean_label,
    crop_around,
    unresolved_names,
)
from mr_mllm_ros.core.types import Box, Detection, Frame, Source


_ds = partial(dset, w=640, h=480, stamp=5, model='yolo')


def _det(name, score, x=0, cid=0):
    """A 100 x 190 px box at `x`."""
    return det(name, (x, 10, x + 100, 200), score, class_id=cid)


def _reinforcer(backend, redetector=None, rescorer=None, **overrides):
    # The scripted backends stand in for any MLLM, most of them blind (sees_images False):
    # the mechanism is tested with blind verification on (the default asks only models
    # that see; test_a_blind_backend_is_not_asked_by_default).
    config = load_config(overrides={'reinforce.verify_blind': True, **overrides})
    prompts = PromptBuilder(load_template(config.mllm.prompt_template), config.mllm,
                            backend.count_tokens, backend.sees_images)
    return Reinforcer(config, backend, prompts, redetector, rescorer)


def _index_asked(request):
    return int(re.search(r'Is <obj(\d+)> really', request.user).group(1))


def test_confirmed_box_is_verified_and_rescored_rejected_box_dropped():
    p = {0: 0.95, 1: 0.05}
    backend = ScriptedBackend(yes=lambda r: p[_index_asked(r)])
    ds = _ds(_det('person', 0.45), _det('dog', 0.30, x=200), _det('car', 0.9, x=400))
    out = _reinforcer(backend).refine(None, ds)
    assert out.checked == {0: 0.95, 1: 0.05}  # the 0.9 car is outside the band
    assert [d.class_name for d in out.rejected] == ['dog']
    assert out.rejected_by == ('MLLM verification',)
    person, car = out.refined.detections
    assert person.verified and person.original_score == 0.45
    assert person.score == pytest.approx(0.5 * 0.45 + 0.5 * 0.95)
    assert not car.verified and car.score == 0.9 and car.original_score is None
    # one batched call for both checks
    assert len([r for r in backend.requests if r.task == 'verify']) == 2


def test_fusion_head_is_blended_into_the_check():
    """The fusion adapter's re-scoring head (SceneReasoner.rescore) as a second opinion:
    P = (1 - w) * P(yes) + w * P(right); a box the head does not score keeps P(yes)."""
    backend = ScriptedBackend(yes=lambda r: 0.5)
    calls = []

    def head(frame, ds):
        calls.append(len(ds))
        return {0: 0.9, 1: 0.1}

    frame = Frame(np.zeros((480, 640, 3), np.uint8), 5, 'cam')
    ds = _ds(_det('person', 0.45), _det('dog', 0.30, x=200), _det('cat', 0.35, x=400))
    out = _reinforcer(backend, rescorer=head, **{'reinforce.fusion_weight': 0.5}).refine(
        frame, ds)
    assert out.checked == pytest.approx({0: 0.7, 1: 0.3, 2: 0.5})
    assert calls == [3]
    assert [d.class_name for d in out.refined.detections if d.verified] == ['person']
    # weight 0 (the packaged default): the MLLM alone, the head is not run
    out = _reinforcer(backend, rescorer=head).refine(frame, ds)
    assert out.checked == {0: 0.5, 1: 0.5, 2: 0.5} and calls == [3]


def test_middle_probability_keeps_the_box_unverified():
    backend = ScriptedBackend(yes=lambda r: 0.4)
    out = _reinforcer(backend).refine(None, _ds(_det('person', 0.3)))
    (d,) = out.refined.detections
    assert not d.verified and d.score == pytest.approx(0.35) and not out.rejected


def test_max_checks_limits_the_batch_to_the_highest_scores():
    backend = ScriptedBackend(yes=lambda r: 0.9)
    ds = _ds(*[_det('person', 0.26 + 0.02 * i, x=i) for i in range(6)])
    out = _reinforcer(backend, **{'reinforce.max_checks': 2}).refine(None, ds)
    assert set(out.checked) == {4, 5}


def test_unknown_label_gets_an_open_vocabulary_name():
    backend = ScriptedBackend(reply=lambda r: 'A forklift.' if r.task == 'label' else '')
    ds = _ds(_det('unknown', 0.8, cid=3))
    out = _reinforcer(backend).refine(None, ds)
    (d,) = out.refined.detections
    assert (d.class_name, d.class_id, d.original_class_name) == ('forklift', -1, 'unknown')
    assert out.relabeled == (0,)


def test_vlm_backends_get_a_crop_text_backends_get_none():
    frame = Frame(np.zeros((480, 640, 3), np.uint8), 5, 'cam')
    ds = _ds(_det('person', 0.3))
    seen = ScriptedBackend(yes=lambda r: 0.9, sees_images=True)
    _reinforcer(seen).refine(frame, ds)
    crop = seen.requests[0].image
    assert crop is not None and crop.shape[0] < 480 and crop.shape[1] < 640
    blind = ScriptedBackend(yes=lambda r: 0.9)
    _reinforcer(blind).refine(frame, ds)
    assert blind.requests[0].image is None


def test_a_blind_backend_is_not_asked_by_default():
    ds = _ds(_det('person', 0.3), _det('tie', 0.4, x=200, cid=27))
    blind = ScriptedBackend(yes=lambda r: 0.05)
    out = _reinforcer(blind, **{'reinforce.verify_blind': False}).refine(None, ds)
    assert blind.requests == [] and out.checked == {}
    assert [d.score for d in out.refined] == [0.3, 0.4]  # kept as detected
    seen = ScriptedBackend(yes=lambda r: 0.05, sees_images=True)
    out = _reinforcer(seen, **{'reinforce.verify_blind': False}).refine(None, ds)
    assert len(out.checked) == 2 and len(out.refined) == 0  # both rejected


class _OpenVocab:
    """Open-vocabulary detector stand-in: finds whatever it is told to look for."""
    name = 'yolo-world (stand-in)'
    class_names = ()

    def __init__(self):
        self.asked = []

    def supports_text_classes(self):
        return True

    def set_text_classes(self, names):
        self.asked = list(names)

    def detect(self, frame):
        return _ds(*[Detection(i, n, 0.7, Box(300, 300, 400, 400))
                     for i, n in enumerate(self.asked)])


def test_objects_named_without_a_box_are_redetected():
    finder = _OpenVocab()
    r = _reinforcer(ScriptedBackend(), redetector=finder)
    ds = _ds(_det('person', 0.9))
    text = parse_grounded('<ground>A man</ground><objects><obj0></objects> near '
                          '<ground>a forklift</ground> outside', range(1))
    assert unresolved_names(text) == ['forklift']
    added = r.redetect(Frame(np.zeros((480, 640, 3), np.uint8), 5, 'c'), ds, text)
    assert finder.asked == ['forklift']
    assert [(d.class_name, d.source, d.class_id) for d in added] == \
        [('forklift', Source.MLLM, -1)]


def test_helpers():
    assert clean_label('  The forklift truck is yellow') == 'forklift truck'
    assert clean_label('42') == ''
    img = np.arange(100 * 100 * 3, dtype=np.uint8).reshape(100, 100, 3)
    c = crop_around(img, _det('x', 0.5), margin=0.0)
    assert c.shape == (90, 100, 3)
