"""The looker (core.looking) on real photos the packages ship: EfficientNet-Lite3 through
LiteRT names the coffee cup and the cat; the ImageNet -> COCO mapping file is checked
against the model's labels; bad mapping files are clear errors."""

import numpy as np
import pytest
import yaml

from mr_mllm_ros.core.assets.sample_images import load_sample
from mr_mllm_ros.core.config import load_config, with_changes
from mr_mllm_ros.core.detection.labels import COCO_CLASSES
from mr_mllm_ros.core.errors import ConfigError, ModelLoadError
from mr_mllm_ros.core.looking.classifier import square_crop
from mr_mllm_ros.core.looking.imagenet_coco import load_mapping, read_labels
from mr_mllm_ros.core.looking.looker import Looker
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame


@pytest.fixture(scope='module')
def looker(default_config):
    return Looker(default_config)


def _labels_of(looker, coco_class):
    """The short names of the ImageNet labels the mapping puts under a COCO class."""
    return {looker.mapping.names[k] for k in looker.mapping.seen_members[coco_class]}


def _box(labels, sample, category):
    return next(Box(*b) for c, b in labels[sample] if c == category)


def test_coffee_cup_crop_looks_like_espresso_or_cup(looker, labels):
    image = load_sample('coffee')
    probs = looker.classifier.classify([square_crop(image, _box(labels, 'coffee', 'cup'),
                                                    0.25)])[0]
    top = looker.classifier.top(probs, 3)
    assert top[0][0] in ('espresso', 'cup') and top[0][1] > 0.5, top
    assert looker.mapping.support(probs, 'cup') > 0.8
    assert max(looker.mapping.strengths(probs).items(), key=lambda kv: kv[1])[0] == 'cup'


def test_chelsea_is_a_cat(looker):
    probs = looker.classifier.classify([load_sample('chelsea')])[0]
    assert looker.classifier.top(probs, 1)[0][0] in ('Egyptian cat', 'tabby', 'tiger cat')
    assert looker.mapping.strengths(probs)['cat'] > 0.8


def test_look_fills_looks_like_for_crops_and_frame(looker, labels):
    image = load_sample('coffee')
    dets = (Detection(41, 'cup', 0.9, _box(labels, 'coffee', 'cup')),
            Detection(44, 'spoon', 0.4, _box(labels, 'coffee', 'spoon')),
            Detection(0, 'person', 0.3, Box(5, 5, 20, 20)))  # below min_crop_side
    looks = looker.look(Frame(image, 7, 'cam'), DetectionSet(dets, 600, 400, 7, 'cam'))
    cup, spoon, tiny = looks.detections
    assert cup.looks_like[0][0] in ('espresso', 'cup')
    # top_k at most, min_probability or above, best first
    assert all(p >= looker.settings.min_probability for _, p in cup.looks_like)
    assert len(cup.looks_like) <= looker.settings.top_k
    assert [p for _, p in cup.looks_like] == sorted((p for _, p in cup.looks_like), reverse=True)
    # the spoon's crop is mostly the cup beside it ('espresso'): none of the cup's labels
    cup_labels = _labels_of(looker, 'cup')
    assert 1 in looks.crop_probs and not {n for n, _ in spoon.looks_like} & cup_labels
    assert tiny.looks_like == () and 2 not in looks.crop_probs
    assert looks.detections.looks_like[0][0] in ('espresso', 'cup')
    assert looks.frame_probs is not None and looks.frame_probs.shape == (1000,)
    # int8 softmax: each of the 1000 probabilities is floored to a 1/256 step
    assert 0.85 < float(looks.frame_probs.sum()) <= 1.01
    assert looks.detections.stamp_ns == 7 and looks.timings_ms['looker_total'] > 0
    assert not cup.posture and 0 not in looks.postures  # posture only for people


def test_a_crop_of_another_object_is_not_its_look(looker, labels):
    """The dining table's crop is the whole coffee photo, which the classifier calls an
    espresso: the cup's label stays off the table (nothing may say "a dining table is an
    espresso"); the votes still read the crop's full probabilities."""
    image = load_sample('coffee')
    cup_box = _box(labels, 'coffee', 'cup')
    dets = (Detection(41, 'cup', 0.9, cup_box),
            Detection(60, 'dining table', 0.76, Box(2.6, 0.2, 596.7, 398.2)))
    looks = looker.look(Frame(image, 7, 'cam'), DetectionSet(dets, 600, 400, 7, 'cam'))
    cup, table = looks.detections
    cup_labels = _labels_of(looker, 'cup')
    assert cup.looks_like[0][0] in ('espresso', 'cup')
    assert not {name for name, _ in table.looks_like} & cup_labels, table.looks_like
    full_top = looker.classifier.top(looks.crop_probs[1], 1)[0][0]
    assert full_top in cup_labels  # what the table's crop shows most is the cup
    # alone in the frame, the same crop keeps its labels
    alone = looker.look(Frame(image, 7, 'cam'), DetectionSet(dets[1:], 600, 400, 7, 'cam'))
    assert alone.detections[0].looks_like[0][0] == full_top


def test_max_crops_takes_the_largest_boxes(default_config, labels):
    looker = Looker(with_changes(default_config, {'looker.max_crops': 1,
                                                  'looker.look_at_frame': False,
                                                  'looker.posture': False}))
    image = load_sample('coffee')
    dets = (Detection(44, 'spoon', 0.4, _box(labels, 'coffee', 'spoon')),
            Detection(41, 'cup', 0.9, _box(labels, 'coffee', 'cup')))
    looks = looker.look(Frame(image, 0, ''), DetectionSet(dets, 600, 400))
    assert set(looks.crop_probs) == {1} and looks.frame_probs is None
    assert looks.detections.looks_like == ()


def test_square_crop_keeps_the_shape_and_pads():
    image = np.full((100, 200, 3), 255, np.uint8)
    sq = square_crop(image, Box(50, 10, 70, 90), 0.0)  # 20 x 80 -> 80 x 80, padded
    assert sq.shape == (80, 80, 3)
    assert (sq[:, 30:50] == 255).all() and (sq[:, :29] != 255).all()
    assert square_crop(image, None, 0.0).shape == (200, 200, 3)


# ------------------------------------------------------------------ the mapping file

@pytest.fixture(scope='module')
def model_labels(default_config):
    return read_labels(default_config.resolve_model_path(default_config.looker.labels))


def test_mapping_file_fits_the_model_labels(model_labels):
    """config/imagenet_coco.yaml: every entry names one label of the model, no label is
    under two COCO classes in `is`, every COCO-80 class is listed, not_objects are no
    COCO class; a few entries a reader would check first."""
    m = load_mapping(model_labels)
    assert len(model_labels) == 1000 and set(m.is_members) == set(COCO_CLASSES)
    owners = {}
    for cls, members in m.is_members.items():
        for i in members.tolist():
            assert i not in owners, f'{model_labels[i]} under {owners[i]} and {cls}'
            owners[i] = cls
    assert all(m.coco_of[i] == c for i, c in owners.items())
    name = {n: i for i, n in reversed(list(enumerate(m.names)))}
    assert m.coco_of[name['tabby']] == 'cat' and m.coco_of[name['espresso']] == 'cup'
    assert m.coco_of[name['Pekinese']] == 'dog' and m.coco_of[name['moped']] == 'motorcycle'
    assert m.coco_of[134] == 'bird' and m.coco_of[517] is None  # crane: bird, machine
    assert m.coco_of[21] == 'bird'  # ImageNet's "kite" is the bird, not COCO's kite
    assert m.coco_of[name['fox squirrel']] is None and m.coco_of[name['tripod']] is None
    assert name['suit'] in m.seen_members['person'].tolist()
    assert all(m.coco_of[i] is None for i in m.not_objects)
    assert not m.names_object(name['web site']) and m.names_object(name['tripod'])
    # dogs: all 118 ImageNet breeds
    assert len(m.is_members['dog']) == 118
    # ImageNet's animal block: tench (0) to puffer (397), 'abacus' is the first thing
    assert m.animals.tolist() == list(range(398)) and m.names[398] == 'abacus'
    assert name['wombat'] in m.animals and name['fox squirrel'] in m.animals


@pytest.mark.parametrize('entries, extra, message', [
    ({'cat': ['tabby'], 'dog': ['tabby']}, '', 'under two COCO classes'),
    ({'cat': ['no such animal']}, '', 'is no label'),
    ({'bird': ['crane']}, '', 'names 2 labels'),
    ({'cat': ['tabby (517)']}, '', "label 517 is 'crane'"),
    ({'kitty': ['tabby']}, '', 'is not a COCO-80 class'),
    ({}, 'not_objects: [tabby]\n', "'tabby, tabby cat' is in `not_objects` and under cat"),
    (None, '', "lacks the COCO class 'person'"),
    ({}, 'animals: [puffer, tench]\n', "`animals`: 'tench' comes before 'puffer'"),
    ({}, 'animals: tench\n', '`animals` must be [first label, last label]'),
])
def test_bad_mapping_files_are_clear_errors(tmp_path, model_labels, entries, extra, message):
    if entries is None:
        sections = {'cat': ['tabby']}  # every other class missing
    else:
        sections = {c: [] for c in COCO_CLASSES}
        sections.update({'cat': ['tabby']} if not entries else {})
        sections.update(entries)
    path = tmp_path / 'map.yaml'
    path.write_text(yaml.safe_dump({'is': sections, 'seen_with': {}}) + extra)
    with pytest.raises(ConfigError) as e:
        load_mapping(model_labels, path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_missing_looker_model_is_a_clear_error(tmp_path):
    config = load_config(overrides={'models_dir': str(tmp_path)})
    with pytest.raises(ModelLoadError) as e:
        Looker(config)
    assert 'efficientnet_lite3.tflite' in str(e.value) and 'models prepare' in str(e.value)
