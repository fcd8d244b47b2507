"""perception_node with depth on the real graph (localhost, random domain): the RealSense
topic layout (camera.rgbd realsense), the Middlebury motorcycle's colour image, its
ground-truth depth (16UC1, mm) and camera_info in; DetectionArray with the motorcycle's
3D position and a MarkerArray out. Malformed depth and camera_info are counted in
/diagnostics and the node keeps detecting (without positions)."""

import math

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from helpers.graph_helpers import DISCOVERY_S, first_exchange, node_status
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import MarkerArray

from mr_mllm_interfaces.msg import DetectionArray
from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec
from mr_mllm_ros.core import depth_images
from mr_mllm_ros.core.assets.rgbd_sample import camera_info_k, motorcycle_rgbd
from mr_mllm_ros.ros import conversions as conv
from mr_mllm_ros.ros.client import RosClient
from mr_mllm_ros.ros.qos import RESULTS_QOS

pytestmark = pytest.mark.graph
NS = 'rs'
FRAME = 'rs_color_optical_frame'
GT_DISTANCE_M = 2.388  # test_geometry: the bike body's mean ground-truth distance


@pytest.fixture(scope='module')
def graph(tmp_path_factory):
    logs = tmp_path_factory.mktemp('logs')
    specs = [NodeSpec('perception', NS, parameters={'camera.rgbd': 'realsense',
                                                    'camera.qos_reliability': 'reliable'})]
    with NodeGroup(specs, log_dir=logs) as group, RosClient('depth_test') as ros:
        ros.group = group
        yield ros


def _info(stamp, k=None):
    s = motorcycle_rgbd()
    return CameraInfo(header=conv.header_of(stamp, FRAME), width=741, height=500,
                      distortion_model='plumb_bob', d=[0.0] * 5,
                      k=k if k is not None else camera_info_k(s.intrinsics))


def _depth(stamp):
    raw = depth_images.depth_to_raw(motorcycle_rgbd().depth_m, '16UC1')
    return Image(header=conv.header_of(stamp, FRAME), height=raw.height, width=raw.width,
                 encoding=raw.encoding, is_bigendian=0, step=raw.step, data=raw.data)


def _sender(graph, depth=_depth, info=_info):
    rgb = motorcycle_rgbd().rgb
    pubs = {name: graph.publisher(t, f'/{NS}/{topic}', 10) for name, t, topic in (
        ('image', Image, 'color/image_raw'),
        ('depth', Image, 'aligned_depth_to_color/image_raw'),
        ('info', CameraInfo, 'color/camera_info'))}
    for pub in pubs.values():
        assert graph.wait_for_subscribers(pub, 1, DISCOVERY_S), 'node did not subscribe'

    def send(stamp):
        pubs['info'].publish(info(stamp))
        pubs['depth'].publish(depth(stamp))
        return conv.image_msg(rgb, 'rgb8', stamp, FRAME)
    return pubs['image'], send


def test_motorcycle_position_and_markers_from_realsense_topics(graph):
    dets = graph.collect(DetectionArray, f'/{NS}/detections', RESULTS_QOS)
    markers = graph.collect(MarkerArray, f'/{NS}/markers', RESULTS_QOS)
    image_pub, send = _sender(graph)
    assert graph.wait_for_publishers(f'/{NS}/markers', 1, DISCOVERY_S)
    out = first_exchange(image_pub, send, dets, start=1_000_000,
                         match=lambda m: any(d.position_valid for d in m.detections))
    assert out is not None, 'no DetectionArray with a position'
    ds = conv.detection_set_from_msg(out)
    bikes = [d for d in ds if d.class_name == 'motorcycle' and d.position is not None]
    assert bikes, [(d.class_name, d.position) for d in ds]
    dist = math.dist((0, 0, 0), bikes[0].position)
    assert abs(dist - GT_DISTANCE_M) / GT_DISTANCE_M < 0.05, dist
    assert out.header.frame_id == FRAME
    mk = markers.wait_for(lambda m: m.markers and m.markers[0].header.stamp == out.header.stamp,
                          10.0)
    assert mk is not None, 'no MarkerArray for the frame'
    texts = [m.text for m in mk.markers if m.type == 9]
    assert any('motorcycle' in t and ' m' in t for t in texts), texts
    assert mk.markers[0].action == 3  # DELETEALL first


def test_malformed_depth_and_camera_info_are_counted_and_detection_goes_on(graph):
    dets = graph.collect(DetectionArray, f'/{NS}/detections', RESULTS_QOS)
    diag = graph.collect(DiagnosticArray, '/diagnostics', 10)

    def bad_depth(stamp):
        return Image(header=conv.header_of(stamp, FRAME), height=500, width=741,
                     encoding='rgb8', step=741 * 3, data=bytes(741 * 500 * 3))

    image_pub, send = _sender(graph, depth=bad_depth, info=lambda s: _info(s, [0.0] * 9))
    out = first_exchange(image_pub, send, dets, start=2_000_000)
    assert out is not None, 'the node stopped detecting'
    assert not any(d.position_valid for d in out.detections)
    st = node_status(diag, f'/{NS}/perception_node',
                     lambda st, v: any('not a depth encoding' in k for k in v), 20.0)
    assert st is not None, 'malformed depth not counted in /diagnostics'
    # a truncated depth and an uncalibrated camera_info: counted, the frame still goes out
    image_pub, send = _sender(graph, info=lambda s: _info(s, [0.0] * 9))
    out = first_exchange(image_pub, send, dets, start=3_000_000)
    assert out is not None and not any(d.position_valid for d in out.detections)
    st = node_status(diag, f'/{NS}/perception_node',
                     lambda st, v: any('not calibrated' in k for k in v), 20.0)
    assert st is not None, 'uncalibrated camera_info not counted'
    # and good inputs give positions again
    image_pub, send = _sender(graph)
    out = first_exchange(image_pub, send, dets, start=4_000_000,
                         match=lambda m: any(d.position_valid for d in m.detections))
    assert out is not None


