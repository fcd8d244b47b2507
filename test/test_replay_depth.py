"""Replay of RGB-D bags: the Middlebury motorcycle (real colour, ground-truth depth,
published calibration) in RealSense / plain layouts, depth as 16UC1, 32FC1 and
compressedDepth, found with no flag. results.jsonl has each detection's position; the
result bag has MarkerArray, the Foxglove MCAP has SceneUpdate (both read back with the
`mcap` reader and decoded with rosbags / protobuf, not our code); the report shows
distances. The real offline detector, no MLLM."""

import json
import math
from pathlib import Path

import pytest
import yaml
from mcap.reader import make_reader

from mr_mllm_ros.cli import main
from mr_mllm_ros.replay.bag_reader import open_bag
from mr_mllm_ros.replay.result_messages import result_typestore

from helpers.foxglove_decode import decode  # noqa: E402
from helpers.rgbd_bags import FRAME, motorcycle_bag  # noqa: E402

GT_DISTANCE_M = 2.388  # test_geometry: the bike body's mean ground-truth distance


def _replay(tmp: Path, bag: Path) -> Path:
    cfg = tmp / 'cfg.yaml'
    cfg.write_text(yaml.safe_dump({'mllm': {'backend': 'none'}}))
    out = tmp / 'out'
    assert main(['replay', str(bag), '--out', str(out), '--config', str(cfg)]) == 0
    return out


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / 'results.jsonl').read_text().splitlines()]


def _mcap(path: Path) -> list[tuple]:
    with open(path, 'rb') as f:
        return list(make_reader(f).iter_messages(log_time_order=True))


def _bike(record: dict) -> dict:
    bikes = [d for d in record['detections']['items']
             if d['class_name'] == 'motorcycle' and 'position' in d]
    assert bikes, record['detections']['items']
    return bikes[0]


@pytest.fixture(scope='module')
def realsense_mcap(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('rs')
    topics = motorcycle_bag(tmp / 'bag', 'mcap')
    return topics, _replay(tmp, tmp / 'bag')


def test_depth_topic_is_not_a_camera_and_every_frame_is_positioned(realsense_mcap):
    topics, out = realsense_mcap
    records = _records(out)
    assert {r['topic'] for r in records} == {topics['image']}
    assert len(records) == 3 and all(r['status'] == 'ok' for r in records)
    for r in records:
        assert r['depth']['topic'] == topics['depth']
        assert r['depth']['stamp_ns'] - r['stamp_ns'] == 3_000_000  # nearest, not exact
        bike = _bike(r)
        dist = math.dist((0, 0, 0), bike['position'])
        assert abs(dist - GT_DISTANCE_M) / GT_DISTANCE_M < 0.05, dist
        assert 0 < bike['position_spread'] < 0.5


def test_result_bag_has_markers_and_foxglove_mcap_has_scene_updates(realsense_mcap):
    topics, out = realsense_mcap
    store = result_typestore()
    [bag] = list((out / 'bags').iterdir())
    msgs = _mcap(next(bag.glob('*.mcap')))
    markers = [store.deserialize_cdr(m.data, 'visualization_msgs/msg/MarkerArray')
               for _, c, m in msgs if c.topic == '/cam/color/markers']
    assert len(markers) == 3
    texts = [mk.text for mk in markers[0].markers if mk.type == 9]
    assert any(t.startswith('obj') and 'motorcycle' in t for t in texts), texts
    spheres = [mk for mk in markers[0].markers if mk.type == 2 and mk.action == 0]
    assert spheres and spheres[0].header.frame_id == FRAME
    assert abs(math.dist((0, 0, 0), (spheres[0].pose.position.x, spheres[0].pose.position.y,
                                     spheres[0].pose.position.z)) - GT_DISTANCE_M) < 0.12
    [fox] = list((out / 'foxglove').glob('*.mcap'))
    updates = [(s, m) for s, c, m in _mcap(fox) if c.topic == '/cam/color/scene']
    assert len(updates) == 3
    s, m = updates[0]
    assert s.name == 'foxglove.SceneUpdate'
    update = decode(s.name, s.data, m.data)
    assert update.deletions and update.entities
    entity = next(e for e in update.entities if 'motorcycle' in e.texts[0].text)
    assert entity.frame_id == FRAME
    p = entity.spheres[0].pose.position
    assert abs(math.dist((0, 0, 0), (p.x, p.y, p.z)) - GT_DISTANCE_M) < 0.12


def test_report_shows_distances(realsense_mcap):
    _, out = realsense_mcap
    html = (out / 'report.html').read_text()
    assert 'motorcycle' in html and ' m ahead' in html


@pytest.mark.parametrize('layout, storage, encoding, compressed', [
    ('image_depth', 'sqlite3', '32FC1', False),
    ('azure_kinect', 'sqlite3', '16UC1', True),
    ('image_depth', 'mcap', '32FC1', True),
])
def test_other_layouts_and_depth_encodings(tmp_path, layout, storage, encoding, compressed):
    topics = motorcycle_bag(tmp_path / 'bag', storage, layout, '/robot', encoding, compressed,
                            frames=2)
    assert open_bag(tmp_path / 'bag').image_topics() == [topics['image']]
    records = _records(_replay(tmp_path, tmp_path / 'bag'))
    assert len(records) == 2
    for r in records:
        dist = math.dist((0, 0, 0), _bike(r)['position'])
        assert abs(dist - GT_DISTANCE_M) / GT_DISTANCE_M < 0.05, dist


def test_bag_without_camera_info_replays_without_positions(tmp_path):
    from mr_mllm_ros.core.assets.rgbd_sample import motorcycle_rgbd
    from mr_mllm_ros.replay.bag_writer import depth_message, image_message, write_bag
    s = motorcycle_rgbd()
    write_bag(tmp_path / 'bag', {'/cam/image': [image_message(s.rgb, 'rgb8', 10**9)],
                                 '/cam/depth': [depth_message(s.depth_m, '16UC1', 10**9)]},
              'sqlite3')
    records = _records(_replay(tmp_path, tmp_path / 'bag'))
    # no camera_info: not an RGB-D layout, so /cam/depth is a camera of its own (shown as
    # grey), and nothing has a position
    assert {r['topic'] for r in records} == {'/cam/image', '/cam/depth'}
    assert not any('position' in d for r in records for d in r['detections']['items'])


def test_memory_of_a_replayed_bag_answers_in_metres_with_the_frame(realsense_mcap, capsys):
    """`mr-mllm memory ask` on the replay's memory.db: no odometry in this bag, so the
    position is camera-relative, and the answer names the camera's optical frame."""
    _, out = realsense_mcap
    assert main(['memory', 'ask', 'where did you last see a motorcycle?',
                 '--db', str(out / 'memory.db')]) == 0
    said = capsys.readouterr().out
    assert '2.4 m ahead of the camera' in said and FRAME in said
    assert 'no pose source' in said


def test_bag_with_odometry_puts_positions_in_the_odom_frame(tmp_path):
    from mr_mllm_ros.core.config import load_config
    from mr_mllm_ros.core.geometry import Pose, mount_from_list
    from mr_mllm_ros.core.memory import SceneMemory
    robot = Pose.of((5.0, -2.0, 0.0), (0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)))
    motorcycle_bag(tmp_path / 'bag', 'sqlite3', odometry=robot, frames=2)
    out = _replay(tmp_path, tmp_path / 'bag')
    camera_position = _bike(_records(out)[-1])['position']
    expected = robot.compose(mount_from_list(load_config().memory.camera_mount)).apply(
        camera_position)
    memory = SceneMemory(str(out / 'memory.db'), create=False, embeddings=False)
    try:
        a = memory.ask('where did you last see a motorcycle?')
        (ev,) = a.evidence
        assert ev.position_world and ev.position_frame == 'odom'
        assert math.dist(ev.position, expected) < 0.01
        assert 'in the odom frame' in a.answer
    finally:
        memory.close()
