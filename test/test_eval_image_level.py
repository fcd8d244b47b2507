"""What `mr-mllm eval` says about a detector beyond box P/R: image-level class recall and
false classes (`eval detections`, optional image-level labels), names the labels cannot
judge (listed apart), and `eval video` (the share of frames in which a class is found,
counts at labelled frames). Real detector (the offline default), real photos."""

import json

import cv2
import numpy as np
import pytest

from mr_mllm_ros.cli import main
from mr_mllm_ros.core.assets.sample_images import load_sample
from mr_mllm_ros.core.errors import ConfigError
from mr_mllm_ros.eval import datasets, metrics


def test_image_classes_counts_found_missed_false_and_dont_care():
    r = metrics.image_classes(
        present={'a': {'person', 'tie'}, 'b': {'cup'}, 'c': set()},
        dont_care={'a': {'chair'}, 'c': {'bird'}},
        predicted={'a': {'person', 'chair', 'dog'}, 'c': {'bird', 'kite'}})
    assert (r['present'], r['found'], r['false_classes']) == (3, 1, 2)
    assert r['class_recall'] == pytest.approx(1 / 3)
    assert r['missed'] == [['a', 'tie'], ['b', 'cup']]
    assert r['false'] == [['a', 'dog'], ['c', 'kite']]
    assert metrics.image_classes({}, {}, {'x': {'cat'}})['class_recall'] is None


def test_image_labels_file(tmp_path):
    path = tmp_path / 'labels.json'
    path.write_text(json.dumps({
        'a.jpg': {'classes': ['person', 'Sports_Ball'], 'maybe': ['vase (the planter)',
                                                                  'apple? (none clearly)'],
                  'non_coco': ['aloe'], 'width': 5},
        'b.jpg': {'classes': []}}))
    assert datasets.load_image_labels(path) == {
        'a.jpg': ({'person', 'sports ball'}, {'vase', 'apple'}), 'b.jpg': (set(), set())}
    for bad, match in (('[1]', 'expected'), ('{"a": {"classes": "cat"}}', 'lists'),
                       ('{', 'not valid JSON')):
        path.write_text(bad)
        with pytest.raises(ConfigError, match=match):
            datasets.load_image_labels(path)
    with pytest.raises(ConfigError, match='cannot read'):
        datasets.load_image_labels(tmp_path / 'none.json')


def _coco(tmp_path):
    """The camera man and Grace Hopper, boxes as data/sample_photos labels them."""
    gt = {'images': [{'id': 1, 'file_name': 'camera', 'width': 512, 'height': 512},
                     {'id': 2, 'file_name': 'grace_hopper', 'width': 512, 'height': 600}],
          'annotations': [
              {'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [0, 65, 330, 447],
               'area': 1, 'iscrowd': 0},
              {'id': 2, 'image_id': 2, 'category_id': 1, 'bbox': [12, 22, 500, 578],
               'area': 1, 'iscrowd': 0}],
          'categories': [{'id': 1, 'name': 'person'}, {'id': 32, 'name': 'tie'}]}
    (tmp_path / 'gt.json').write_text(json.dumps(gt))
    # image-level: the tie is in the picture though it has no box; a chair may be
    (tmp_path / 'labels.json').write_text(json.dumps({
        'grace_hopper': {'classes': ['tie'], 'maybe': ['chair']}}))
    return str(tmp_path / 'gt.json'), str(tmp_path / 'labels.json')


def test_detections_command_reports_image_level_class_recall(tmp_path, capsys):
    gt, labels = _coco(tmp_path)
    assert main(['eval', 'detections', '--gt', gt, '--image-labels', labels, '--no-mllm',
                 '--out', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '| image-level class recall (classes named per image) | 1.000 |' in out
    assert '| false classes (image, class pairs) | 0 |' in out
    result = json.loads((tmp_path / 'detections.json').read_text())
    level = result['detector']['image_level']
    assert (level['present'], level['found'], level['false']) == (3, 3, [])
    # without the image-level labels the tie (no box) is no class of the photo: false
    assert main(['eval', 'detections', '--gt', gt, '--no-mllm']) == 0
    out = capsys.readouterr().out
    assert '| false classes (image, class pairs) | 1 |' in out
    assert 'false classes: tie (grace_hopper)' in out


def test_names_outside_the_labelled_vocabulary_are_listed_not_scored(tmp_path, capsys):
    gt, labels = _coco(tmp_path)
    names = tmp_path / 'names.txt'  # the detector calls a person (id 1) "astronaut"
    names.write_text('\n'.join(['astronaut'] + [f'c{i}' for i in range(2, 91)]) + '\n')
    assert main(['eval', 'detections', '--gt', gt, '--image-labels', labels, '--no-mllm',
                 '--set', f'detector.labels={names}', '--out', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert 'named outside the labelled vocabulary (not scored): astronaut (camera), ' \
           'astronaut (grace_hopper)' in out
    det = json.loads((tmp_path / 'detections.json').read_text())['detector']
    assert det['pr']['fp'] == 0 and det['pr']['tp'] == 0 and det['pr']['fn'] == 2
    assert det['image_level']['false_classes'] == 0


def _video(path, frames):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 5.0, (512, 512))
    assert writer.isOpened()
    for rgb in frames:
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    writer.release()


def test_video_command_counts_the_frames_with_people(tmp_path, capsys):
    grey = np.full((512, 512, 3), 128, np.uint8)
    _video(tmp_path / 'v.avi', [load_sample('camera')] * 3 + [grey] * 2)
    (tmp_path / 'labels.json').write_text(json.dumps(
        {'frames_labelled': {'0': {'people': 1}, '4': {'count': 0}}}))
    assert main(['eval', 'video', '--video', str(tmp_path / 'v.avi'), '--labels',
                 str(tmp_path / 'labels.json'), '--out', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert '| frames with at least one person | 3 / 5 (60.0 %) |' in out
    r = json.loads((tmp_path / 'video.json').read_text())
    assert r['per_frame_counts'] == [1, 1, 1, 0, 0] and r['track_ids'] == 1
    assert r['labelled_frames'] == [{'frame': 0, 'labelled': 1, 'found': 1},
                                    {'frame': 4, 'labelled': 0, 'found': 0}]
    assert r['count_mean_abs_error'] == 0.0 and 'ssd_mobilenet_v2' in r['models']['detector']


def test_video_command_errors(tmp_path, capsys):
    assert main(['eval', 'video', '--video', str(tmp_path / 'none.avi')]) == 2
    assert 'cannot open video' in capsys.readouterr().err
    _video(tmp_path / 'v.avi', [load_sample('camera')])
    (tmp_path / 'labels.json').write_text('{"frames": {}}')
    assert main(['eval', 'video', '--video', str(tmp_path / 'v.avi'), '--labels',
                 str(tmp_path / 'labels.json')]) == 2
    assert 'frames_labelled' in capsys.readouterr().err
