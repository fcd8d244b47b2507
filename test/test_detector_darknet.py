"""YOLOv3-tiny COCO-80 through OpenCV DNN (the offline default before SSD-MobileNet-v2;
config/detector_yolov3_tiny.yaml selects it) on real photos, checked against
hand-labelled boxes (data/sample_photos)."""

import numpy as np
import pytest
from helpers import REPO
from helpers.builders import assert_sorted_and_inside, detect_top3

from mr_mllm_ros.core.assets.sample_images import load_sample
from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.detection import create_detector
from mr_mllm_ros.core.errors import ModelLoadError
from mr_mllm_ros.core.types import Box, Frame

YOLO = str(REPO / 'config' / 'detector_yolov3_tiny.yaml')


@pytest.fixture(scope='module')
def yolo_config():
    return load_config(YOLO)


@pytest.fixture(scope='module')
def detector(yolo_config):
    det = create_detector(yolo_config)
    yield det
    det.close()


@pytest.mark.parametrize('sample, category', [('motorcycle', 'motorcycle'),
                                              ('camera', 'person'),
                                              ('grace_hopper', 'tie')])
def test_finds_the_labelled_object(detector, labels, sample, category):
    frame = Frame(load_sample(sample), 123, 'cam')
    ds = detector.detect(frame)
    truth = [Box(*b) for c, b in labels[sample] if c == category]
    hits = [d for d in ds if d.class_name == category]  # COCO names (core.detection.labels)
    assert hits, f'no {category} in {sample}: {[(d.class_name, d.score) for d in ds]}'
    best = max(h.box.iou(t) for h in hits for t in truth)
    assert best >= 0.5, f'best IoU {best:.2f}'
    assert ds.stamp_ns == 123 and ds.frame_id == 'cam'
    assert ds.image_width == frame.width and ds.image_height == frame.height
    assert {'infer', 'postprocess'} <= set(ds.timings_ms)


def test_output_is_sorted_clipped_and_filtered(yolo_config, labels):
    from mr_mllm_ros.core.config import with_changes
    det, frame, ds = detect_top3(yolo_config, 'camera')
    assert 0 < len(ds) <= 3
    assert_sorted_and_inside(ds, frame)
    det.settings = with_changes(yolo_config, {'detector.classes': ['tie']}).detector
    assert all(d.class_name == 'tie' for d in det.detect(frame))


def test_blank_image_gives_no_detections(detector):
    ds = detector.detect(Frame(np.zeros((240, 320, 3), np.uint8), 0, ''))
    assert len(ds) == 0


def test_missing_weights_is_a_clear_error(tmp_path):
    config = load_config(YOLO, overrides={'models_dir': str(tmp_path)})
    with pytest.raises(ModelLoadError) as e:
        create_detector(config)
    assert str(tmp_path) in str(e.value) and 'models prepare' in str(e.value)


def test_an_input_size_that_is_not_a_multiple_of_32_is_refused():
    # OpenCV would run it and shift every box (the SSD default's 300 is such a size)
    with pytest.raises(ModelLoadError, match='multiple of 32'):
        create_detector(load_config(YOLO, overrides={'detector.imgsz': 300}))


def test_corrupt_weights_is_a_clear_error(tmp_path, yolo_config):
    folder = tmp_path / 'yolov3-tiny'
    folder.mkdir()
    src = yolo_config.resolve_model_path('yolov3-tiny')
    (folder / 'yolov3-tiny.cfg').write_text((src / 'yolov3-tiny.cfg').read_text())
    (folder / 'coco.names').write_text((src / 'coco.names').read_text())
    (folder / 'yolov3-tiny.weights').write_bytes(b'\0' * 1000)
    with pytest.raises(ModelLoadError):
        create_detector(load_config(YOLO, overrides={'models_dir': str(tmp_path)}))


def test_darknet_voc_spellings_are_reported_as_coco_names(detector):
    names = set(detector.class_names)
    assert {'motorcycle', 'airplane', 'couch', 'potted plant', 'dining table', 'tv'} <= names
    assert not names & {'motorbike', 'aeroplane', 'sofa', 'pottedplant', 'diningtable',
                        'tvmonitor'}
