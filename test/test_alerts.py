"""Corner-case alert engine (mr_mllm_ros.core.alerts): one truth table per rule type,
debounce and cooldown, polygon maths, frame quality, stale check, MLLM judgement, rules-file
validation, the packaged default rules. Synthetic detections and numpy frames, no ROS."""

import threading
import time

import cv2
import numpy as np
import pytest
import yaml
from helpers.builders import det, dset

from mr_mllm_ros.core.alerts import (RULE_TYPES, AlertEngine, FrameArrivals, FrameQuality,
                                     box_overlaps_polygon, default_rules_path, frame_quality,
                                     in_region, load_rules, parse_rule, point_in_polygon)
from mr_mllm_ros.core.errors import ConfigError
from mr_mllm_ros.core.types import Box, DetectionSet, Frame, Severity, Source

W, H = 100, 100  # detection boxes below are then in percent of the image (helpers.builders)


def rule(rtype, name='r', severity='WARN', n=1, m=1, cooldown_s=0.0, **params):
    return dict(name=name, type=rtype, severity=severity, debounce={'n': n, 'm': m},
                cooldown_s=cooldown_s, **params)


def engine(*rules, **kw) -> AlertEngine:
    return AlertEngine([parse_rule(r, i) for i, r in enumerate(rules)], **kw)


def grey_frame(value, w=64, h=48) -> Frame:
    return Frame(np.full((h, w, 3), value, np.uint8), 5, 'cam')


SQUARE = [[0.25, 0.5], [0.75, 0.5], [0.75, 1.0], [0.25, 1.0]]  # lower middle of the image


# ------------------------------------------------------------------ hazard_in_region

@pytest.mark.parametrize('cls, box, score, track, anchor, key', [
    ('person', (40, 40, 60, 80), 0.9, -1, 'bottom_center', 'class:person'),
    ('person', (40, 40, 60, 80), 0.9, 7, 'bottom_center', 'track:7'),
    ('person', (40, 40, 60, 80), 0.5, -1, 'bottom_center', 'class:person'),  # score == min
    ('person', (40, 40, 60, 80), 0.4, -1, 'bottom_center', None),  # low score
    ('dog', (40, 40, 60, 80), 0.9, -1, 'bottom_center', None),  # not a hazard class
    ('person', (40, 10, 60, 45), 0.9, -1, 'bottom_center', None),  # above the region
    ('person', (40, 10, 60, 45), 0.9, -1, 'any_overlap', None),
    ('person', (40, 30, 60, 60), 0.9, -1, 'bottom_center', 'class:person'),  # feet inside
    ('person', (40, 30, 60, 60), 0.9, -1, 'center', None),  # centre (50, 45) outside
    ('person', (40, 30, 60, 60), 0.9, -1, 'any_overlap', 'class:person'),
    ('person', (0, 60, 20, 90), 0.9, -1, 'any_overlap', None),  # left of the region
    ('person', (0, 60, 30, 90), 0.9, -1, 'any_overlap', 'class:person'),  # sticks in
    ('person', (0, 60, 30, 90), 0.9, -1, 'bottom_center', None),
    ('person', (0, 0, 100, 100), 0.9, -1, 'any_overlap', 'class:person'),  # covers it
    ('person', (0, 0, 100, 100), 0.9, -1, 'center', 'class:person'),  # (50,50) on the edge
    ('person', (0, 0, 100, 100), 0.9, -1, 'bottom_center', 'class:person'),  # on the edge
])
def test_hazard_in_region_truth_table(cls, box, score, track, anchor, key):
    e = engine(rule('hazard_in_region', name='dock', severity='CRITICAL', classes=['person'],
                    region=SQUARE, region_name='loading_dock', min_score=0.5, anchor=anchor))
    alerts = e.evaluate(None, dset(det(cls, box, score, track), stamp=123), now_s=1.0)
    assert e.keys('dock') == ([key] if key else [])
    assert len(alerts) == (1 if key else 0)
    if key:
        a = alerts[0]
        assert (a.severity, a.code, a.rule, a.raised_by) == (
            Severity.CRITICAL, 'hazard_in_region', 'dock', 'rule')
        assert a.message.startswith("person in region 'loading_dock' (score ")
        assert (a.stamp_ns, a.frame_id) == (123, 'cam')
        assert a.detections == (det(cls, box, score, track),)
        (p,) = a.phrases
        assert (p.text, p.indices) == ('person', (0,))
        assert a.message[p.start:p.end] == 'person'


def test_hazard_groups_untracked_objects_of_a_class_under_one_key():
    e = engine(rule('hazard_in_region', classes=['person'], region=SQUARE))
    a, b = e.evaluate(None, dset(det(box=(30, 60, 40, 90)), det(box=(60, 60, 70, 90)),
                                 det('person', (30, 60, 40, 90), track=4)), 1.0)
    assert len(b.detections) == 1 and b.detections[0].track_id == 4
    assert len(a.detections) == 2 and a.phrases[0].indices == (0, 1)
    assert a.message.endswith('(+1 more)')
    assert sorted(e.keys('r')) == ['class:person', 'track:4']


# --------------------------------------------------------- detector_mllm_disagreement

@pytest.mark.parametrize('detection, rejected, kinds, key', [
    (det('truck', original_class_name='car'), False, None, 'relabelled:class:car->truck'),
    (det('truck', track=3, original_class_name='car'), False, None, 'relabelled:track:3'),
    (det('truck', original_class_name='truck'), False, None, None),  # same label
    (det('truck'), False, None, None),  # unchanged
    (det('forklift', source=Source.MLLM), False, None, 'missed:class:forklift'),
    (det('dog', score=0.3), True, None, 'rejected:class:dog'),
    (det('dog', track=9), True, None, 'rejected:track:9'),
    (det('truck', original_class_name='car'), False, ['rejected'], None),  # kind off
    (det('dog'), True, ['relabelled'], None),
    (det('truck', score=0.1, original_class_name='car'), False, None, None),  # < min_score
])
def test_disagreement_truth_table(detection, rejected, kinds, key):
    params = {'min_score': 0.2} | ({'kinds': kinds} if kinds else {})
    e = engine(rule('detector_mllm_disagreement', severity='INFO', **params))
    dets, rej = ((), [detection]) if rejected else ((detection,), ())
    alerts = e.evaluate(None, dset(*dets), 1.0, rejected=rej)
    assert e.keys('r') == ([key] if key else [])
    assert [(a.severity, a.code) for a in alerts] == (
        [(Severity.INFO, 'detector_mllm_disagreement')] if key else [])
    if key:
        assert alerts[0].detections == (detection,)
        assert alerts[0].message.startswith(detection.class_name + ' ')


# ------------------------------------------------------------------- unknown_object

@pytest.mark.parametrize('detection, classes, key', [
    (det('unknown', score=0.9), [], 'class:unknown'),
    (det('object', score=0.9, track=4), [], 'track:4'),
    (det('person', score=0.30), [], None),  # a known class at a low score is no unknown
    (det('person', score=0.30, track=7), [], None),
    (det('chair', score=0.30), ['chair'], 'class:chair'),  # listed: the band applies
    (det('chair', score=0.25), ['chair'], 'class:chair'),  # band start is inclusive
    (det('chair', score=0.35), ['chair'], None),  # band end is exclusive
    (det('chair', score=0.20), ['chair'], None),  # below the band
    (det('chair', score=0.90), ['chair'], None),  # confident
    (det('chair', score=0.30, verified=True), ['chair'], None),  # the MLLM confirmed it
    (det('chair', score=0.30), ['cup'], None),  # class filter
    (det('cup', score=0.30), ['cup'], 'class:cup'),
    (det('unknown', score=0.9), ['cup'], 'class:unknown'),  # labels alert whatever the list
])
def test_unknown_object_truth_table(detection, classes, key):
    e = engine(rule('unknown_object', severity='INFO', min_score=0.25, max_score=0.35,
                    classes=classes))
    alerts = e.evaluate(None, dset(detection), 1.0)
    assert e.keys('r') == ([key] if key else [])
    assert [a.code for a in alerts] == (['unknown_object'] if key else [])


def test_unknown_object_default_labels():
    e = engine(rule('unknown_object'))
    assert len(e.evaluate(None, dset(det('object', score=0.99)), 1.0)) == 1


# ---------------------------------------------------------- sudden_close_appearance

BIG, BIG2, SMALL = (10, 10, 50, 60), (55, 10, 95, 60), (10, 10, 20, 20)  # 20 %, 20 %, 1 %


@pytest.mark.parametrize('frames, raised', [
    # (time, detections) per frame  ->  (frame index, key) of the alerts raised
    ([(0.0, []), (0.1, [det(box=BIG, track=5)])], [(1, 'track:5')]),
    ([(0.0, [det(box=BIG, track=5)]), (0.1, [det(box=BIG, track=5)])], []),  # baseline
    ([(0.0, []), (0.1, [det(box=SMALL, track=5)])], []),  # far away
    ([(0.0, [det(box=BIG, track=5)]), (0.1, [det(box=BIG, track=6)])], [(1, 'track:6')]),
    ([(0.0, [det(box=BIG)])], []),  # the first frame is the baseline
    ([(0.0, []), (5.0, [det(box=BIG)])], []),  # a gap > memory_s starts a new baseline
    ([(0.0, []), (0.1, [det(box=BIG)])], [(1, 'class:person')]),  # untracked fallback
    ([(0.0, [det(box=BIG)]), (0.1, [det(box=BIG)])], []),  # the same box as before
    ([(0.0, [det(box=BIG)]), (0.1, [det(box=BIG), det(box=BIG2)])],
     [(1, 'class:person')]),  # count went up by a large box elsewhere
    ([(0.0, []), (0.1, [det('cup', box=BIG)])], []),  # class filter
    ([(0.0, []), (0.1, [det(box=BIG, score=0.2)])], []),  # below min_score
    # track 5 leaves and comes back after memory_s: new again; within memory_s: not
    ([(0.0, []), (0.1, [det(box=BIG, track=5)])] + [(0.5 * i, []) for i in range(1, 7)]
     + [(3.5, [det(box=BIG, track=5)])], [(1, 'track:5'), (8, 'track:5')]),
    ([(0.0, []), (0.1, [det(box=BIG, track=5)]), (1.0, []), (1.5, [det(box=BIG, track=5)])],
     [(1, 'track:5')]),
])
def test_sudden_close_appearance_truth_table(frames, raised):
    e = engine(rule('sudden_close_appearance', min_area_share=0.15, memory_s=2.0,
                    classes=['person'], min_score=0.3))
    got = [(i, a.detections[0].track_id, a.code) for i, (t, ds) in enumerate(frames)
           for a in e.evaluate(None, dset(*ds), t)]
    want = [(i, int(k.split(':')[1]) if k.startswith('track') else -1,
             'sudden_close_appearance') for i, k in raised]
    assert got == want


@pytest.mark.parametrize('track', [7, -1])
def test_sudden_appearance_is_confirmed_in_its_first_m_frames(track):
    e = engine(rule('sudden_close_appearance', n=2, m=3, cooldown_s=100))
    e.evaluate(None, dset(), 0.0)
    ghost = [len(e.evaluate(None, dset(*ds), t)) for t, ds in
             [(0.1, [det(box=BIG, track=track)]), (0.2, []), (0.3, []), (0.4, [])]]
    assert ghost == [0, 0, 0, 0]  # one frame only: nothing
    e.reset()
    e.evaluate(None, dset(), 0.0)
    seq = [len(e.evaluate(None, dset(det(box=BIG, track=track)), 0.1 * i))
           for i in range(1, 6)]
    assert seq == [0, 1, 0, 0, 0]  # confirmed on its 2nd frame, never again (it is not new)


# -------------------------------------------------------------------- frame quality

def test_frame_quality_black_white_noise_blur():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    black, white = frame_quality(np.zeros_like(noise)), frame_quality(np.full_like(noise, 255))
    assert (black.mean, black.saturated_share, black.laplacian_var) == (0.0, 0.0, 0.0)
    assert (white.mean, white.saturated_share) == (pytest.approx(255.0), 1.0)
    sharp, blurred = frame_quality(noise), frame_quality(cv2.GaussianBlur(noise, (31, 31), 0))
    assert sharp.laplacian_var > 1000 > 25 > blurred.laplacian_var
    assert abs(sharp.mean - 127.5) < 2
    # Measured on the development machine: ~0.6 ms per VGA frame (640x480 RGB noise).
    # Fixed analysis size: the same scene at 2x resolution has the same sharpness.
    board = np.kron((np.indices((12, 16)).sum(0) % 2) * 200 + 20, np.ones((40, 40)))
    board = np.stack([board.astype(np.uint8)] * 3, -1)
    big = cv2.resize(board, (1280, 960), interpolation=cv2.INTER_NEAREST)
    assert frame_quality(big).laplacian_var == pytest.approx(frame_quality(board).laplacian_var)


def test_frame_quality_accepts_grey_and_rgba_and_rejects_others():
    assert frame_quality(np.full((10, 10), 255, np.uint8)).saturated_share == 1.0
    assert frame_quality(np.zeros((10, 10, 4), np.uint8)).mean == 0.0
    assert frame_quality(np.full((10, 10, 4), 255, np.uint8)).saturated_share == 1.0
    for bad in (np.zeros((10, 10, 3), np.float32), np.zeros((0, 10, 3), np.uint8),
                np.zeros((10, 10, 2), np.uint8)):
        with pytest.raises(ValueError, match='uint8'):
            frame_quality(bad)
    assert isinstance(frame_quality(np.zeros((4, 4, 3), np.uint8)), FrameQuality)


def _half(top, bottom, share=0.5):
    img = np.full((100, 100, 3), bottom, np.uint8)
    img[:int(100 * share)] = top
    return Frame(img, 5, 'cam')


NOISE = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize('rtype, params, frame, raised', [
    ('frame_black', {'max_mean': 15}, grey_frame(0), True),
    ('frame_black', {'max_mean': 15}, grey_frame(14), True),
    ('frame_black', {'max_mean': 15}, grey_frame(15), False),
    ('frame_black', {'max_mean': 15}, grey_frame(128), False),
    ('frame_black', {'max_mean': 15}, None, False),  # no image: not evaluated
    ('frame_overexposed', {'max_saturated_share': 0.5}, grey_frame(255), True),
    ('frame_overexposed', {'max_saturated_share': 0.5}, grey_frame(249), False),
    ('frame_overexposed', {'max_saturated_share': 0.5}, _half(255, 0, 0.5), False),  # = limit
    ('frame_overexposed', {'max_saturated_share': 0.5}, _half(255, 0, 0.6), True),
    ('frame_blurred', {'min_laplacian_var': 25}, grey_frame(128), True),  # featureless
    ('frame_blurred', {'min_laplacian_var': 25}, Frame(NOISE, 5, 'cam'), False),
    ('frame_blurred', {'min_laplacian_var': 25},
     Frame(cv2.GaussianBlur(NOISE, (31, 31), 0), 5, 'cam'), True),
])
def test_frame_rules_truth_table(rtype, params, frame, raised):
    e = engine(rule(rtype, **params))
    w, h = (frame.width, frame.height) if frame is not None else (64, 48)
    alerts = e.evaluate(frame, dset(w=w, h=h), 1.0)
    assert [(a.code, a.frame_id, a.detections, a.phrases) for a in alerts] == (
        [(rtype, 'cam', (), ())] if raised else [])
    assert e.keys('r') == (['cam'] if raised else [])


# ------------------------------------------------------------------------- debounce

def _unknown_engine(**kw):
    return engine(rule('unknown_object', name='u', **kw))


def _run(e, pattern, track=1, t0=0.0, dt=1.0):
    """Evaluate one frame per entry of `pattern` (True = the condition holds); returns the
    number of alerts raised on each frame."""
    return [len(e.evaluate(None, dset(*([det('unknown', track=track)] if on else [])),
                           t0 + i * dt)) for i, on in enumerate(pattern)]


def test_debounce_one_frame_flicker_raises_nothing():
    e = _unknown_engine(n=2, m=3, cooldown_s=100)
    assert _run(e, [True, False, False, False, True, False, False]) == [0] * 7


def test_debounce_n_of_m_raises_once_and_respects_cooldown():
    e = _unknown_engine(n=2, m=3, cooldown_s=10)
    # T F T -> raised on the 3rd frame; persisting inside the cooldown: silent
    assert _run(e, [True, False, True, True, True, True]) == [0, 0, 1, 0, 0, 0]
    assert e.stats() == {'u': 1}
    # the cooldown (10 s) has passed at t=12 and the condition still holds: raised again
    assert _run(e, [True, True], t0=12.0) == [1, 0]
    assert e.stats() == {'u': 2}


def test_debounce_does_not_raise_on_a_frame_where_the_condition_is_false():
    e = _unknown_engine(n=2, m=3, cooldown_s=0)
    assert _run(e, [True, True, False, False]) == [0, 1, 0, 0]


def test_debounce_keys_are_independent():
    e = _unknown_engine(n=2, m=2, cooldown_s=100)
    out = []
    for i, tracks in enumerate([[1], [1, 2], [2], [1, 2]]):
        out.append(sorted(a.detections[0].track_id for a in e.evaluate(
            None, dset(*(det('unknown', track=t) for t in tracks)), float(i))))
    assert out == [[], [1], [2], []]


def test_vanished_keys_are_forgotten_and_the_key_count_is_capped():
    e = _unknown_engine(n=1, m=2, cooldown_s=5)
    _run(e, [True])
    _run(e, [False, False], t0=1.0)
    assert e.keys('u') == ['track:1']  # gone for m frames but still cooling
    _run(e, [False], t0=6.0)
    assert e.keys('u') == []
    capped = engine(rule('unknown_object', name='u', m=3, cooldown_s=100), max_keys=10)
    for t in range(25):
        capped.evaluate(None, dset(det('unknown', track=t)), float(t))
    assert capped.keys('u') == [f'track:{t}' for t in range(15, 25)]  # the newest 10


def test_a_clock_that_jumps_back_ends_the_cooldown():
    e = _unknown_engine(cooldown_s=100)
    assert _run(e, [True], t0=50.0) == [1]
    assert _run(e, [True], t0=0.0) == [1]  # bag replay looped


def test_disabled_rules_do_nothing_and_stats_list_every_rule():
    e = engine(rule('unknown_object', name='on'), rule('unknown_object', name='off') |
               {'enabled': False})
    assert [a.rule for a in e.evaluate(None, dset(det('unknown')), 1.0)] == ['on']
    assert e.stats() == {'on': 1, 'off': 0}


def test_evaluate_is_thread_safe():
    e = _unknown_engine(cooldown_s=1e4)

    def worker(track):
        for i in range(200):
            e.evaluate(None, dset(det('unknown', track=track)), float(i))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert e.stats() == {'u': 4}  # each track raised exactly once


# ---------------------------------------------------------------------- polygon maths

CONCAVE_U = [(0.0, 0.0), (0.3, 0.0), (0.3, 0.7), (0.7, 0.7), (0.7, 0.0), (1.0, 0.0),
             (1.0, 1.0), (0.0, 1.0)]  # a U: the notch x 0.3..0.7, y 0..0.7 is outside


@pytest.mark.parametrize('x, y, inside', [
    (0.5, 0.5, True), (0.25, 0.5, True), (0.75, 0.75, True), (0.5, 1.0, True),  # edges
    (0.25, 1.0, True), (0.75, 0.5, True),  # vertices
    (0.2499, 0.6, False), (0.5, 0.4999, False), (0.5, 1.0001, False), (0.9, 0.9, False),
])
def test_point_in_square_with_edges(x, y, inside):
    assert point_in_polygon(x, y, [tuple(p) for p in SQUARE]) is inside


@pytest.mark.parametrize('x, y, inside', [
    (0.1, 0.1, True), (0.9, 0.1, True), (0.5, 0.9, True),  # arms and base
    (0.5, 0.3, False), (0.5, 0.69, False),  # in the notch
    (0.5, 0.7, True), (0.3, 0.3, True),  # on the notch's edges
    (1.1, 0.5, False),
])
def test_point_in_concave_polygon(x, y, inside):
    assert point_in_polygon(x, y, CONCAVE_U) is inside


@pytest.mark.parametrize('box, overlaps', [
    ((0.4, 0.6, 0.6, 0.8), True),  # inside
    ((0.0, 0.0, 1.0, 1.0), True),  # contains the polygon
    ((0.1, 0.7, 0.9, 0.8), True),  # crosses: no corner of either inside the other
    ((0.0, 0.5, 0.25, 0.6), True),  # touches the left edge
    ((0.0, 0.0, 0.2, 0.4), False),
    ((0.4, 0.1, 0.6, 0.4), False),
])
def test_box_overlaps_polygon(box, overlaps):
    assert box_overlaps_polygon(*box, [tuple(p) for p in SQUARE]) is overlaps


def test_box_in_the_notch_of_a_concave_region_does_not_overlap():
    assert not box_overlaps_polygon(0.4, 0.1, 0.6, 0.6, CONCAVE_U)
    assert box_overlaps_polygon(0.4, 0.1, 0.6, 0.8, CONCAVE_U)


def test_region_is_normalised_so_it_works_at_any_resolution():
    poly = [tuple(p) for p in SQUARE]
    for w, h in ((100, 100), (640, 480), (1920, 1080)):
        inside = Box(0.4 * w, 0.3 * h, 0.6 * w, 0.9 * h)
        outside = Box(0.4 * w, 0.1 * h, 0.6 * w, 0.4 * h)
        assert in_region(inside, w, h, poly, 'bottom_center')
        assert not in_region(outside, w, h, poly, 'bottom_center')


# ------------------------------------------------------------------------- stale check

def arrivals(*times) -> FrameArrivals:
    a = FrameArrivals()
    for t in times:
        a.note(t)
    return a


@pytest.mark.parametrize('now, times, stale', [
    (10.0, (8.8, 8.9, 9.0), False), (10.0, (7.8, 7.9, 8.0), False),
    (10.0, (7.7, 7.8, 7.9), True),
    (10.0, (), False),                # nothing yet: a diagnostics warning, not an alert
    (10.0, (7.9,), False),            # one photo: a one-shot source never streamed
    (10.0, (1.0, 4.0, 7.0), False),   # photos 3 s apart, each waiting for its answer
    (10.0, (3.0, 4.0, 6.0, 7.0), False),  # the last 3 span 3 s > max_age_s
    (10.0, (1.0, 4.0, 5.0, 6.0, 7.0), True),  # streamed at 1 Hz, then stopped
])
def test_check_stale(now, times, stale):
    e = engine(rule('camera_stale', severity='CRITICAL', max_age_s=2.0))
    alerts = e.check_stale(now, arrivals(*times), 'front_cam')
    assert [(a.code, a.severity, a.frame_id, a.stamp_ns) for a in alerts] == (
        [('camera_stale', Severity.CRITICAL, 'front_cam', int(now * 1e9))] if stale else [])
    if stale:
        assert 'front_cam' in alerts[0].message


def test_min_stream_frames_is_a_rule_parameter():
    one = engine(rule('camera_stale', max_age_s=2.0, min_stream_frames=1))
    assert len(one.check_stale(10.0, arrivals(7.9), 'cam')) == 1  # every frame streams
    with pytest.raises(ConfigError, match='min_stream_frames'):
        engine(rule('camera_stale', min_stream_frames=2.5))
    with pytest.raises(ConfigError, match='min_stream_frames'):
        engine(rule('camera_stale', min_stream_frames=0))


def test_check_stale_cooldown_and_evaluate_ignores_it():
    e = engine(rule('camera_stale', max_age_s=1.0, cooldown_s=10.0))
    assert e.evaluate(None, dset(), 100.0) == []  # a timer rule, not a per-frame one
    streamed = arrivals(-0.2, -0.1, 0.0)
    raised = [len(e.check_stale(t, streamed, 'cam')) for t in (2.0, 3.0, 11.0, 12.0)]
    assert raised == [1, 0, 0, 1]


# ---------------------------------------------------------------------- MLLM judgement

@pytest.mark.parametrize('p_yes, enabled, raised', [
    (0.69, True, False), (0.7, True, True), (0.95, True, True), (0.95, False, False),
])
def test_judgement_threshold(p_yes, enabled, raised):
    e = engine(rule('mllm_judgement', severity='WARN', min_probability=0.7) |
               {'enabled': enabled})
    objs = dset(det('person', track=2), det('ladder'))
    alerts = e.judgement(objs, p_yes, 'person  standing on\na ladder', 7_000_000_000, 'cam',
                         'smolvlm')
    assert len(alerts) == (1 if raised else 0)
    if raised:
        a = alerts[0]
        assert (a.code, a.raised_by, a.stamp_ns, a.frame_id) == (
            'mllm_judgement', 'smolvlm', 7_000_000_000, 'cam')
        assert 'person standing on a ladder' in a.message and f'{p_yes:.2f}' in a.message
        assert a.detections == tuple(objs) and a.phrases[0].indices == (0, 1)
        assert a.message[a.phrases[0].start:a.phrases[0].end] == 'person, ladder'


def test_judgement_debounce_and_cooldown_on_the_image_clock():
    e = engine(rule('mllm_judgement', n=2, m=3, cooldown_s=5.0, min_probability=0.5))
    out = [len(e.judgement([], p, 'smoke', int(t * 1e9), 'cam', 'm'))
           for t, p in [(0, 0.9), (1, 0.1), (2, 0.9), (3, 0.9), (8, 0.9)]]
    assert out == [0, 0, 1, 0, 1]
    assert e.judgement([], 0.9, 'x', 0, 'cam', 'm', now_s=100.0)[0].phrases == ()


# ------------------------------------------------------------------- rules-file validation

def _good_hazard(**changes):
    return {**rule('hazard_in_region', name='dock', classes=['person'], region=SQUARE),
            **changes}


@pytest.mark.parametrize('changes, key, value_text', [
    ({'type': 'laser_beam'}, 'type', 'laser_beam'),
    ({'colour': 'red'}, 'colour', 'red'),
    ({'min_score': 'high'}, 'min_score', 'high'),
    ({'min_score': True}, 'min_score', 'True'),
    ({'min_score': 1.5}, 'min_score', '1.5'),
    ({'cooldown_s': -1}, 'cooldown_s', '-1'),
    ({'region': [[0, 0], [1, 1]]}, 'region', '[[0, 0], [1, 1]]'),
    ({'region': [[0, 0], [1.2, 0], [1, 1]]}, 'region', '1.2'),
    ({'region': [[0, 0, 0], [1, 0], [1, 1]]}, 'region', '[0, 0, 0]'),
    ({'region': 'everywhere'}, 'region', 'everywhere'),
    ({'debounce': {'n': 4, 'm': 3}}, 'debounce', "'n': 4"),
    ({'debounce': {'n': 1}}, 'debounce', "'n': 1"),
    ({'debounce': {'n': 0, 'm': 3}}, 'debounce', "'n': 0"),
    ({'severity': 'LOW'}, 'severity', 'LOW'),
    ({'enabled': 'yes'}, 'enabled', 'yes'),
    ({'classes': []}, 'classes', '[]'),
    ({'classes': 'person'}, 'classes', 'person'),
    ({'anchor': 'top'}, 'anchor', 'top'),
])
def test_rule_validation_errors_name_rule_key_and_value(changes, key, value_text):
    with pytest.raises(ConfigError) as err:
        parse_rule(_good_hazard(**changes))
    msg = str(err.value)
    assert "'dock'" in msg and repr(key) in msg and value_text in msg, msg


@pytest.mark.parametrize('entry, words', [
    ({k: v for k, v in _good_hazard().items() if k != 'region'}, ["'dock'", "'region'",
                                                                    'missing']),
    ({'type': 'frame_black', 'severity': 'INFO'}, ['#0', "'name'"]),
    (rule('unknown_object', name='u', min_score=0.5, max_score=0.3), ["'u'", 'max_score']),
    (rule('detector_mllm_disagreement', name='d', kinds=['gossip']), ["'d'", 'kinds',
                                                                       'relabelled']),
    ('just a string', ['#0', 'mapping']),
])
def test_other_rule_validation_errors(entry, words):
    with pytest.raises(ConfigError) as err:
        parse_rule(entry)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_rule_defaults_and_case_insensitive_severity():
    r = parse_rule({'name': 'dark', 'type': 'frame_black', 'severity': 'critical'})
    assert (r.severity, r.enabled, r.n, r.m, r.cooldown_s) == (Severity.CRITICAL, True, 1, 1,
                                                               10.0)
    assert r.params == {'max_mean': 15.0}


def test_load_rules_file_errors(tmp_path):
    def write(text):
        p = tmp_path / 'rules.yaml'
        p.write_text(text)
        return p

    with pytest.raises(ConfigError, match='cannot read'):
        load_rules(tmp_path / 'missing.yaml')
    with pytest.raises(ConfigError, match='not valid YAML'):
        load_rules(write('rules: [\n'))
    with pytest.raises(ConfigError, match='top-level key `rules`'):
        load_rules(write('alerts: []\n'))
    dup = {'rules': [rule('frame_black', name='x'), rule('frame_blurred', name='x')]}
    with pytest.raises(ConfigError, match="'x'.*unique"):
        load_rules(write(yaml.safe_dump(dup)))
    assert load_rules(write('rules: []\n')) == []
    ok = load_rules(write(yaml.safe_dump({'rules': [_good_hazard()]})))
    assert ok[0].params['region'][0] == (0.25, 0.5)


# ------------------------------------------------------------------ packaged default set

def test_packaged_default_rules_load_and_cover_every_type():
    rules = load_rules(default_rules_path())
    assert {r.type for r in rules} == set(RULE_TYPES)
    assert len({r.name for r in rules}) == len(rules)
    assert all(r.enabled for r in rules)
    e = AlertEngine.from_file()
    assert set(e.stats()) == {r.name for r in rules}


def test_default_rules_on_a_scene():
    """Smoke test of the packaged set: a person walks into the corridor of a VGA image."""
    e = AlertEngine.from_file()
    rng = np.random.default_rng(2)
    frame = Frame(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), 1, 'cam')
    person = det("person", (220, 100, 420, 470), 0.9, track=3)  # 24 % of the image
    codes = []
    t0 = time.monotonic()
    for i in range(4):
        ds = DetectionSet((person,) if i else (), 640, 480, stamp_ns=i, frame_id='cam')
        codes += [(i, a.rule) for a in e.evaluate(frame, ds, 0.1 * i)]
    assert time.monotonic() - t0 < 1.0
    # 2 of 3 debounce: the person is confirmed on its second frame, by both rules.
    assert codes == [(2, 'person_in_path'), (2, 'sudden_close_appearance')]
