"""perception_node as a separate process on the real graph (localhost discovery, random
domain from conftest): real photos in, DetectionArray out; malformed images rejected,
counted in /diagnostics, and the node keeps detecting; configure failure and recovery."""

import shutil

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from helpers.graph_helpers import DISCOVERY_S, node_status, publish_and_wait
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from sensor_msgs.msg import CompressedImage, Image

from mr_mllm_interfaces.msg import DetectionArray
from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec
from mr_mllm_ros.core.assets.sample_images import load_sample
from mr_mllm_ros.core.types import Box
from mr_mllm_ros.ros import conversions as conv
from mr_mllm_ros.ros.client import RosClient
from mr_mllm_ros.ros.qos import RESULTS_QOS

pytestmark = pytest.mark.graph


@pytest.fixture(scope='module')
def graph(tmp_path_factory):
    logs = tmp_path_factory.mktemp('logs')
    specs = [NodeSpec('perception', 'raw_cam'),
             NodeSpec('perception', 'jpeg_cam', parameters={'camera.compressed': True})]
    with NodeGroup(specs, log_dir=logs) as group, RosClient('graph_test') as ros:
        ros.logs = logs
        ros.group = group
        yield ros


@pytest.mark.parametrize('sample, darknet_name, category', [
    ('motorcycle', 'motorcycle', 'motorcycle'), ('camera', 'person', 'person')])
@pytest.mark.parametrize('transport', ['raw', 'jpeg'])
def test_real_photo_gives_detection_with_image_header(graph, labels, sample, darknet_name,
                                                      category, transport):
    ns = f'{transport}_cam'
    msg_type = Image if transport == 'raw' else CompressedImage
    topic = f'/{ns}/image' + ('' if transport == 'raw' else '/compressed')
    pub = graph.publisher(msg_type, topic, 10)
    dets = graph.collect(DetectionArray, f'/{ns}/detections', RESULTS_QOS)
    assert graph.wait_for_subscribers(pub, 1, DISCOVERY_S), 'node did not subscribe'
    assert graph.wait_for_publishers(f'/{ns}/detections', 1, DISCOVERY_S)
    rgb = load_sample(sample)
    stamp = 1_700_000_000_000_000_000 + hash((sample, transport)) % 10**9
    msg = conv.image_msg(rgb, 'rgb8', stamp, f'{sample}_frame') if transport == 'raw' \
        else conv.compressed_msg(rgb, 'jpeg', stamp, f'{sample}_frame')
    out = publish_and_wait(graph, pub, dets, msg)
    assert out is not None, f'no DetectionArray for {sample} over {transport}'
    assert out.header.frame_id == f'{sample}_frame'
    assert conv.stamp_to_ns(out.header.stamp) == stamp
    ds = conv.detection_set_from_msg(out)
    truth = [Box(*b) for c, b in labels[sample] if c == category]
    ious = [d.box.iou(t) for d in ds if d.class_name == darknet_name for t in truth]
    assert ious and max(ious) >= 0.5, f'{[(d.class_name, d.score) for d in ds]} {ious}'
    assert (out.image_width, out.image_height) == (rgb.shape[1], rgb.shape[0])
    assert 'ssd_mobilenet_v2' in out.model_name  # the offline default detector


def test_malformed_images_are_counted_and_the_node_keeps_detecting(graph):
    ns = 'raw_cam'
    pub = graph.publisher(Image, f'/{ns}/image', 10)
    dets = graph.collect(DetectionArray, f'/{ns}/detections', RESULTS_QOS)
    diag = graph.collect(DiagnosticArray, '/diagnostics', 10)
    assert graph.wait_for_subscribers(pub, 1, DISCOVERY_S)
    base = node_status(diag, f'/{ns}/perception_node', lambda st, v: True)
    assert base is not None, 'no diagnostics from the node'
    before = int(base[1]['frames_malformed'])
    good = load_sample('motorcycle')
    h, w = good.shape[:2]
    bad = [
        Image(height=h, width=w, encoding='rgb8', step=w * 3 - 1, data=good.tobytes()),
        Image(height=h, width=w, encoding='rgb8', step=w * 3, data=good.tobytes()[:1000]),
        Image(height=h, width=w, encoding='yuv_foo', step=w * 3, data=good.tobytes()),
        Image(height=0, width=0, encoding='rgb8', step=0, data=b''),
    ]
    for i, m in enumerate(bad, 1):
        # one at a time, until the node counted it: its input queue holds one message
        pub.publish(m)
        got = node_status(diag, f'/{ns}/perception_node',
                          lambda st, v, i=i: int(v['frames_malformed']) >= before + i)
        assert got is not None, f'malformed image {i} not counted in diagnostics'
    status, values = got
    reasons = ' '.join(k for k in values if k.startswith('malformed: '))
    for word in ('step', 'truncated', 'unknown encoding', 'zero'):
        assert word in reasons, f'{word!r} not among {reasons}'
    # still alive and detecting
    stamp = 1_700_000_001_000_000_000
    out = publish_and_wait(graph, pub, dets, conv.image_msg(good, 'rgb8', stamp, 'f'))
    assert out is not None and any(d.class_name == 'motorcycle' for d in out.detections)
    assert graph.group.alive()


def test_diagnostics_report_rate_latency_and_model(graph):
    diag = graph.collect(DiagnosticArray, '/diagnostics', 10)
    got = node_status(diag, '/raw_cam/perception_node',
                      lambda st, v: int(v['frames_processed']) > 0)
    assert got is not None
    status, values = got
    assert 'ssd_mobilenet_v2' in values['model']
    assert float(values['latency_ms_p95']) > 0
    assert {'rate_hz', 'frames_dropped', 'frames_received'} <= set(values)


def test_missing_weights_fail_configure_then_recover(tmp_path, default_config):
    """Configure fails with a clear message and the node stays up; once the weights are
    in place, configure + activate through the lifecycle services works."""
    models = tmp_path / 'models'
    models.mkdir()
    spec = NodeSpec('perception', 'late_cam', parameters={'models_dir': str(models)})
    with NodeGroup([spec], log_dir=tmp_path / 'logs') as group, \
            RosClient('lifecycle_test') as ros:
        diag = ros.collect(DiagnosticArray, '/diagnostics', 10)
        got = node_status(diag, '/late_cam/perception_node',
                          lambda st, v: st.level == st.ERROR, DISCOVERY_S)
        assert got is not None and 'not found' in got[0].message
        state = ros.call(GetState, '/late_cam/perception_node/get_state', GetState.Request(),
                         resend_s=5.0)
        assert state is not None and state.current_state.label == 'unconfigured'
        assert group.alive()
        shutil.copytree(default_config.resolve_model_path('ssd-mobilenet-v2-coco'),
                        models / 'ssd-mobilenet-v2-coco')
        for t in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            r = ros.call(ChangeState, '/late_cam/perception_node/change_state',
                         ChangeState.Request(transition=Transition(id=t)), timeout=60)
            assert r is not None and r.success
        pub = ros.publisher(Image, '/late_cam/image', 10)
        dets = ros.collect(DetectionArray, '/late_cam/detections', RESULTS_QOS)
        assert ros.wait_for_subscribers(pub, 1, DISCOVERY_S)
        out = publish_and_wait(ros, pub, dets,
                                conv.image_msg(load_sample('camera'), 'rgb8', 5, 'f'))
        assert out is not None and any(d.class_name == 'person' for d in out.detections)
        log = (tmp_path / 'logs').glob('*.log')
        assert any('configure failed' in p.read_text() for p in log)
