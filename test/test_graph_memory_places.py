"""memory_node with a pose source on the real graph (localhost, random domain): odometry
on /odom (nav_msgs/Odometry) and detections with positions (as perception_node publishes
them with depth) of a static cup seen from two robot poses; `query_memory` answers "where
did you last see the cup?" with coordinates in the odom frame, both sightings in one
place (within 10 cm), and "what was within 2 m of the cup?" in metres."""

import math
import sqlite3

import pytest
from helpers.graph_helpers import DISCOVERY_S
from helpers.waiting import wait_until
from nav_msgs.msg import Odometry

from mr_mllm_interfaces.msg import DetectionArray
from mr_mllm_interfaces.srv import QueryMemory
from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec
from mr_mllm_ros.core.geometry import Pose, mount_from_list
from mr_mllm_ros.core.types import Box, Detection, DetectionSet
from mr_mllm_ros.ros import conversions as conv
from mr_mllm_ros.ros.client import RosClient
from mr_mllm_ros.ros.qos import RESULTS_QOS

pytestmark = pytest.mark.graph
S = 1_000_000_000
T0 = 1_700_000_000 * S
MOUNT = [0.2, 0.0, 1.0, -0.5, 0.5, -0.5, 0.5]
CUP, PERSON = (3.0, 1.0, 0.8), (4.0, 0.0, 0.9)
POSES = (Pose.of((0, 0, 0), (0, 0, 0, 1)),
         Pose.of((1.0, 0.5, 0), (0, 0, math.sin(0.15), math.cos(0.15))))


def _odometry(stamp: int, pose: Pose) -> Odometry:
    m = Odometry()
    m.header = conv.header_of(stamp, 'odom')
    m.child_frame_id = 'base_link'
    p, q = m.pose.pose.position, m.pose.pose.orientation
    p.x, p.y, p.z = (float(c) for c in pose.translation)
    q.x, q.y, q.z, q.w = (float(c) for c in pose.rotation)
    return m


def _detections(stamp: int, pose: Pose) -> DetectionSet:
    camera = pose.compose(mount_from_list(MOUNT)).inverse()
    dets = tuple(Detection(0, cls, 0.9, Box(10, 10, 60, 90), track_id=track,
                           position=tuple(c + 0.01 for c in camera.apply(world)),
                           position_spread=0.02)
                 for cls, track, world in (('cup', 1, CUP), ('person', 2, PERSON)))
    return DetectionSet(dets, 640, 480, stamp, 'robot_optical')


@pytest.fixture(scope='module')
def graph(tmp_path_factory):
    logs = tmp_path_factory.mktemp('logs')
    db = tmp_path_factory.mktemp('memory') / 'memory.db'
    specs = [NodeSpec('memory', '', [], {
        'memory.cameras': ['robot'], 'memory.url': str(db), 'memory.embeddings': False,
        'memory.flush_interval_s': 0.05, 'memory.thumbnail_interval_s': 0.0,
        'memory.odometry_topic': '/odom', 'memory.camera_mount': MOUNT})]
    with NodeGroup(specs, log_dir=logs), RosClient('places_test') as ros:
        ros.logs, ros.db = logs, db
        yield ros


def _ask(ros, question):
    r = ros.call(QueryMemory, '/query_memory',
                 QueryMemory.Request(question=question, timeout_s=5.0), timeout=DISCOVERY_S,
                 resend_s=5.0)
    assert r is not None and r.success, r
    return r


def test_memory_of_places_with_odometry(graph):
    ros = graph
    odom = ros.publisher(Odometry, '/odom', 10)
    dets = ros.publisher(DetectionArray, '/robot/detections', RESULTS_QOS)
    assert ros.wait_for_subscribers(odom, 1, DISCOVERY_S), f'logs in {ros.logs}'
    assert ros.wait_for_subscribers(dets, 1, DISCOVERY_S), f'logs in {ros.logs}'

    def send():
        for k, pose in enumerate(POSES):
            t = T0 + k * S
            for dt in (-S // 10, 0, S // 10):  # poses around the image stamp
                odom.publish(_odometry(t + dt, pose))
        for k, pose in enumerate(POSES):
            dets.publish(conv.detection_array_msg(_detections(T0 + k * S, pose)))

    def answered():
        send()
        r = _ask(ros, 'where did you last see the cup?')
        return r if 'odom' in r.answer and len(r.evidence) == 1 else None

    assert wait_until(lambda: answered() is not None, 30.0, every=1.0), \
        f'no answer in the odom frame; logs in {ros.logs}'
    r = _ask(ros, 'where did you last see the cup?')
    (ev,) = r.evidence
    assert ev.position_valid and ev.position_frame == 'odom'
    assert math.dist((ev.position.x, ev.position.y, ev.position.z), CUP) < 0.10
    assert ' m in the odom frame' in r.answer
    with sqlite3.connect(f'file:{ros.db}?mode=ro', uri=True) as con:  # both robot poses
        rows = con.execute("SELECT px, py, pz FROM observations WHERE class_name = 'cup' "
                           "AND position_frame = 'odom'").fetchall()
    assert len({r for r in rows}) >= 2 and max(math.dist(a, b) for a in rows for b in rows) < 0.1
    near = _ask(ros, 'what was within 2 m of the cup?')
    assert near.kind == 'near' and 'person' in near.answer and 'odom' in near.answer
