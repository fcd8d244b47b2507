"""`mr-mllm record` (graph test): a separate recorder process records what this test
publishes, stops once it has them all (or cleanly on SIGINT), and rosbags reads the bag
back message for message. Localhost discovery and a random domain come from conftest.py.
Publishers are reliable: each message is waited for until the recorder acknowledged it."""

import queue
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
from helpers.waiting import wait_until
from rclpy.duration import Duration
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Image

from mr_mllm_interfaces.msg import DetectionArray
from mr_mllm_ros.core.types import Box, Detection, DetectionSet
from mr_mllm_ros.replay import bag_reader
from mr_mllm_ros.ros import conversions as conv
from mr_mllm_ros.ros.client import RosClient
from mr_mllm_ros.ros.qos import RESULTS_QOS

pytestmark = pytest.mark.graph
N = 5
DISCOVERY_S = 30.0


def _recorder(tmp_path, storage, *extra):
    out = tmp_path / f'rec_{storage}'
    cmd = [sys.executable, '-m', 'mr_mllm_ros.cli', 'record', '--topics', '/rec_test/image',
           '/rec_test/detections', '--out', str(out), '--storage', storage,
           '--discovery-timeout', '20', *extra]
    return out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True)


def _delivered(*publishers) -> bool:
    """Every message of these reliable publishers acknowledged by every subscriber."""
    return all(p.wait_for_all_acked(Duration(seconds=DISCOVERY_S)) for p in publishers)


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_record_then_read_back(tmp_path, storage):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(N)]
    with RosClient('record_test_publisher') as ros:
        img_pub = ros.publisher(Image, '/rec_test/image', 10)
        det_pub = ros.publisher(DetectionArray, '/rec_test/detections', RESULTS_QOS)
        # It stops by itself once it has every message (--max-messages).
        out, proc = _recorder(tmp_path, storage, '--duration', '60', '--max-messages',
                              str(2 * N))
        try:
            # The recorder subscribes once it has seen both publishers.
            assert ros.wait_for_subscribers(img_pub, 1, DISCOVERY_S), proc.poll()
            assert ros.wait_for_subscribers(det_pub, 1, DISCOVERY_S)
            stamps = []
            for i, rgb in enumerate(frames):
                stamp = ros.now_ns()
                stamps.append(stamp)
                img_pub.publish(conv.image_msg(rgb, 'rgb8', stamp, 'rec_cam'))
                ds = DetectionSet((Detection(0, 'person', 0.5, Box(1.0, 2.0, 30.0, 40.0)),),
                                  64, 48, stamp, 'rec_cam', 'test')
                det_pub.publish(conv.detection_array_msg(ds))
            assert _delivered(img_pub, det_pub)  # all N within the publishers' depth 10
            text, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, text
    assert f'recorded {2 * N} messages' in text, text
    with Reader(out) as reader:
        counts = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        assert counts == {'/rec_test/image': ('sensor_msgs/msg/Image', N),
                          '/rec_test/detections': ('mr_mllm_interfaces/msg/DetectionArray', N)}
        raws = [(c, t, d) for c, t, d in reader.messages()]
    got = [bag_reader.decode(bag_reader.RawMessage(c.topic, c.msgtype, t, d))
           for c, t, d in raws if c.topic == '/rec_test/image']
    assert [m.stamp_ns for m in got] == stamps
    for m, rgb in zip(got, frames):
        assert m.ok and np.array_equal(m.frame.image, rgb)
    det = next(d for c, _, d in raws if c.topic == '/rec_test/detections')
    from rclpy.serialization import deserialize_message
    assert deserialize_message(det, DetectionArray).detections[0].class_name == 'person'


def test_record_stops_cleanly_on_sigint(tmp_path):
    with RosClient('record_sigint_publisher') as ros:
        ros.publisher(Image, '/rec_test/image', 10)
        ros.publisher(DetectionArray, '/rec_test/detections', RESULTS_QOS)
        out, proc = _recorder(tmp_path, 'sqlite3', '--duration', '60')
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout],
                         daemon=True).start()
        try:
            text = ''
            while 'Ctrl-C stops' not in text:  # subscribed; each wait is bounded
                text += lines.get(timeout=DISCOVERY_S)
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    while 'recorded' not in text:  # the rest of the output (the reader reaches its end)
        text += lines.get(timeout=10)
    assert proc.returncode == 0 and 'recorded 0 messages' in text, text
    with Reader(out) as reader:  # closed: metadata written
        assert {c.topic: c.msgcount for c in reader.connections} == {
            '/rec_test/image': 0, '/rec_test/detections': 0}


def test_record_refuses_an_existing_bag_and_missing_topics(tmp_path):
    (tmp_path / 'exists').mkdir()
    cmd = [sys.executable, '-m', 'mr_mllm_ros.cli', 'record', '--topics', '/nobody/here',
           '--discovery-timeout', '1']
    done = subprocess.run([*cmd, '--out', str(tmp_path / 'exists')], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and 'exists already' in done.stderr
    done = subprocess.run([*cmd, '--out', str(tmp_path / 'new')], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and 'no publisher of /nobody/here' in done.stdout
    assert not (tmp_path / 'new').exists()


def test_demo_recording_on_a_multithreaded_executor(tmp_path):
    """`mr-mllm demo --record`: the recorder lives on the demo's RosClient node, whose
    callbacks run on several threads; every result message lands in the bag."""
    from mr_mllm_interfaces.msg import CornerCaseAlert
    from mr_mllm_ros.app.record import demo_recording
    from mr_mllm_ros.core.types import Alert, Severity
    from mr_mllm_ros.ros.qos import ALERTS_QOS
    out = tmp_path / 'demo_bag'
    with RosClient('demo_rec_publisher') as pub_side, RosClient('demo_rec') as ros:
        with demo_recording(ros.node, str(out), 'dr_cam') as recorder:
            det_pub = pub_side.publisher(DetectionArray, '/dr_cam/detections', RESULTS_QOS)
            alert_pub = pub_side.publisher(CornerCaseAlert, '/dr_cam/alerts', ALERTS_QOS)
            assert pub_side.wait_for_subscribers(det_pub, 1, DISCOVERY_S)
            assert pub_side.wait_for_subscribers(alert_pub, 1, DISCOVERY_S)
            for i in range(N):
                ds = DetectionSet((), 64, 48, 1000 + i, 'cam', 'test')
                det_pub.publish(conv.detection_array_msg(ds))
                alert_pub.publish(conv.alert_msg(Alert(Severity.WARN, 'frame_black', 'dark',
                                                       'rule', 'dark', 1000 + i, 'cam')))
            assert _delivered(det_pub, alert_pub)
            # acknowledged = in the recorder's reader; its callbacks then queue them
            assert wait_until(lambda: recorder.total >= 2 * N, 20)
    with Reader(out) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts['/dr_cam/detections'] == N and counts['/dr_cam/alerts'] == N
    assert counts['/dr_cam/scene_description'] == 0
