"""Alerts in metres (core.alerts with positions from depth): too_close on a synthetic
approach and not on a static scene; sudden_close_appearance measures "close" when a
detection has a position. Synthetic detections, no ROS."""

import pytest

from mr_mllm_ros.core.alerts import AlertEngine, parse_rule
from mr_mllm_ros.core.errors import ConfigError
from mr_mllm_ros.core.types import Box, Detection, DetectionSet

W, H = 640, 480


def person(z, x=0.0, track=1, box=(280, 120, 360, 440), score=0.9, cls='person'):
    return Detection(0, cls, score, Box(*box), track_id=track,
                     position=None if z is None else (x, 0.2, z), position_spread=0.03)


def frame(*dets, stamp=0):
    return DetectionSet(tuple(dets), W, H, stamp, 'cam_optical')


def too_close(**kw):
    entry = dict(name='near', type='too_close', severity='WARN', debounce={'n': 3, 'm': 4},
                 cooldown_s=5.0, classes=['person'], max_distance_m=1.0, min_score=0.4)
    entry.update(kw)
    return AlertEngine([parse_rule(entry)])


def run(engine, distances, dt=0.1, **kw):
    """Alerts per frame of a person at these distances (m), one frame every dt s."""
    out = []
    for i, z in enumerate(distances):
        out.append(engine.evaluate(None, frame(person(z, **kw), stamp=i * 10**8), i * dt))
    return out


def test_too_close_fires_once_on_an_approach():
    approach = [4.0 - 0.25 * i for i in range(14)] + [0.5] * 10  # 4 m -> 0.75 m -> 0.5 m
    alerts = run(too_close(), approach)
    fired = [i for i, a in enumerate(alerts) if a]
    first_within = next(i for i, z in enumerate(approach) if (z * z + 0.04) ** 0.5 <= 1.0)
    assert fired == [first_within + 2], fired  # 3 of 4 frames within 1 m, then cooldown
    a = alerts[fired[0]][0]
    assert a.code == 'too_close' and a.rule == 'near'
    values = dict(a.values)
    assert float(values['distance_m']) <= 1.0 and values['max_distance_m'] == '1'
    assert 'too close' in a.message and 'm ahead' in a.message
    assert a.detections[0].class_name == 'person' and len(a.window_stamps_ns) == 3


def test_too_close_does_not_fire_on_a_static_scene():
    assert not any(run(too_close(), [1.6] * 50))        # standing 1.6 m away
    assert not any(run(too_close(), [None] * 50))       # no depth: never
    chair = too_close(classes=['person'])
    assert not any(chair.evaluate(None, frame(person(0.5, cls='chair')), i * 0.1)
                   for i in range(20))                  # not a class of the rule
    # a single depth glitch is ignored (debounce 3 of 4)
    assert not any(run(too_close(), [1.6, 1.6, 0.4, 1.6, 1.6, 0.4, 1.6, 1.6]))


def test_too_close_measures_the_straight_line():
    # 0.9 m ahead but 0.6 m to the side: 1.1 m away -> not within 1 m
    assert not any(run(too_close(), [0.9] * 10, x=0.6))
    assert any(run(too_close(), [0.9] * 10, x=0.3))


def test_too_close_rule_validation():
    with pytest.raises(ConfigError, match='max_distance_m'):
        too_close(max_distance_m=-1.0)
    with pytest.raises(ConfigError, match='unknown key'):
        too_close(max_distance=1.0)


def sudden(**kw):
    entry = dict(name='sudden', type='sudden_close_appearance', severity='WARN',
                 debounce={'n': 1, 'm': 1}, cooldown_s=10.0, min_area_share=0.15,
                 memory_s=2.0, classes=[], min_score=0.3, max_distance_m=2.0)
    entry.update(kw)
    return AlertEngine([parse_rule(entry)])


SMALL = (300, 200, 340, 260)   # 0.8 % of the image
LARGE = (100, 50, 500, 470)    # 55 % of the image


@pytest.mark.parametrize('box, z, max_m, fires', [
    (SMALL, 1.2, 2.0, True),    # small box (a child, a dog) but 1.2 m away: close
    (LARGE, 5.0, 2.0, False),   # large box (a bus) 5 m away: not close
    (LARGE, None, 2.0, True),   # no position: the area share decides, as before
    (SMALL, 1.2, 0.0, False),   # max_distance_m 0: area share only
])
def test_sudden_close_appearance_in_metres(box, z, max_m, fires):
    e = sudden(max_distance_m=max_m)
    assert not e.evaluate(None, frame(stamp=0), 0.0)  # the baseline frame: empty
    alerts = e.evaluate(None, frame(person(z, track=9, box=box), stamp=1), 0.1)
    assert bool(alerts) == fires
    if fires and z is not None:
        assert 'm away' in alerts[0].message
        assert float(dict(alerts[0].values)['distance_m']) == pytest.approx(1.217, abs=0.01)
