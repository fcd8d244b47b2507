"""memory_node on the real graph (separate processes, localhost, random domain):
perception_node with the offline default detector (YOLOv3-tiny + ByteTrack) sees
grace_hopper (a tie) for three frames, then the camera photo (no tie) for a while;
`query_memory` answers "when did you last see a tie?" with that last tie frame's stamp
and track id (and the track's thumbnail), and an unseen class with "never observed" and
the watched time span."""

import os
import time

import cv2
import pytest
from helpers.graph_helpers import DISCOVERY_S, publish_and_wait, stamp_is
from helpers.waiting import wait_until
from sensor_msgs.msg import Image

from mr_mllm_interfaces.msg import DetectionArray
from mr_mllm_interfaces.srv import QueryMemory
from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec
from mr_mllm_ros.core.assets.sample_images import load_sample
from mr_mllm_ros.ros import conversions as conv
from mr_mllm_ros.ros.client import RosClient
from mr_mllm_ros.ros.qos import RESULTS_QOS

pytestmark = pytest.mark.graph
NS = 'memcam'
T0 = 1_700_000_000_000_000_000
HALF_S = 500_000_000
WARM0 = T0 - 100 * 1_000_000_000  # warm-up frames: 100 s before the scene


@pytest.fixture(scope='module')
def graph(tmp_path_factory):
    logs = tmp_path_factory.mktemp('logs')
    db = tmp_path_factory.mktemp('memory') / 'memory.db'
    specs = [NodeSpec('perception', NS, [], {'perception.publish_debug_image': False}),
             NodeSpec('memory', '', [], {'memory.cameras': [NS], 'memory.url': str(db),
                                         'memory.embeddings': False,
                                         'memory.flush_interval_s': 0.05})]
    with NodeGroup(specs, log_dir=logs) as group, RosClient('memory_test') as ros:
        pub = ros.publisher(Image, f'/{NS}/image', 10)
        dets = ros.collect(DetectionArray, f'/{NS}/detections', RESULTS_QOS)
        assert ros.wait_for_subscribers(pub, 1, DISCOVERY_S), f'logs in {logs}'
        # Warm-up frames until perception answers; memory_node must be up too.
        blank = load_sample('camera')[:64, :64]
        assert _warm_up(pub, blank, dets), f'no detections; logs in {logs}'
        assert wait_until(lambda: ros.node.count_subscribers(f'/{NS}/detections') >= 2,
                          DISCOVERY_S, every=0.2), f'logs in {logs}'
        assert ros.call(QueryMemory, '/query_memory', QueryMemory.Request(
            question='what did you see?', timeout_s=5.0), timeout=DISCOVERY_S,
            resend_s=5.0) is not None
        yield ros, pub, dets, group, logs


def _warm_up(pub, image, dets, timeout=120.0):
    """A fresh stamp every 5 s until perception answers the newest (first_exchange's
    rule, with stamps from WARM0 so the memory's watched span stays in 2023)."""
    deadline, stamp = time.monotonic() + timeout, WARM0
    while time.monotonic() < deadline:
        stamp += 1
        pub.publish(conv.image_msg(image, 'rgb8', stamp, 'cam'))
        if dets.wait_for(stamp_is(stamp), 5.0) is not None:
            return True
    return False


def _ask(ros, question, camera=''):
    req = QueryMemory.Request(question=question, camera=camera, timeout_s=10.0)
    return ros.call(QueryMemory, '/query_memory', req, timeout=30.0, resend_s=10.0)


def test_last_seen_tie_and_never_observed_with_the_watched_span(graph):
    ros, pub, dets, group, logs = graph
    frames = ['grace_hopper'] * 3 + ['camera'] * 8  # a tie, then none for 4 s
    stamps, replies = [], []
    for i, sample in enumerate(frames):
        stamp = T0 + i * HALF_S
        reply = publish_and_wait(ros, pub, dets,
                                 conv.image_msg(load_sample(sample), 'rgb8', stamp, 'cam'))
        assert reply is not None, f'no detections for frame {i}; logs in {logs}'
        stamps.append(stamp)
        replies.append(reply)
    last_tie = replies[2]
    ties = [d for d in last_tie.detections if d.class_name == 'tie']
    assert ties and all(d.track_id >= 0 for d in ties), \
        [(d.class_name, d.track_id) for d in last_tie.detections]
    assert not any(d.class_name == 'tie' for r in replies[3:] for d in r.detections)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the writer commits every 50 ms
        answer = _ask(ros, 'When did you last see a tie?')
        assert answer is not None and answer.success, answer and answer.error
        if conv.stamp_to_ns(answer.watched_to) == stamps[-1]:
            break
        time.sleep(0.3)
    assert answer.kind == 'last_seen', answer.answer
    (ev,) = answer.evidence
    assert conv.stamp_to_ns(ev.stamp) == stamps[2]
    # That frame's tie (YOLOv3-tiny boxes this tie twice: the one with the highest id).
    tie = max(ties, key=lambda d: d.track_id)
    assert ev.track_id == tie.track_id and ev.class_name == 'tie'
    assert ev.camera == NS
    assert abs(ev.bbox.center_x - tie.bbox.center_x) < 1e-3
    assert f'track {ev.track_id}' in answer.answer and 'kept watching for 4.0 s' in \
        answer.answer
    assert answer.latency_s > 0
    # The track's thumbnail (memory.thumbnail_interval_s: taken when it was first tracked).
    assert ev.thumbnail.endswith('.jpg') and os.path.getsize(ev.thumbnail) > 500
    assert cv2.imread(ev.thumbnail) is not None
    print(f'\n{answer.answer}')

    never = _ask(ros, 'Have you ever seen a giraffe?')
    assert never.success and never.kind == 'never_observed' and not never.evidence
    assert conv.stamp_to_ns(never.watched_to) == stamps[-1]
    # watched_from: the warm-up frames opened an earlier span (100 s before: a gap, so
    # not counted as watched time); the memory says where it started watching.
    assert WARM0 < conv.stamp_to_ns(never.watched_from) < WARM0 + 100
    assert 'never observed a giraffe' in never.answer and 'frames' in never.answer
    print(never.answer)
    assert group.alive()


def test_bad_questions_get_a_clear_error_and_the_node_keeps_serving(graph):
    ros = graph[0]
    bad = _ask(ros, '   ')
    assert bad is not None and not bad.success and 'empty question' in bad.error
    good = _ask(ros, 'when did you last see a tie?', camera='no_such_camera')
    assert good.success and good.kind == 'never_observed'
    assert 'camera no_such_camera' in good.answer
