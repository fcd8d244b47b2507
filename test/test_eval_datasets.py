"""Evaluation inputs: the committed labelled set is self-consistent, loaders reject bad
files with the line and reason, and images come back from samples, files and bags.

What this does not check: whether the hand labels are right (that was done by looking
at the photos; see data/sample_photos/README.md)."""

import json
import pickle

import cv2
import numpy as np
import pytest
from helpers import LABELS, REPO

from mr_mllm_ros.core.alerts import default_rules_path, load_rules
from mr_mllm_ros.core.assets.sample_images import SAMPLES, load_sample
from mr_mllm_ros.core.errors import BagError, ConfigError
from mr_mllm_ros.eval import datasets

SET = REPO / 'data' / 'sample_photos'


def test_committed_coco_set_loads_with_canonical_names():
    data = datasets.load_coco(LABELS)
    # the six photos, then crops and composites of them (version 3, README of the set)
    assert [im.file_name for im in data.images][:6] == list(SAMPLES)
    assert len(data.images) == 16
    assert all(im.file_name.startswith(('crop:', 'compose:')) for im in data.images[6:])
    real = [o for o in data.objects if not o.ignore]
    assert len(real) == 42 and sum(o.ignore for o in data.objects) == 9
    assert {o.class_name for o in real} == {'person', 'cup', 'spoon', 'cat', 'motorcycle',
                                            'bench', 'tie'}
    assert {o.class_name for o in data.objects if o.ignore} == {'bicycle', 'dining table'}
    for im in data.images:
        rgb = datasets.load_image(im.file_name, SET)  # sample names and recipes resolve
        assert rgb.shape == (im.height, im.width, 3)
        for o in data.objects:
            if o.image == im.id:
                x1, y1, x2, y2 = o.box
                assert 0 <= x1 < x2 <= im.width and 0 <= y1 < y2 <= im.height
    agnostic = datasets.load_coco(LABELS, {'*': 'object'})
    assert agnostic.categories == ('object',)
    assert len(datasets.load_coco(LABELS, limit=2).images) == 2


def test_referring_expressions_point_at_labelled_boxes():
    samples = datasets.load_referring_jsonl(SET / 'referring.jsonl')
    coco = json.loads(LABELS.read_text())
    anns = {a['id']: a for a in coco['annotations']}
    files = {im['id']: im['file_name'] for im in coco['images']}
    lines = [json.loads(line) for line in (SET / 'referring.jsonl').read_text().splitlines()
             if line.startswith('{')]
    assert len(samples) == len(lines) >= 2 * len(SAMPLES)
    for s, line in zip(samples, lines):
        ann = anns[line['ann_id']]
        x, y, w, h = ann['bbox']
        assert s.box == (x, y, x + w, y + h), s
        assert s.image == f'sample:{files[ann["image_id"]]}'
    assert {s.image for s in samples} == {f'sample:{n}' for n in SAMPLES}


def test_alert_labels_name_packaged_rules():
    frames = datasets.load_alert_sequence(SET / 'alerts.jsonl')
    rules = {r.name for r in load_rules(default_rules_path())}
    assert all(f.expected <= rules for f in frames)
    assert len(frames) == 91 and len({f.clip for f in frames}) == 10
    for f in {(f.image, f.transform) for f in frames}:
        datasets.apply_transform(datasets.load_image(f[0]), f[1])


def test_image_references(tmp_path):
    assert datasets.load_image('sample:coffee').shape == (400, 600, 3)
    grey = datasets.load_image('solid:7:32x16')
    assert grey.shape == (16, 32, 3) and (grey == 7).all()
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[..., 0] = 200  # red
    cv2.imwrite(str(tmp_path / 'red.png'), rgb[..., ::-1])
    assert (datasets.load_image('red.png', tmp_path) == rgb).all()
    for bad in ('solid:300', 'solid:x', 'missing.png', 'sample:nope'):
        with pytest.raises((ConfigError, KeyError)):
            datasets.load_image(bad, tmp_path)


def test_crop_and_compose_references():
    coffee, camera = load_sample('coffee'), load_sample('camera')
    crop = datasets.load_image('crop:coffee:150,0,300,340')
    assert crop.shape == (340, 300, 3) and (crop == coffee[0:340, 150:450]).all()
    canvas = datasets.load_image('compose:640x480:camera@0,0,256,256+coffee@300,100,300,200')
    assert canvas.shape == (480, 640, 3)
    assert (canvas[300:, :256] == 128).all() and (canvas[:100, 300:] == 128).all()
    assert (canvas[:256, :256] == cv2.resize(camera, (256, 256),
                                             interpolation=cv2.INTER_AREA)).all()
    assert np.abs(canvas[100:300, 300:600].astype(int).mean()
                  - coffee.astype(int).mean()) < 2  # the photo, shrunk by half
    for bad, match in (('crop:coffee:0,0,601,10', 'leaves'), ('crop:coffee', 'expected'),
                       ('crop:coffee:1,2,3', 'integers'), ('crop:nope:0,0,5,5', 'unknown'),
                       ('crop:coffee:0,0,0,5', 'w, h >= 1'),
                       ('compose:10x10:coffee@0,0,11,5', 'leaves'),
                       ('compose:axb:coffee@0,0,5,5', 'expected'),
                       ('compose:10x10:coffee', 'not <sample>@')):
        with pytest.raises(ConfigError, match=match):
            datasets.load_image(bad)


def test_transforms():
    img = load_sample('coffee')
    assert datasets.apply_transform(img, '') is img
    assert datasets.apply_transform(img, 'scale:0').max() == 0
    assert (datasets.apply_transform(img, 'scale:100') == 255).mean() > 0.9
    blurred = datasets.apply_transform(img, 'blur:31')
    assert blurred.shape == img.shape and blurred.dtype == np.uint8
    assert cv2.Laplacian(blurred, cv2.CV_32F).var() < cv2.Laplacian(img, cv2.CV_32F).var()
    for bad in ('blur:4', 'blur:x', 'scale:-1', 'sharpen:3'):
        with pytest.raises(ConfigError, match='transform'):
            datasets.apply_transform(img, bad)


@pytest.mark.parametrize('loader, text, match', [
    ('load_referring_jsonl',
     '# comment\n{"image": "sample:coffee", "expression": "x", "bbox": [1, 2]}\n',
     r'r.jsonl:2: bad box'),
    ('load_referring_jsonl', '{"image": "sample:coffee", "bbox": [1, 2, 3, 4]}\n',
     'expression'),
    ('load_alert_sequence', '{"image": "sample:coffee", "repeat": 0}\n', 'repeat'),
    ('load_alert_sequence', 'not json\n', ':1: not valid JSON'),
    ('load_bag_alert_labels', '{"frames": [5, 2], "alerts": ["x"]}\n', 'frames'),
    ('load_coco', '{"images": []}', 'not a COCO instances file'),
])
def test_bad_files_name_the_line(tmp_path, loader, text, match):
    p = tmp_path / 'r.jsonl'
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        getattr(datasets, loader)(p)


def test_missing_ground_truth_is_named(tmp_path):
    with pytest.raises(ConfigError, match='cannot read ground truth'):
        datasets.load_coco(tmp_path / 'none.json')


def test_bag_labels_expand_ranges(tmp_path):
    p = tmp_path / 'l.jsonl'
    p.write_text('{"frames": [2, 4], "alerts": ["a"]}\n{"frame": 4, "alerts": ["b"]}\n')
    assert datasets.load_bag_alert_labels(p) == {
        2: {'a'}, 3: {'a'}, 4: {'a', 'b'}}


@pytest.mark.parametrize('compressed', [False, True])
def test_bag_round_trip(tmp_path, compressed):
    images = [load_sample('camera'), load_sample('coffee')]
    topic = '/cam/image/compressed' if compressed else '/cam/image'
    datasets.write_bag(tmp_path / 'bag', topic, images, rate_hz=5.0)
    out = list(datasets.iter_bag_images(tmp_path / 'bag'))
    assert [im.index for im in out] == [0, 1]
    assert [im.stamp_ns for im in out] == [1_000_000_000, 1_200_000_000]
    for im, ref in zip(out, images):
        assert im.rgb.shape == ref.shape and im.frame_id == 'camera'
        err = np.abs(im.rgb.astype(int) - ref).mean()
        assert err < 4 if compressed else err == 0
    with pytest.raises(BagError, match='no image topic'):
        list(datasets.iter_bag_images(tmp_path / 'bag', '/other'))


def test_refer_toolkit_files(tmp_path):
    refs = [{'ref_id': 1, 'ann_id': 11, 'image_id': 5, 'split': 'val', 'category_id': 4,
             'sentences': [{'sent_id': 100, 'raw': 'the red motorbike', 'sent': 'red bike'},
                           {'sent_id': 101, 'sent': 'left bike'}]},
            {'ref_id': 2, 'ann_id': 11, 'image_id': 5, 'split': 'train', 'category_id': 4,
             'sentences': [{'sent_id': 102, 'raw': 'x'}]}]
    coco = {'images': [{'id': 5, 'file_name': 'COCO_train2014_000000000005.jpg'}],
            'annotations': [{'id': 11, 'image_id': 5, 'category_id': 4,
                             'bbox': [10, 20, 30, 40]}],
            'categories': [{'id': 4, 'name': 'motorcycle'}]}
    (tmp_path / 'refs(umd).p').write_bytes(pickle.dumps(refs))
    (tmp_path / 'instances.json').write_text(json.dumps(coco))
    samples = datasets.load_refer_pickle(tmp_path / 'refs(umd).p',
                                         tmp_path / 'instances.json', 'val')
    assert [(s.id, s.expression, s.box, s.category, s.image) for s in samples] == [
        ('100', 'the red motorbike', (10, 20, 40, 60), 'motorcycle',
         'COCO_train2014_000000000005.jpg'),
        ('101', 'left bike', (10, 20, 40, 60), 'motorcycle',
         'COCO_train2014_000000000005.jpg')]
    with pytest.raises(ConfigError, match='split'):
        datasets.load_refer_pickle(tmp_path / 'refs(umd).p', tmp_path / 'instances.json',
                                   'testB')
