"""What counts as a scene change (core.reasoning.scene_change): a class appears or
leaves, a class count changes and stays changed, a track enters or leaves while the count
stays - never id churn, one missed box or one frame of flicker."""

import pytest

from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.reasoning.scene_change import SceneChanges
from mr_mllm_ros.core.types import Box, Detection, DetectionSet

FPS = 10


def _changes(**scene):
    """Hold 1 s, tracks count from 2 s (the frame numbers below follow from them)."""
    scene = {'change_hold_s': 1.0, 'change_track_min_age_s': 2.0, **scene}
    return SceneChanges(load_config(overrides={f'scene.{k}': v for k, v in scene.items()})
                        .scene)


def _ds(objects):
    """objects: [(class, track id)]"""
    return DetectionSet(tuple(Detection(0, c, 0.9, Box(0, 0, 10, 10), track_id=t)
                              for c, t in objects), 640, 480)


def _play(changes, frames, start_s=0.0):
    """Reasons ('' = none) of a list of per-frame object lists at FPS."""
    return [changes.update(_ds(objs), start_s + k / FPS) for k, objs in enumerate(frames)]


def _said(reasons):
    return [(k, r) for k, r in enumerate(reasons) if r]


def test_first_frame_is_a_change_and_a_still_scene_is_not():
    reasons = _play(_changes(), [[('person', 1), ('car', 2)]] * 50)
    assert _said(reasons) == [(0, 'first frame')]


def test_id_churn_is_no_change():
    """The tracker gives the one person a new id every 0.5 s: younger than
    change_track_min_age_s (2 s), no id counts as having entered or left."""
    frames = [[('person', 100 + k // 5)] for k in range(60)]
    assert _said(_play(_changes(), frames)) == [(0, 'first frame')]


def test_a_class_appearing_counts_once_it_held_change_hold_s():
    frames = [[('person', 1)]] * 10 + [[('person', 1), ('dog', -1)]] * 20
    said = _said(_play(_changes(change_hold_s=1.0), frames))
    assert said[1:] == [(18, 'dog appeared')]   # 0.8 s of 1.0 s in the window (75 %)


def test_one_frame_of_flicker_or_one_missed_box_is_no_change():
    frames = [[('person', 1), ('person', 2)]] * 40
    frames[10] = [('person', 1), ('person', 2), ('dog', -1)]     # flicker
    frames[20] = [('person', 1)]                                 # one person missed
    frames[25:27] = [[('person', 1), ('person', 2), ('person', -1)]] * 2
    assert _said(_play(_changes(), frames)) == [(0, 'first frame')]


def test_a_count_that_changes_and_stays_changed_is_a_change_named_once():
    frames = [[('person', 1), ('person', 2)]] * 10 + \
        [[('person', 1), ('person', 2), ('person', 3)]] * 40 + [[('person', 1)]] * 40
    said = _said(_play(_changes(), frames))
    # the count names what happened; the new track's age (2 s) adds nothing later
    assert said == [(0, 'first frame'), (18, 'person count 2 -> 3'),
                    (58, 'person count 3 -> 1')]


def test_a_class_leaving_is_a_change():
    frames = [[('person', 1), ('car', 5)]] * 10 + [[('person', 1)]] * 20
    assert _said(_play(_changes(), frames))[1:] == [(18, 'car left')]


def test_one_person_leaving_as_another_arrives_is_a_change():
    """Same count, other people: the tracks say it, once they are old enough."""
    frames = [[('person', 1)]] * 30 + [[('person', 2)]] * 40
    said = _said(_play(_changes(change_track_min_age_s=2.0), frames))
    assert said[1:] == [(50, 'person track 2 entered; person track 1 left')]


def test_a_short_occlusion_is_no_leaving():
    frames = [[('person', 1), ('person', 2)]] * 30
    frames += [[('person', 1)]] * 5 + [[('person', 1), ('person', 2)]] * 30  # 0.5 s behind
    assert _said(_play(_changes(), frames)) == [(0, 'first frame')]


@pytest.mark.parametrize('key', ['change_hold_s', 'change_track_min_age_s'])
def test_keys_are_validated(key):
    from mr_mllm_ros.core.errors import ConfigError
    with pytest.raises(ConfigError, match=key):
        load_config(overrides={f'scene.{key}': -1.0})


def test_a_change_settles_on_the_same_frame_wherever_the_frame_grid_lies():
    """30 Hz, hold 2 s: a class that appears at frame s settles at s + 45 (46 of the 61
    frames of the last 2 s, the frame exactly 2 s ago included), whatever float noise
    makes of k / 30 - 2.0 - not a frame early on some stamps and not on others (the
    schedule's rate step would then win or lose against the change at random)."""
    settled = {}
    for switch in range(30, 130):
        changes = _changes(change_hold_s=2.0)
        frames = [[('person', 1)]] * switch + [[('person', 1), ('dog', -1)]] * 60
        said = [(k, r) for k, r in enumerate(changes.update(_ds(objs), k / 30)
                                             for k, objs in enumerate(frames)) if r]
        settled[switch] = said[1][0] - switch
    assert set(settled.values()) == {45}, settled
