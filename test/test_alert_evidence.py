"""Alerts with their proof, in core (no ROS): the debounce window's stamps, the condition
values and rationale, the evidence JPEG (core.alerts.evidence, attached by ScenePipeline), and
the rule defaults living only in config/alert_rules.yaml."""

import copy

import cv2
import numpy as np
import pytest
import yaml
from helpers.builders import det, dset

from mr_mllm_ros.core.alerts import (
    AlertEngine,
    FrameArrivals,
    default_rules_path,
    load_rules,
    packaged_defaults,
    parse_rule,
)
from mr_mllm_ros.core.alerts import rules as rules_module
from mr_mllm_ros.core.alerts.evidence import with_evidence
from mr_mllm_ros.core.config import load_config, with_changes
from mr_mllm_ros.core.errors import ConfigError
from mr_mllm_ros.core.images import annotated_jpeg
from mr_mllm_ros.core.pipeline import ScenePipeline
from mr_mllm_ros.core.types import Detection, DetectionSet, Frame

MS = 1_000_000


HAZARD = {'name': 'dock', 'type': 'hazard_in_region', 'severity': 'CRITICAL',
          'debounce': {'n': 2, 'm': 3}, 'cooldown_s': 0.0, 'classes': ['person'],
          'region': [[0.25, 0.5], [0.75, 0.5], [0.75, 1.0], [0.25, 1.0]]}


# ------------------------------------------------------------------------- the proof

def test_alert_carries_window_stamps_values_and_rationale():
    e = AlertEngine([parse_rule(HAZARD)])
    person = det(score=0.81, track=4)
    assert e.evaluate(None, dset(person, stamp=100 * MS), 0.1) == []
    assert e.evaluate(None, dset(stamp=200 * MS), 0.2) == []  # gone for one frame
    alerts = e.evaluate(None, dset(person, stamp=300 * MS), 0.3)
    assert len(alerts) == 1
    a = alerts[0]
    # The two frames where it held in the 2-of-3 window, oldest first, the last = stamp.
    assert a.window_stamps_ns == (100 * MS, 300 * MS) and a.stamp_ns == 300 * MS
    values = dict(a.values)
    assert values['class'] == 'person' and values['score'] == '0.81'
    assert values['track_id'] == '4' and values['min_score'] == '0.5'
    assert values['anchor_xy'] == '0.50,0.80'  # bottom centre of the box, normalised
    assert (values['held'], values['evaluations']) == ('2', '3')
    assert 'score 0.81' in a.rationale and 'held in 2 of the last 3' in a.rationale


def test_frame_rule_values_name_the_measurement_and_threshold():
    rule = {'name': 'dark', 'type': 'frame_black', 'severity': 'WARN'}
    e = AlertEngine([parse_rule(rule)])
    frame = Frame(np.full((48, 64, 3), 3, np.uint8), 7, 'cam')
    (a,) = e.evaluate(frame, dset(stamp=7), 1.0)
    assert dict(a.values)['mean'] == '3.0' and dict(a.values)['max_mean'] == '15'
    assert a.window_stamps_ns == (7,)


def test_mllm_judgement_rationale_is_the_models_reason_grounded_to_boxes():
    rule = {'name': 'odd', 'type': 'mllm_judgement', 'severity': 'WARN'}
    e = AlertEngine([parse_rule(rule)])
    dog = det('dog', (10, 10, 30, 30))
    (a,) = e.judgement([dog], 0.93, 'a dog on the road', 5, 'cam', 'tiny-vlm')
    assert 'tiny-vlm' in a.rationale and 'a dog on the road' in a.rationale
    assert a.detections == (dog,) and a.phrases[0].indices == (0,)
    assert dict(a.values)['p_yes'] == '0.930'


def test_stale_alert_has_values_and_no_evidence():
    rule = {'name': 'stale', 'type': 'camera_stale', 'severity': 'CRITICAL'}
    e = AlertEngine([parse_rule(rule)])
    camera = FrameArrivals()
    for t in (4.8, 4.9, 5.0):
        camera.note(t)
    (a,) = e.check_stale(10.0, camera, 'cam')
    assert dict(a.values)['age_s'] == '5.00' and a.evidence_jpeg == b''


# -------------------------------------------------------------------------- evidence

def _scene() -> tuple[Frame, DetectionSet, Detection, Detection]:
    rgb = np.full((400, 600, 3), 128, np.uint8)
    person, cup = det('person', (40, 60, 240, 360)), det('cup', (400, 100, 520, 200), 0.6)
    return Frame(rgb, 11, 'cam'), DetectionSet((person, cup), 600, 400, 11, 'cam'), person, cup


def _red(img):  # BGR; a thin line is blurred by JPEG chroma subsampling
    b, g, r = (img[..., i].astype(int) for i in range(3))
    return (r > 120) & (r - np.maximum(g, b) > 60)


def test_evidence_highlights_the_alert_objects_only():
    frame, ds, person, cup = _scene()
    jpg = annotated_jpeg(frame.image, ds, {0}, max_side=640, quality=90)
    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (400, 600)
    assert _red(img[200:340, 38:43]).any(axis=1).mean() > 0.9  # the person's left edge
    assert not _red(img[130:190, 395:405]).any()  # the cup's left edge: its class colour


def test_evidence_is_scaled_to_max_side_with_its_boxes():
    frame, ds, person, _ = _scene()
    jpg = annotated_jpeg(frame.image, ds, {0}, max_side=300, quality=90)
    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (200, 300)
    assert _red(img[100:170, 18:23]).any(axis=1).mean() > 0.9  # left edge at half scale


def test_with_evidence_attaches_and_shares_encodings():
    frame, ds, person, cup = _scene()
    e = AlertEngine([parse_rule({**HAZARD, 'debounce': {'n': 1, 'm': 1},
                                 'region': [[0, 0], [1, 0], [1, 1], [0, 1]],
                                 'anchor': 'any_overlap', 'classes': ['person', 'cup']})])
    alerts = e.evaluate(frame, ds, 1.0)
    out = with_evidence(alerts, frame, ds, 640, 80)
    assert len(out) == 2 and all(a.evidence_jpeg for a in out)
    assert out[0].evidence_jpeg != out[1].evidence_jpeg  # different objects highlighted
    assert with_evidence(alerts, None, ds, 640, 80) == alerts
    assert with_evidence(alerts, frame, ds, 0, 80) == alerts  # evidence_max_side 0: off


def test_scene_pipeline_attaches_evidence_to_frame_alerts(tmp_path):
    rules = tmp_path / 'rules.yaml'
    rules.write_text(yaml.safe_dump({'rules': [{**HAZARD, 'debounce': {'n': 1, 'm': 1}}]}))
    config = with_changes(load_config(), {'mllm.backend': 'none',
                                          'alerts.rules_file': str(rules),
                                          'alerts.evidence_max_side': 100})
    scene = ScenePipeline(config)
    frame, ds, _, _ = _scene()
    ds = DetectionSet((det('person', (200, 200, 400, 390)),), 600, 400, 11, 'cam')
    (a,) = scene.frame_alerts(frame, ds, 1.0)
    img = cv2.imdecode(np.frombuffer(a.evidence_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[:2] == (67, 100)


# ------------------------------------------------------------------ one default, in YAML

def test_every_optional_rule_key_takes_its_default_from_the_yaml(tmp_path, monkeypatch):
    """Change every value of the packaged `defaults:` and parse minimal rules: each key a
    rule leaves out must come out as the changed value. A default hard-coded in Python
    (shadowing the YAML) would keep the old value and fail here."""
    data = yaml.safe_load(default_rules_path().read_text())
    changed = copy.deepcopy(data['defaults'])

    def bump(v):
        if isinstance(v, bool):
            return not v
        if isinstance(v, float):
            return round(v * 0.5 + 0.01, 4)
        if isinstance(v, list):
            return v[:1] if len(v) > 1 else ['probe']
        if isinstance(v, dict):
            return {'n': 2, 'm': 4}
        return {'bottom_center': 'center', '': 'zone'}.get(v, v)

    changed = {sec: {k: bump(v) for k, v in vals.items()} for sec, vals in changed.items()}
    changed['unknown_object'].update(min_score=0.2, max_score=0.3)
    path = tmp_path / 'alert_rules.yaml'
    path.write_text(yaml.safe_dump({'defaults': changed, 'rules': []}))
    monkeypatch.setattr(rules_module, 'default_rules_path', lambda: path)
    required = {'hazard_in_region': {'classes': ['person'], 'region': HAZARD['region']}}
    for rtype in rules_module.RULE_TYPES:
        r = parse_rule({'name': 'x', 'type': rtype, 'severity': 'INFO',
                        **required.get(rtype, {})})
        common = changed['every_rule']
        assert (r.enabled, r.cooldown_s, r.n, r.m) == (
            common['enabled'], common['cooldown_s'], common['debounce']['n'],
            common['debounce']['m'])
        for key, value in changed.get(rtype, {}).items():
            got = r.params[key]
            assert (list(got) if isinstance(got, tuple) else got) == value, (rtype, key)
    # Every optional key of every type has its default in the YAML (or is required).
    for rtype, fields in rules_module._SCHEMA.items():
        optional = set(fields) - set(required.get(rtype, {}))
        assert optional <= set(data['defaults'].get(rtype, {})), rtype


def test_schema_holds_no_default_values():
    assert not hasattr(rules_module._Field('float'), 'default')


def test_a_rules_file_may_override_defaults(tmp_path):
    path = tmp_path / 'rules.yaml'
    path.write_text(yaml.safe_dump({
        'defaults': {'frame_black': {'max_mean': 40.0}, 'every_rule': {'cooldown_s': 1.0}},
        'rules': [{'name': 'dark', 'type': 'frame_black', 'severity': 'WARN'}]}))
    (r,) = load_rules(path)
    assert r.params['max_mean'] == 40.0 and r.cooldown_s == 1.0
    assert r.n == packaged_defaults()['every_rule']['debounce']['n']
    path.write_text(yaml.safe_dump({'defaults': {'frame_black': {'typo': 1}}, 'rules': []}))
    with pytest.raises(ConfigError, match="unknown key 'typo'"):
        load_rules(path)
