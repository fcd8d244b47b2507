"""The looker's half of the reinforcement on real crops (core.looking.votes applied by
core.reasoning.reinforce, through ScenePipeline.reason with the template MLLM backend,
which changes no class itself): verify, relabel, reject (and name), name unknowns, name
what the whole frame shows, drop a second class on one object - and what the output says.
"""

import numpy as np
import pytest

from mr_mllm_ros.core.assets.sample_images import load_sample
from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.detection.labels import COCO_CLASSES
from mr_mllm_ros.core.looking.looker import Looker, Looks
from mr_mllm_ros.core.looking.votes import ANIMAL, vote_box
from mr_mllm_ros.core.pipeline import ScenePipeline
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame, Source

#: a box on the tripod's legs of the camera photo (no part of the man in it)
TRIPOD_LEGS = Box(240, 250, 400, 512)


@pytest.fixture(scope='module')
def config():
    return load_config(overrides={'mllm.backend': 'template'})


@pytest.fixture(scope='module')
def looker(config):
    return Looker(config)


def _reason(config, looker, sample, dets):
    image = load_sample(sample)
    pipeline = ScenePipeline(config, looker=looker)
    ds = DetectionSet(tuple(dets), image.shape[1], image.shape[0], 5, 'cam', 'test')
    return pipeline.reason(Frame(image, 5, 'cam'), ds, now_s=1.0)


def _box(labels, sample, category):
    return next(Box(*b) for c, b in labels[sample] if c == category)


def _det(name, score, box):
    cid = COCO_CLASSES.index(name) if name in COCO_CLASSES else 0
    return Detection(cid, name, score, box)


def test_the_cup_is_verified(config, looker, labels):
    r = _reason(config, looker, 'coffee', [_det('cup', 0.9, _box(labels, 'coffee', 'cup'))])
    (cup,) = r.refined
    assert cup.class_name == 'cup' and cup.verified and cup.original_class_name is None
    assert r.looker_counts['verified'] == 1 and 'cup' in r.description.text


def test_a_cup_boxed_as_a_toilet_is_relabelled_original_kept(config, looker, labels):
    """YOLOv3-tiny's mistake on the coffee photo."""
    r = _reason(config, looker, 'coffee',
                [_det('toilet', 0.42, _box(labels, 'coffee', 'cup'))])
    (cup,) = r.refined
    assert (cup.class_name, cup.original_class_name) == ('cup', 'toilet')
    # the template MLLM does not see the image: it is not asked (reinforce.verify_blind
    # false), the detector's score stands
    assert cup.class_id == COCO_CLASSES.index('cup') and cup.score == 0.42
    assert cup.original_score is None
    assert r.looker_counts['relabelled'] == 1
    assert 'cup' in r.description.text and 'toilet' not in r.description.text
    assert any(a.code == 'detector_mllm_disagreement' and 'relabelled' in a.message
               for a in r.alerts)


def test_a_tripod_boxed_as_a_person_is_rejected_and_named_the_man_stays(config, looker,
                                                                         labels):
    man = _box(labels, 'camera', 'person')
    r = _reason(config, looker, 'camera',
                [_det('person', 0.92, man), _det('person', 0.45, TRIPOD_LEGS)])
    assert [d.box for d in r.rejected] == [TRIPOD_LEGS]
    person, tripod = r.refined
    # ImageNet has no person class: the classifier calls the man's crop "tripod" too; the
    # pose model sees a person there and not on the legs alone
    assert person.box == man and person.verified and person.class_name == 'person'
    assert tripod.class_name == 'tripod' and tripod.source == Source.LOOKER
    assert tripod.original_class_name == 'person' and tripod.box == TRIPOD_LEGS
    assert r.looker_counts['rejected'] == 1 and r.looker_counts['verified'] == 1
    assert 'tripod' in r.description.text and 'person' in r.description.text
    disagreements = [a for a in r.alerts if a.code == 'detector_mllm_disagreement']
    assert [dict(a.values).get('kind') for a in disagreements] == ['rejected']  # not also
    # as relabelled; and said as what it was: the looker's pixels, not the (blind) MLLM
    assert 'person rejected by the looker' in disagreements[0].message


def test_an_unknown_box_is_named(config, looker, labels):
    r = _reason(config, looker, 'chelsea',
                [_det('unknown', 0.3, _box(labels, 'chelsea', 'cat'))])
    (cat,) = r.refined
    assert (cat.class_name, cat.original_class_name) == ('cat', 'unknown')
    assert cat.class_id == -1 and r.looker_counts['named'] == 1  # 'unknown' has no COCO id


@pytest.mark.parametrize('sample, name, class_id', [('camera', 'tripod', -1),
                                                    ('chelsea', 'cat', 15)])
def test_what_the_frame_shows_and_no_box_explains_is_added(config, looker, sample, name,
                                                           class_id):
    r = _reason(config, looker, sample, [])
    (added,) = r.refined
    assert (added.class_name, added.class_id, added.source) == (name, class_id, Source.LOOKER)
    image = load_sample(sample)
    assert added.box == Box(0, 0, image.shape[1], image.shape[0])
    assert added.score >= config.looker.frame_name_min_probability
    assert r.looker_counts['added'] == 1 and name in r.description.text


def test_a_frame_label_a_box_explains_adds_nothing(config, looker, labels):
    r = _reason(config, looker, 'chelsea', [_det('cat', 0.9, _box(labels, 'chelsea', 'cat'))])
    assert [d.class_name for d in r.refined] == ['cat'] and r.looker_counts['added'] == 0


def test_a_second_class_on_the_same_object_is_dropped(config, looker, labels):
    """SSD puts 'cup' and 'bowl' on the coffee cup: the looker keeps the one it sees."""
    cup = _box(labels, 'coffee', 'cup')
    r = _reason(config, looker, 'coffee', [_det('cup', 0.95, cup), _det('bowl', 0.87, cup)])
    assert [d.class_name for d in r.refined] == ['cup']
    assert [d.class_name for d in r.rejected] == ['bowl']


def test_a_crop_about_a_neighbour_changes_nothing(config, looker, labels):
    """The spoon's crop shows the cup beside it: that says nothing about the spoon."""
    spoon = _det('spoon', 0.3, _box(labels, 'coffee', 'spoon'))
    r = _reason(config, looker, 'coffee', [_det('cup', 0.95, _box(labels, 'coffee', 'cup')),
                                           spoon])
    assert [d.class_name for d in r.refined] == ['cup', 'spoon'] and not r.rejected


def test_looker_off_leaves_the_boxes_alone(labels):
    config = load_config(overrides={'mllm.backend': 'template', 'looker.enabled': False})
    pipeline = ScenePipeline(config)
    assert pipeline.looker is None
    image = load_sample('coffee')
    ds = DetectionSet((_det('toilet', 0.42, _box(labels, 'coffee', 'cup')),), 600, 400)
    r = pipeline.reason(Frame(image, 0, ''), ds, now_s=0.0)
    assert [d.class_name for d in r.refined] == ['toilet'] and r.looker_counts == {}
    assert r.refined[0].looks_like == ()


def test_the_pipeline_counts_votes_over_steps(config, looker, labels):
    """scene_node's /diagnostics show these totals (`looker: verified`, ...)."""
    pipeline = ScenePipeline(config, looker=looker)
    image = load_sample('coffee')
    ds = DetectionSet((_det('cup', 0.9, _box(labels, 'coffee', 'cup')),), 600, 400)
    for t in (1.0, 2.0):
        pipeline.reason(Frame(image, 0, ''), ds, now_s=t)
    totals = pipeline.looker_counts()
    assert totals['verified'] == 2 and totals['rejected'] == 0
    assert ScenePipeline(load_config(overrides={'mllm.backend': 'none'})).looker_counts() == {}


def _looks_with(looker, ds, crop_labels):
    """The looker's view of `ds` with crop probabilities set by hand: {index: {label
    short name: P}} (the rest of each crop's mass spread thinly over the 602 labels of
    things after ImageNet's animal block), so a vote rule is checked on exactly the
    numbers it reads."""
    names = looker.mapping.names
    things = np.arange(names.index('abacus'), len(names))
    probs = {}
    for i, spread in crop_labels.items():
        p = np.zeros(len(names))
        for label, q in spread.items():
            p[names.index(label)] = q
        p[things] += (1.0 - p.sum()) / things.size
        probs[i] = p
    return Looks(ds, probs)


def test_a_non_coco_animal_boxed_as_a_coco_animal_is_rejected(config, looker):
    """The quokka boxed as a dog: no dog breed in its crop, its mass on other animals
    (wombat, beaver, wallaby: no single label sure) -> rejected, named 'animal'; a sure
    top label names it instead; a dog's crop keeps the box."""
    box = Box(10, 10, 200, 200)
    ds = DetectionSet((_det('dog', 0.92, box),), 640, 480)
    s, m = config.looker, looker.mapping
    quokka = _looks_with(looker, ds, {0: {'wombat': 0.27, 'beaver': 0.12, 'wallaby': 0.09}})
    vote = vote_box(0, ds, quokka, m, s, ())
    assert (vote.kind, vote.label) == ('rejected', ANIMAL)
    assert vote.probability == pytest.approx(0.48) and 0.48 >= s.reject_animal_min_mass
    sure = _looks_with(looker, ds, {0: {'wombat': 0.5}})
    assert vote_box(0, ds, sure, m, s, ()).label == 'wombat'
    dog = _looks_with(looker, ds, {0: {'Pekinese': 0.6, 'wombat': 0.3}})
    assert vote_box(0, ds, dog, m, s, ()).kind == 'verified'
    few = _looks_with(looker, ds, {0: {'wombat': 0.2}})  # mostly no animal: cannot judge
    assert vote_box(0, ds, few, m, s, ()).kind == 'unsure'


def test_a_box_sharing_its_crop_with_another_class_is_still_judged(config, looker):
    """SSD put 'tie' and 'bird' on the mandrill's face: the crop ('baboon' 0.84) shows
    neither, so the other box's class is no reason to be unsure about this one."""
    face = Box(134, 33, 372, 472)
    ds = DetectionSet((_det('tie', 0.72, face), _det('bird', 0.32, face)), 512, 512)
    looks = _looks_with(looker, ds, {0: {'baboon': 0.84}, 1: {'baboon': 0.84}})
    votes = [vote_box(i, ds, looks, looker.mapping, config.looker, ()) for i in (0, 1)]
    assert [(v.kind, v.label) for v in votes] == [('rejected', 'baboon')] * 2
