"""The offline default detector (SSD-MobileNet-v2 COCO through OpenCV DNN) on real photos,
checked against hand-labelled boxes (data/sample_photos), and its errors."""

import json
import shutil

import numpy as np
import pytest
from helpers import LABELS
from helpers.builders import assert_sorted_and_inside, detect_top3

from mr_mllm_ros.core.assets.sample_images import load_sample
from mr_mllm_ros.core.config import load_config, with_changes
from mr_mllm_ros.core.detection import create_detector
from mr_mllm_ros.core.detection.labels import (COCO_CATEGORY_IDS, COCO_CLASSES,
                                               COCO_ID_TO_INDEX)
from mr_mllm_ros.core.errors import ImageConversionError, ModelLoadError
from mr_mllm_ros.core.types import Box, Frame

MODEL_DIR = 'ssd-mobilenet-v2-coco'


@pytest.fixture(scope='module')
def detector(default_config):
    assert default_config.detector.backend == 'opencv_ssd'  # the offline default
    det = create_detector(default_config)
    yield det
    det.close()


def detect(detector, sample):
    frame = Frame(load_sample(sample), 123, 'cam')
    return frame, detector.detect(frame)


def best_iou(ds, labels, sample, category):
    truth = [Box(*b) for c, b in labels[sample] if c == category]
    return max((d.box.iou(t) for d in ds if d.class_name == category for t in truth),
               default=0.0)


def test_camera_man_is_exactly_one_person(detector, labels):
    frame, ds = detect(detector, 'camera')
    people = [d for d in ds if d.class_name == 'person']
    # YOLOv3-tiny boxed his gloved hand as a second person; the camera is no person either
    assert len(people) == 1, [(d.class_name, d.score, d.box) for d in ds]
    assert best_iou(ds, labels, 'camera', 'person') >= 0.7
    assert ds.stamp_ns == 123 and ds.frame_id == 'cam'
    assert (ds.image_width, ds.image_height) == (frame.width, frame.height)
    assert {'preprocess', 'infer', 'postprocess'} <= set(ds.timings_ms)
    assert 'ssd_mobilenet_v2' in ds.model_name and 'opencv_ssd' in ds.model_name


@pytest.mark.parametrize('sample, categories', [
    ('grace_hopper', ('person', 'tie')),  # YOLOv3-tiny: two ties, no person
    ('coffee', ('cup',)),                 # YOLOv3-tiny: a "toilet"
    ('chelsea', ('cat',)),                # YOLOv3-tiny: nothing
    ('astronaut', ('person',)),           # YOLOv3-tiny: nothing
    ('motorcycle', ('motorcycle',)),
])
def test_finds_the_labelled_objects(detector, labels, sample, categories):
    _, ds = detect(detector, sample)
    for category in categories:
        iou = best_iou(ds, labels, sample, category)
        assert iou >= 0.5, f'{category} in {sample}: best IoU {iou:.2f}; found ' \
                           f'{[(d.class_name, round(d.score, 2)) for d in ds]}'
    assert 'toilet' not in {d.class_name for d in ds}


def test_class_ids_index_the_coco_names(detector):
    assert list(detector.class_names) == list(COCO_CLASSES)
    _, ds = detect(detector, 'grace_hopper')
    assert all(detector.class_names[d.class_id] == d.class_name for d in ds)
    # the 90-id map agrees with the official category ids of our COCO annotations
    cats = json.loads(LABELS.read_text())['categories']
    assert all(COCO_CLASSES[COCO_ID_TO_INDEX[c['id']]] == c['name'] for c in cats)
    assert len(set(COCO_CATEGORY_IDS)) == 80 and max(COCO_CATEGORY_IDS) == 90


def test_thresholds_and_class_filter_apply(default_config):
    det, frame, ds = detect_top3(default_config, 'coffee')
    assert len(ds) == 3 and min(d.score for d in ds) >= 0.05
    assert_sorted_and_inside(ds, frame)
    det.settings = with_changes(default_config, {'detector.classes': ['cup']}).detector
    assert [d.class_name for d in det.detect(frame)] == ['cup']
    det.settings = with_changes(default_config, {'detector.conf': 0.99}).detector
    assert len(det.detect(frame)) == 0


def test_blank_image_gives_no_detections(detector):
    assert len(detector.detect(Frame(np.zeros((240, 320, 3), np.uint8), 0, ''))) == 0


@pytest.mark.parametrize('image, match', [
    (np.zeros((240, 320), np.uint8), r'\(H, W, 3\) uint8'),
    (np.zeros((240, 320, 4), np.uint8), r'\(H, W, 3\) uint8'),
    (np.zeros((240, 320, 3), np.float32), 'dtype float32'),
    (np.zeros((0, 320, 3), np.uint8), 'empty'),
    ([[0, 0, 0]], 'numpy array'),
])
def test_malformed_input_is_a_clear_error(detector, image, match):
    with pytest.raises(ImageConversionError, match=match):
        detector.detect(Frame(image, 0, ''))
    assert len(detect(detector, 'camera')[1]) >= 1  # and the detector still works


def test_missing_files_are_clear_errors(tmp_path, default_config):
    config = load_config(overrides={'models_dir': str(tmp_path)})
    with pytest.raises(ModelLoadError, match='models prepare') as e:
        create_detector(config)
    assert str(tmp_path) in str(e.value)
    folder = tmp_path / MODEL_DIR
    folder.mkdir()
    src = default_config.resolve_model_path(MODEL_DIR)
    shutil.copy(src / 'frozen_inference_graph.pb', folder)
    with pytest.raises(ModelLoadError, match='no .pbtxt'):
        create_detector(config)
    (folder / 'a.pbtxt').write_text('')
    (folder / 'b.pbtxt').write_text('')
    with pytest.raises(ModelLoadError, match='more than one .pbtxt'):
        create_detector(config)
    with pytest.raises(ModelLoadError, match='labels file not found'):
        create_detector(with_changes(config, {'detector.tf_graph': str(folder / 'a.pbtxt'),
                                              'detector.labels': 'nope.txt'}))


def test_corrupt_graph_is_a_clear_error(tmp_path, default_config):
    folder = tmp_path / MODEL_DIR
    folder.mkdir()
    src = default_config.resolve_model_path(MODEL_DIR)
    pbtxt = next(src.glob('*.pbtxt'))
    shutil.copy(pbtxt, folder)
    data = (src / 'frozen_inference_graph.pb').read_bytes()
    (folder / 'frozen_inference_graph.pb').write_bytes(data[:len(data) // 3])  # truncated
    with pytest.raises(ModelLoadError, match='OpenCV cannot load'):
        create_detector(load_config(overrides={'models_dir': str(tmp_path)}))


def test_own_label_file_names_the_class_ids(tmp_path, default_config):
    """detector.labels: line k names class id k (TF label maps start at 1)."""
    names = ['c%d' % i for i in range(1, 91)]
    names[0] = 'human'  # id 1, COCO's person
    (tmp_path / 'labels.txt').write_text('\n'.join(names) + '\n')
    det = create_detector(with_changes(default_config, {
        'detector.labels': str(tmp_path / 'labels.txt'), 'detector.warmup': False}))
    ds = det.detect(Frame(load_sample('camera'), 0, ''))
    assert [d.class_name for d in ds] == ['human'] and ds.detections[0].class_id == 0
