"""Distances in words downstream of positions: the perception-embedded prompt's object
lines, the grounding plan's descriptions, and "how far is the person?" answered from the
numbers and grounded to the box (core.reasoning). Without positions everything is as
before. No ROS, the template backend (no model)."""

import pytest

from mr_mllm_ros.core.config import load_config, with_changes
from mr_mllm_ros.core.reasoning import grounding_plan as plan
from mr_mllm_ros.core.reasoning.scene import SceneReasoner
from mr_mllm_ros.core.reasoning.vocabulary import load_vocabulary
from mr_mllm_ros.core.types import Box, Detection, DetectionSet

VOCAB = load_vocabulary()


def _ds(positions=True):
    p = (lambda *xyz: xyz) if positions else (lambda *xyz: None)
    return DetectionSet((
        Detection(0, 'person', 0.9, Box(100, 100, 200, 400), position=p(-0.5, 0.1, 2.3)),
        Detection(16, 'dog', 0.8, Box(400, 300, 500, 400), position=p(0.9, 0.3, 3.1)),
        Detection(41, 'cup', 0.7, Box(10, 10, 30, 30))), 640, 480, 5, 'cam')


@pytest.fixture(scope='module')
def reasoner():
    config = with_changes(load_config(), {'mllm.backend': 'template'})
    r = SceneReasoner(config)
    yield r
    r.close()


def test_prompt_object_lines_say_distance_only_with_a_position(reasoner):
    lines = [reasoner.prompts.object_line(_ds(), i) for i in range(3)]
    assert lines[0].endswith('; 2.4 m ahead, slightly left')
    assert lines[1].endswith('; 3.2 m ahead, slightly right')
    assert 'm ahead' not in lines[2]  # the cup has no position
    plain = [reasoner.prompts.object_line(_ds(False), i) for i in range(3)]
    assert [p + '; 2.4 m ahead, slightly left' for p in plain[:1]] == lines[:1]


def test_description_says_distances_grounded(reasoner):
    sd = reasoner.describe(None, _ds())
    assert 'A person is 2.4 m ahead, slightly left' in sd.text
    assert 'a dog is 3.2 m ahead, slightly right' in sd.text
    # The cup: image words, no depth. Places read in spoken order since 140cf49
    # ('top left', as prompts.spoken_region says them; was 'left top').
    assert 'a cup is at the top left' in sd.text
    cited = {p.text: p.indices for p in sd.grounded_text.phrases}
    assert cited == {'A person': (0,), 'a dog': (1,), 'a cup': (2,)}
    assert 'm ahead' not in reasoner.describe(None, _ds(False)).text


@pytest.mark.parametrize('question, text, indices', [
    ('How far is the person?', 'A person is 2.4 m ahead, slightly left.', (0,)),
    ('what is the distance to the dog', 'A dog is 3.2 m ahead, slightly right.', (1,)),
    ('how far away is the cup?',
     'A cup has no depth measurement, so I cannot tell how far away it is.', (2,)),
    ('how far is the cat?', 'I see no cat.', ()),
])
def test_how_far_is_answered_from_the_numbers(reasoner, question, text, indices):
    a = reasoner.answer(None, _ds(), question)
    assert a.text == text
    assert a.grounded_text.cited_indices() == set(indices)
    assert 'not called' in a.mllm_model


def test_other_questions_are_not_distance_questions():
    for q in ('how many people?', 'what is the person doing?', 'is there a dog?'):
        assert plan.distance_question(q, _ds(), VOCAB) is None


def test_repeated_distance_words_are_not_a_loop():
    text = ('A person is 2.3 m ahead, slightly left, a dog is 3.3 m ahead, slightly left, '
            'and a cat is 4.3 m ahead, slightly left.')
    assert plan.first_repeat(text) is None
    assert plan.first_repeat('the red car is here and the red car is here') is not None
