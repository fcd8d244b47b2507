"""The looker's words where people read them: each object line of the prompt says what
the crop looks like (and a person's posture), a line says what the whole image looks
like; the grounding plan says only postures the looker saw; "what is the person
holding?" is answered from the looker's labels on the real photo, grounded to the box."""

import pytest

from mr_mllm_ros.core.assets.sample_images import load_sample
from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.looking.looker import Looker
from mr_mllm_ros.core.pipeline import ScenePipeline
from mr_mllm_ros.core.reasoning import grounding_plan as plan
from mr_mllm_ros.core.reasoning.prompts import PromptBuilder, load_template
from mr_mllm_ros.core.reasoning.vocabulary import load_vocabulary
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame


def _set(*dets, looks=()):
    return DetectionSet(tuple(dets), 1000, 1000, 0, 'cam', 'test', looks_like=looks)


def test_object_lines_and_the_image_line_say_what_the_looker_saw():
    config = load_config()
    prompts = PromptBuilder(load_template(config.mllm.prompt_template), config.mllm,
                            lambda t: len(t.split()), False)
    ds = _set(Detection(41, 'cup', 0.95, Box(100, 100, 400, 400),
                        looks_like=(('espresso', 0.86), ('cup', 0.21))),
              Detection(0, 'person', 0.9, Box(500, 100, 900, 500), posture='lying',
                        posture_score=0.6),
              looks=(('fox squirrel', 0.56),))
    block, chosen = prompts.object_block(ds)
    # (scene_v2 puts a class header before each class's lines)
    cup_line, person_line, image_line = [line for line in block.split('\n')
                                         if not line.endswith('):')]
    assert cup_line.endswith('; looks like: espresso 86%, cup 21%')
    assert person_line.endswith('; lying') and 'looks like' not in person_line
    assert image_line == 'The whole image looks like: fox squirrel 56%'
    assert chosen == (0, 1)
    # no objects: the image line still tells a text model what is there
    block, chosen = prompts.object_block(_set(looks=(('tripod', 0.93),)))
    assert block == 'none\nThe whole image looks like: tripod 93%' and chosen == ()


def _person(posture):
    return Detection(0, 'person', 0.9, Box(0, 300, 300, 700), posture=posture,
                     posture_score=0.6 if posture else 0.0)


def test_the_plan_says_a_posture_only_when_the_looker_saw_it():
    vocab = load_vocabulary()
    (lying,) = plan.plan_mentions(_set(_person('lying')), [0], vocab)
    assert lying.where == 'lying at the left'
    sentence = plan.template_sentence([lying])
    assert 'A person</ground><objects><obj0></objects> is lying at the left.' in sentence
    (upright,) = plan.plan_mentions(_set(_person('upright')), [0], vocab)
    assert upright.where == 'at the left'  # 'upright' may be a portrait: not 'standing'
    # the model's words: a posture the looker did not see is replaced by the template's
    assert plan._fit(' is lying at the left', lying) == ' is lying at the left'
    assert plan._fit(' is standing at the left', lying) == ''
    assert plan._fit(' is sitting at the left', upright) == ''
    assert plan._fit(' waves at the left', upright) == ' waves at the left'


def test_the_model_says_what_an_object_is_only_in_the_lookers_words():
    """'is a coffee' of the cup whose crop looks like an espresso / coffee mug; not of the
    dining table next to it (the model copies the clause before: it cannot see)."""
    vocab = load_vocabulary()
    cup = Detection(41, 'cup', 0.9, Box(170, 10, 410, 240),
                    looks_like=(('espresso', 0.86), ('coffee mug', 0.02)))
    table = Detection(60, 'dining table', 0.76, Box(0, 0, 600, 400))
    ds = DetectionSet((cup, table), 600, 400)
    m_cup, m_table = plan.plan_mentions(ds, [0, 1], vocab)
    assert plan.own_label_words(ds, [0]) == {'espresso', 'coffee', 'mug'}
    assert plan._fit(' is a coffee', m_cup, plan.own_label_words(ds, [0])) == ' is a coffee'
    assert plan._fit(' is an espresso', m_cup, plan.own_label_words(ds, [0])) \
        == ' is an espresso'
    assert plan._fit(' is a coffee', m_table, plan.own_label_words(ds, [1])) == ''
    assert plan._fit(' is the big one', m_cup, plan.own_label_words(ds, [0])) == ''


@pytest.fixture(scope='module')
def pipeline():
    config = load_config(overrides={'mllm.backend': 'template'})
    return ScenePipeline(config, looker=Looker(config))


def _ask(pipeline, sample, dets, question):
    image = load_sample(sample)
    ds = DetectionSet(tuple(dets), image.shape[1], image.shape[0], 0, 'cam', 'test')
    return pipeline.answer(Frame(image, 0, 'cam'), ds, question)


def test_what_is_the_person_holding(pipeline, labels):
    man = next(Box(*b) for c, b in labels['camera'] if c == 'person')
    answer = _ask(pipeline, 'camera', [Detection(0, 'person', 0.92, man)],
                  'What is the person holding?')
    assert answer.text == 'The person is seen with a tripod.'
    (phrase,) = answer.grounded_text.phrases
    assert phrase.text == 'The person' and phrase.indices == (0,)
    assert answer.detections[0].looks_like[0][0] == 'tripod'
    assert "looker's labels" in answer.mllm_model


def test_what_does_the_cup_look_like(pipeline, labels):
    cup = next(Box(*b) for c, b in labels['coffee'] if c == 'cup')
    answer = _ask(pipeline, 'coffee', [Detection(41, 'cup', 0.95, cup)],
                  'What does the cup look like?')
    assert answer.text == 'The cup looks like an espresso.'
    assert answer.grounded_text.phrases[0].indices == (0,)


def test_appearance_of_something_not_there(pipeline, labels):
    cup = next(Box(*b) for c, b in labels['coffee'] if c == 'cup')
    answer = _ask(pipeline, 'coffee', [Detection(41, 'cup', 0.95, cup)],
                  'What is the dog holding?')
    assert answer.text == 'I see no dog.' and not answer.grounded_text.phrases


def test_describe_prints_the_set_the_description_cites(tmp_path, capsys):
    """`mr-mllm describe`: the looker's words per object, and <objN> of the description
    are the objects after the reasoning step (the duplicate 'bowl' on the cup is gone)."""
    import json

    from mr_mllm_ros.cli import main
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('mllm: {backend: template}\n')
    assert main(['describe', 'sample:coffee', '--config', str(cfg), '--json',
                 str(tmp_path / 'r.json')]) == 0
    out = capsys.readouterr().out
    assert 'after the reasoning step' in out and 'looks like: espresso' in out
    (r,) = json.loads((tmp_path / 'r.json').read_text())
    refined = [d['class_name'] for d in r['refined']['items']]
    assert 'bowl' in [d['class'] for d in r['detections']] and 'bowl' not in refined
    for p in r['description']['phrases']:
        assert all(refined[i] in p['text'] for i in p['objects'])
