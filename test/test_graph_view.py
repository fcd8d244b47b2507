"""Evidence on the live graph: perception_node + scene_node (rules only, no MLLM) and
`mr-mllm view`, each a separate process (localhost, random domain from conftest).

- An alert raised on a real photo carries an evidence JPEG that decodes and shows the
  triggering box in the alert colour, plus its window stamps and rationale.
- A WebSocket client speaking the Foxglove protocol (subprotocol foxglove.sdk.v1, formerly
  foxglove.websocket.v1; the `websockets` package; protobuf decoded from the advertised
  schema) sees the channels
  advertised and receives an ImageAnnotations message with the boxes perception_node
  found on the published photo, on the photo's timestamp.
The detector is the offline YOLOv3-tiny (weak but real: `camera` -> person ~0.45).
"""

import json
import socket
import struct
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import yaml
from helpers.foxglove_decode import boxes, decode, stamp_ns  # noqa: E402
from helpers.graph_helpers import DISCOVERY_S, RESULT_S, first_exchange  # noqa: E402
from helpers.replay_bags import RULES  # noqa: E402
from sensor_msgs.msg import Image
from websockets.sync.client import connect

from mr_mllm_interfaces.msg import CornerCaseAlert, DetectionArray
from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec
from mr_mllm_ros.core.assets.sample_images import load_sample
from mr_mllm_ros.ros import conversions as conv
from mr_mllm_ros.ros.client import RosClient
from mr_mllm_ros.ros.qos import ALERTS_QOS, RESULTS_QOS

pytestmark = pytest.mark.graph
NS = 'vt'
PHOTO = 'camera'  # YOLOv3-tiny finds the person (~0.45)
# The protocol's current name (foxglove-sdk 0.30 requires it) and its earlier one.
SUBPROTOCOLS = ['foxglove.sdk.v1', 'foxglove.websocket.v1']


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def graph(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('view')
    rules = tmp / 'rules.yaml'
    rules.write_text(yaml.safe_dump(RULES))
    scene = {'mllm.backend': 'none', 'alerts.rules_file': str(rules)}
    specs = [NodeSpec('perception', NS), NodeSpec('scene', NS, parameters=scene)]
    port = _free_port()
    log = open(tmp / 'view.log', 'w')
    viewer = subprocess.Popen([sys.executable, '-m', 'mr_mllm_ros.cli', 'view',
                               '--namespace', NS, '--port', str(port), '--rate', '20'],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        with NodeGroup(specs, log_dir=tmp / 'logs'), RosClient('view_test') as ros:
            ros.port, ros.viewer_log = port, tmp / 'view.log'
            ros.pub = ros.publisher(Image, f'/{NS}/image', 10)
            ros.dets = ros.collect(DetectionArray, f'/{NS}/detections', RESULTS_QOS)
            ros.alerts = ros.collect(CornerCaseAlert, f'/{NS}/alerts', ALERTS_QOS)
            assert ros.wait_for_subscribers(ros.pub, 3, DISCOVERY_S), \
                'perception_node, scene_node and the viewer did not all subscribe'
            yield ros
    finally:
        viewer.terminate()
        viewer.wait(15)
        log.close()


def _photo(stamp: int):
    return conv.image_msg(load_sample(PHOTO), 'rgb8', stamp, 'photo_frame')


def test_alert_evidence_shows_the_boxes_of_the_triggering_frame(graph):
    assert first_exchange(graph.pub, _photo, graph.dets) is not None, 'no detections'
    # scene_node's own match to perception_node may come later than ours: a fresh photo
    # every 2 s until one of them raises the alert (stamps apart from the first exchange's).
    alert = first_exchange(graph.pub, _photo, graph.alerts, start=1000,
                           match=lambda m: m.code == 'hazard_in_region')
    assert alert is not None, 'no hazard alert for the person in the photo'
    stamp = conv.stamp_to_ns(alert.header.stamp)
    dets = graph.dets.wait_for(lambda m: conv.stamp_to_ns(m.header.stamp) == stamp, 10)
    assert dets is not None
    assert alert.evidence_image.format == 'jpeg'
    jpeg = cv2.imdecode(np.frombuffer(bytes(alert.evidence_image.data), np.uint8),
                        cv2.IMREAD_COLOR)
    assert jpeg is not None, 'evidence does not decode as JPEG'
    rgb = jpeg[..., ::-1].astype(int)
    photo = load_sample(PHOTO)
    scale = min(1.0, 640 / max(photo.shape[:2]))  # alerts.evidence_max_side
    assert rgb.shape[:2] == (round(photo.shape[0] * scale), round(photo.shape[1] * scale))
    # The alert's own box is drawn in the alert colour (red) on the frame: its outline is
    # red in the evidence and was not red in the photo.
    box = conv.detection_from_msg(alert.detections[0]).box
    assert any(box.iou(d.box) > 0.99 for d in conv.detection_set_from_msg(dets))
    outline = np.zeros(rgb.shape[:2], np.uint8)
    cv2.rectangle(outline, (round(box.x1 * scale), round(box.y1 * scale)),
                  (round(box.x2 * scale), round(box.y2 * scale)), 1, 3)
    on = outline.astype(bool)

    def red(pixels):
        return (pixels[..., 0] > 170) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)

    small = cv2.resize(photo, (rgb.shape[1], rgb.shape[0])).astype(int)
    assert red(rgb)[on].mean() > 0.3, red(rgb)[on].mean()
    assert red(small)[on].mean() < 0.05
    assert red(rgb)[~on].mean() < 0.05  # elsewhere only the label
    window = [conv.stamp_to_ns(t) for t in alert.window_stamps]
    assert window and window[-1] == stamp
    assert 'hazard_in_region' in alert.rationale and 'person' in alert.rationale
    assert {kv.key: kv.value for kv in alert.values}['class'] == 'person'


def _ws_messages(ws, deadline):
    while time.monotonic() < deadline:
        try:
            yield ws.recv(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
        except TimeoutError:
            yield None


def test_foxglove_websocket_client_gets_annotations_of_the_published_photo(graph):
    url = f'ws://127.0.0.1:{graph.port}'
    deadline = time.monotonic() + 30
    ws = None
    while ws is None:  # the viewer process may still be starting
        try:
            ws = connect(url, subprotocols=SUBPROTOCOLS, open_timeout=5)
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError('viewer not serving: ' + graph.viewer_log.read_text())
            time.sleep(0.5)
    with ws:
        assert ws.subprotocol in SUBPROTOCOLS
        channels = {}
        deadline = time.monotonic() + 20
        for raw in _ws_messages(ws, deadline):
            if isinstance(raw, str):
                msg = json.loads(raw)
                if msg['op'] == 'advertise':
                    channels.update({c['topic']: c for c in msg['channels']})
            if {f'/{NS}/image', f'/{NS}/annotations', f'/{NS}/alerts'} <= set(channels):
                break
        assert {f'/{NS}/image', f'/{NS}/annotations', f'/{NS}/scene_description',
                f'/{NS}/alerts', f'/{NS}/alerts/log'} <= set(channels), sorted(channels)
        ann_channel = channels[f'/{NS}/annotations']
        assert ann_channel['schemaName'] == 'foxglove.ImageAnnotations'
        assert ann_channel['encoding'] == 'protobuf'
        ws.send(json.dumps({'op': 'subscribe', 'subscriptions': [
            {'id': 1, 'channelId': ann_channel['id']},
            {'id': 2, 'channelId': channels[f'/{NS}/image']['id']}]}))
        import base64
        schema = base64.b64decode(ann_channel['schema'])
        stamp = 1_800_000_000_000_000_000
        got, last_pub = None, 0.0
        deadline = time.monotonic() + RESULT_S
        for raw in _ws_messages(ws, deadline):
            if time.monotonic() - last_pub > 2.0:  # fresh stamp every 2 s until one lands
                stamp += 1
                graph.pub.publish(_photo(stamp))
                last_pub = time.monotonic()
            if isinstance(raw, bytes) and raw[0] == 1:  # opcode 1: message data
                sub_id, log_time = struct.unpack_from('<IQ', raw, 1)
                if sub_id == 1:
                    got = (log_time, decode('foxglove.ImageAnnotations', schema, raw[13:]))
                    if got[1].points:
                        break
        assert got is not None and got[1].points, 'no ImageAnnotations with boxes received'
        log_time, ann = got
        when = {stamp_ns(p.timestamp) for p in ann.points}
        assert len(when) == 1
        dets = graph.dets.wait_for(lambda m: conv.stamp_to_ns(m.header.stamp) in when, 10)
        assert dets is not None, 'annotations for a frame perception_node did not detect'
        want = sorted((round(d.box.x1, 2), round(d.box.y1, 2), round(d.box.x2, 2),
                       round(d.box.y2, 2)) for d in conv.detection_set_from_msg(dets))
        assert sorted(tuple(round(v, 2) for v in b) for b in boxes(ann)) == want
        assert any('person' in t.text for t in ann.texts)
