"""A memory of places (core.memory with positions): observations keep their 3D position,
in the odometry frame with a pose source (odometry + the camera's mounting), else in the
camera's optical frame (said so); "where did you last see ...?" answers in metres with the
frame named; "what was within 2 m of ...?" in metres; a static object seen from two robot
poses lands in one place. SQLite and PostgreSQL (a real server, as test_memory)."""

import math
import sqlite3

import pytest
from helpers.memory_fixtures import memory_config

from mr_mllm_ros.core.geometry import Pose, mount_from_list
from mr_mllm_ros.core.memory import SceneMemory
from mr_mllm_ros.core.types import Box, Detection, DetectionSet

S = 1_000_000_000
T0 = 1_700_000_000 * S
# base -> camera optical frame: 0.2 m ahead of the base, 1 m up, looking forward
MOUNT = mount_from_list([0.2, 0.0, 1.0, -0.5, 0.5, -0.5, 0.5])
CUP = (3.0, 1.0, 0.8)      # in the odometry frame
PERSON = (4.0, 0.0, 0.9)
CHAIR = (9.0, -4.0, 0.5)


def _seen(pose: Pose, stamp: int, objects, noise=0.01):
    """What the camera measures at robot pose `pose`: each (class, track, world point)
    in the camera's optical frame (+ noise), as detections with positions."""
    camera = pose.compose(MOUNT)
    dets = []
    for cls, track, world in objects:
        p = tuple(c + noise for c in camera.inverse().apply(world))
        assert p[2] > 0, 'behind the camera'
        dets.append(Detection(0, cls, 0.9, Box(10, 10, 50, 50), track_id=track, position=p,
                              position_spread=0.02))
    return DetectionSet(tuple(dets), 640, 480, stamp, 'front_optical')


POSES = (Pose.of((0, 0, 0), (0, 0, 0, 1)),
         Pose.of((1.0, 0.5, 0), (0, 0, math.sin(0.15), math.cos(0.15))))


@pytest.fixture
def memory(url):
    m = SceneMemory.open(memory_config(), url=url)
    yield m
    m.close()


def _fill_with_odometry(memory):
    for k, pose in enumerate(POSES):
        ds = _seen(pose, T0 + k * S, [('cup', 1, CUP), ('person', 2, PERSON),
                                      ('chair', 3, CHAIR)])
        memory.record_detections(ds, 'front', to_world=pose.compose(MOUNT), world_frame='odom')
    assert memory.flush(60)


def test_where_did_you_last_see_answers_in_metres_in_the_odometry_frame(memory):
    _fill_with_odometry(memory)
    a = memory.ask('Where did you last see the cup?')
    assert a.kind == 'last_seen'
    assert 'in the odom frame' in a.answer and ' m ' in a.answer
    (ev,) = a.evidence
    assert ev.position_frame == 'odom' and ev.position_world
    assert math.dist(ev.position, CUP) < 0.05
    assert a.facts['frame'] == 'odom'
    # the cup from both robot poses: one place (within 10 cm)
    rows = memory._db.query("SELECT px, py, pz FROM observations WHERE class_name = 'cup' "
                            'ORDER BY stamp_ns')
    assert len(rows) == 2 and math.dist(rows[0], rows[1]) < 0.10


def test_what_was_within_2_m_of_the_cup(memory):
    _fill_with_odometry(memory)
    a = memory.ask('What was within 2 m of the cup?')
    assert a.kind == 'near'
    assert set(a.facts['objects']) == {'person'}  # the chair is 10 m away
    (near,) = a.facts['objects']['person']
    assert near['distance_m'] == pytest.approx(math.dist(CUP, PERSON), abs=0.05)
    assert 'Within 2.0 m of the cup' in a.answer and 'odom' in a.answer
    a = memory.ask('which objects were within 1.5 m of (9, -4)?')
    assert set(a.facts['objects']) == {'chair'}
    assert memory.ask('what was within 2 m of the dog?').evidence == ()


def test_without_a_pose_source_positions_are_camera_relative_and_said_so(memory):
    ds = DetectionSet((Detection(3, 'motorcycle', 0.9, Box(115, 75, 690, 455),
                                 position=(0.217, 0.023, 2.38)),), 741, 500, T0,
                      'moto_optical')
    memory.record_detections(ds, 'garage')
    assert memory.flush(60)
    a = memory.ask('where did you last see a motorcycle?')
    assert '2.4 m ahead' in a.answer and 'moto_optical' in a.answer
    assert 'no pose source' in a.answer
    (ev,) = a.evidence
    assert not ev.position_world and ev.position == (0.217, 0.023, 2.38)


def test_a_memory_written_before_positions_still_opens(tmp_path):
    path = tmp_path / 'old.db'
    con = sqlite3.connect(path)
    con.execute('CREATE TABLE observations (stamp_ns BIGINT NOT NULL, camera TEXT NOT NULL, '
                'run INTEGER NOT NULL, track_id BIGINT NOT NULL, class_name TEXT NOT NULL, '
                'score REAL NOT NULL, x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, '
                'y2 REAL NOT NULL, image_w INTEGER NOT NULL, image_h INTEGER NOT NULL, '
                'thumbnail TEXT)')
    con.execute("INSERT INTO observations VALUES (1, 'cam', 1, 4, 'tie', 0.8, 1, 2, 3, 4, "
                "640, 480, NULL)")
    con.commit()
    con.close()
    memory = SceneMemory(str(path), embeddings=False)
    try:
        a = memory.ask('when did you last see a tie?')
        assert a.evidence[0].position is None and 'track 4' in a.answer
    finally:
        memory.close()
