"""Posture (core.looking.posture: MoveNet Lightning on person crops) and the debounced
person_down alert rule: the camera man stands, the same photo turned by 90 degrees shows
him lying; the rule raises after n of m reasoning steps, with its evidence image."""

import numpy as np
import pytest

from mr_mllm_ros.core.alerts import AlertEngine, parse_rule
from mr_mllm_ros.core.assets.sample_images import load_sample
from mr_mllm_ros.core.config import load_config, with_changes
from mr_mllm_ros.core.looking.looker import Looker, posture_settings
from mr_mllm_ros.core.looking.posture import (
    KEYPOINTS,
    _turn_back,
    classify_keypoints,
)
from mr_mllm_ros.core.pipeline import ScenePipeline
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame, Severity


def _settings():
    """The posture settings of config/mr_mllm.yaml (their one default)."""
    return posture_settings(load_config().looker)


def _turned_camera(k: int, labels) -> tuple[np.ndarray, Box]:
    """The camera photo turned by k * 90 degrees (np.rot90) and the man's box with it."""
    image = load_sample('camera')
    h, w = image.shape[:2]
    x1, y1, x2, y2 = next(b for c, b in labels['camera'] if c == 'person')
    boxes = {0: Box(x1, y1, x2, y2), -1: Box(h - y2, x1, h - y1, x2),
             1: Box(y1, w - x2, y2, w - x1)}
    return np.ascontiguousarray(np.rot90(image, k)), boxes[k]


def _posture(looker, image, box):
    ds = DetectionSet((Detection(0, 'person', 0.9, box),), image.shape[1], image.shape[0])
    looks = looker.look(Frame(image, 0, ''), ds)
    return looks.postures[0], looks.detections[0]


@pytest.fixture(scope='module')
def looker(default_config):
    return Looker(default_config)


def test_the_camera_man_stands(looker, labels):
    posture, det = _posture(looker, *_turned_camera(0, labels))
    assert posture.label == 'upright' and posture.torso_angle < 30
    assert det.posture == 'upright' and det.posture_score == pytest.approx(posture.score,
                                                                           abs=1e-3)


@pytest.mark.parametrize('k', [-1, 1])
def test_the_turned_photo_shows_him_lying(looker, labels, default_config, k):
    image, box = _turned_camera(k, labels)
    posture, det = _posture(looker, image, box)
    assert posture.label == 'lying' and det.posture == 'lying' and posture.score > 0.45
    # without looking at the crop turned back upright, MoveNet is much less sure
    plain = Looker(with_changes(default_config, {'looker.posture_turn_min_aspect': 100.0}))
    assert _posture(plain, image, box)[0].score < posture.score - 0.1


def test_a_cat_boxed_as_a_person_gets_no_posture(looker, labels):
    image = load_sample('chelsea')
    box = next(Box(*b) for c, b in labels['chelsea'] if c == 'cat')
    posture, det = _posture(looker, image, box)
    assert posture.label == '' and det.posture == ''
    assert posture.person_score < looker.settings.person_pose_min


def _kp(points: dict[str, tuple[float, float]], score: float = 0.9) -> np.ndarray:
    kp = np.zeros((17, 3), np.float32)
    for name, (y, x) in points.items():
        kp[KEYPOINTS.index(name)] = (y, x, score)
    return kp


BODY = {'nose': (0.1, 0.5), 'left_eye': (0.08, 0.52), 'right_eye': (0.08, 0.48),
        'left_shoulder': (0.25, 0.6), 'right_shoulder': (0.25, 0.4),
        'left_hip': (0.55, 0.58), 'right_hip': (0.55, 0.42)}


@pytest.mark.parametrize('legs, expected', [
    ({'left_knee': (0.75, 0.58), 'right_knee': (0.75, 0.42)}, 'upright'),
    ({'left_knee': (0.6, 0.85), 'right_knee': (0.62, 0.7)}, 'sitting'),  # thighs forward
    ({'left_knee': (0.6, 0.85), 'right_knee': (0.75, 0.42)}, 'upright'),  # one: a stride
    ({}, 'upright'),                                                      # a portrait
])
def test_keypoint_rules(legs, expected):
    assert classify_keypoints(_kp({**BODY, **legs}), _settings()).label == expected


def test_lying_missing_and_weak_keypoints():
    s = _settings()
    lying = {'left_shoulder': (0.5, 0.2), 'right_shoulder': (0.45, 0.2),
             'left_hip': (0.5, 0.6), 'right_hip': (0.45, 0.6), 'nose': (0.48, 0.05),
             'left_eye': (0.46, 0.06)}
    p = classify_keypoints(_kp(lying), s)
    assert p.label == 'lying' and 80 < p.torso_angle <= 100
    upside_down = {k: (1 - y, x) for k, (y, x) in BODY.items()}
    assert classify_keypoints(_kp(upside_down), s).label == 'lying'
    no_hips = {k: v for k, v in BODY.items() if 'hip' not in k}
    assert classify_keypoints(_kp(no_hips), s).label == ''
    assert classify_keypoints(_kp(BODY, score=0.2), s).label == ''  # below both minimums


@pytest.mark.parametrize('k', [1, -1])
def test_keypoints_found_in_a_turned_view_are_turned_back(k):
    """A pixel marked in a square, found in np.rot90(square, k), maps back to itself."""
    n = 101
    square = np.zeros((n, n), np.uint8)
    square[20, 70] = 1
    r, c = np.argwhere(np.rot90(square, k))[0]
    kp = np.array([[r / (n - 1), c / (n - 1), 1.0]], np.float32)
    y, x, _ = _turn_back(kp, k)[0]
    assert (round(y * (n - 1)), round(x * (n - 1))) == (20, 70)


# ------------------------------------------------------------------- person_down

def _lying_set(stamp, posture='lying', score=0.6, track=-1):
    d = Detection(0, 'person', 0.8, Box(10, 300, 400, 450), track_id=track,
                  posture=posture, posture_score=score)
    return DetectionSet((d,), 640, 480, stamp, 'cam')


def test_person_down_debounce_and_cooldown():
    rule = parse_rule({'name': 'down', 'type': 'person_down', 'severity': 'WARN',
                       'debounce': {'n': 2, 'm': 3}, 'cooldown_s': 10.0})
    assert rule.params['min_posture_score'] == 0.3  # from config/alert_rules.yaml
    engine = AlertEngine([rule])
    raised = [engine.evaluate(None, _lying_set(i, p, s), float(i), types=('person_down',))
              for i, (p, s) in enumerate([('lying', 0.6), ('upright', 0.6), ('lying', 0.2),
                                          ('lying', 0.6), ('lying', 0.6), ('lying', 0.6)])]
    # steps 0 and 3 are 2 hits but 4 steps apart; 3 and 4 are 2 of 3; then it cools down
    assert [len(a) for a in raised] == [0, 0, 0, 0, 1, 0]
    alert = raised[4][0]
    assert alert.code == 'person_down' and alert.severity == Severity.WARN
    assert dict(alert.values)['posture'] == 'lying' and alert.window_stamps_ns == (3, 4)
    assert 'posture_score' in alert.rationale


def test_person_down_from_the_turned_photo_with_evidence(labels):
    """Reasoning steps on the turned photo: the packaged rule (2 of 3) raises on the second
    step, with the frame as JPEG evidence; the upright photo raises nothing."""
    config = load_config(overrides={'mllm.backend': 'template'})
    pipeline = ScenePipeline(config)
    assert any(r.name == 'person_down' for r in pipeline.alerts.rules)
    upright, box0 = _turned_camera(0, labels)
    lying, box1 = _turned_camera(-1, labels)

    def step(image, box, t):
        ds = DetectionSet((Detection(0, 'person', 0.9, box),), image.shape[1],
                          image.shape[0], int(t * 1e9), 'cam')
        r = pipeline.reason(Frame(image, int(t * 1e9), 'cam'), ds, now_s=t)
        return [a for a in r.alerts if a.code == 'person_down'], r

    assert step(upright, box0, 0.0)[0] == [] and step(upright, box0, 1.0)[0] == []
    first, r = step(lying, box1, 2.0)
    assert first == [] and r.refined[0].posture == 'lying'
    (alert,), _ = step(lying, box1, 3.0)
    assert alert.rule == 'person_down' and alert.evidence_jpeg[:2] == b'\xff\xd8'
    assert alert.detections[0].posture == 'lying'
