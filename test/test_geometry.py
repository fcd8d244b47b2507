"""core.geometry and core.depth_images: depth codecs, intrinsics, robust box depth,
positions, words, poses, RGB-D topic names; real depth from the Middlebury motorcycle.
Pure core tests: no ROS."""

import math

import numpy as np
import pytest

from mr_mllm_ros.core import depth_images as di
from mr_mllm_ros.core.assets.rgbd_sample import camera_info_k, motorcycle_rgbd
from mr_mllm_ros.core.config import CameraConfig, load_config
from mr_mllm_ros.core.errors import ConfigError, ImageConversionError
from mr_mllm_ros.core.geometry import (RGBD_CHOICES, CameraInfoError, CameraIntrinsics,
                                       DepthFrame, Pose, PoseBuffer, box_depth, distance,
                                       distance_words, find_depth_topics,
                                       intrinsics_from_camera_info, locate, mount_from_list)
from mr_mllm_ros.core.geometry.rgbd_topics import depth_topics
from mr_mllm_ros.core.types import Box, Detection, DetectionSet

SETTINGS = load_config().depth
K = CameraIntrinsics(500.0, 500.0, 319.5, 239.5, 640, 480)
# The motorcycle, labelled by looking at the left view (741 x 500): the whole bike, and a
# region inside it that is all bike (petrol tank and engine).
BIKE_BOX = Box(115, 75, 690, 455)
BIKE_BODY = (345, 185, 465, 325)


def _ds(*boxes, w=640, h=480):
    return DetectionSet(tuple(Detection(0, 'thing', 0.9, b) for b in boxes), w, h, 7, 'cam')


# ---------------------------------------------------------------------- depth codecs

@pytest.mark.parametrize('encoding', ['16UC1', 'mono16', '32FC1'])
def test_raw_depth_round_trip_in_metres(encoding):
    depth = np.full((4, 5), 2.345, np.float32)
    depth[0, 0] = np.nan
    raw = di.depth_to_raw(depth, encoding)
    back = di.depth_from_raw(raw.encoding, raw.height, raw.width, raw.step,
                             raw.is_bigendian, raw.data)
    assert back.dtype == np.float32 and back.shape == (4, 5)
    assert np.isnan(back[0, 0])
    assert np.allclose(back[1:], 2.345, atol=1e-3)


def test_16uc1_zero_is_no_measurement_and_32fc1_inf_too():
    mm = np.array([[0, 1500]], np.uint16)
    back = di.depth_from_raw('16UC1', 1, 2, 4, False, mm.tobytes())
    assert np.isnan(back[0, 0]) and back[0, 1] == pytest.approx(1.5)
    m = np.array([[np.inf, -1.0, 0.0, 3.0]], np.float32)
    back = di.depth_from_raw('32FC1', 1, 4, 16, False, m.tobytes())
    assert np.isnan(back[0, :3]).all() and back[0, 3] == 3.0


@pytest.mark.parametrize('encoding', ['16UC1', '32FC1'])
def test_compressed_depth_round_trip_with_its_header(encoding):
    depth = np.linspace(0.5, 6.0, 48, dtype=np.float32).reshape(6, 8)
    depth[2, 3] = np.nan
    fmt, data = di.encode_compressed_depth(depth, encoding)
    assert 'compressedDepth' in fmt and data[12:16] == b'\x89PNG'
    back = di.depth_from_compressed(fmt, data)
    assert np.isnan(back[2, 3])
    ok = np.isfinite(depth)
    # 16UC1 stores mm; 32FC1 stores quantised inverse depth (~2 mm at 6 m)
    assert np.allclose(back[ok], depth[ok], atol=0.001 if encoding == '16UC1' else 0.005)


@pytest.mark.parametrize('fields, match', [
    (('rgb8', 1, 1, 3, False, b'\0\0\0'), 'not a depth encoding'),
    (('16UC1', 2, 2, 4, False, b'\0' * 5), 'truncated'),
    (('32FC1', 2, 2, 4, False, b'\0' * 32), 'step 4 is smaller'),
    (('16UC1', 0, 2, 4, False, b''), 'zero-size'),
])
def test_malformed_raw_depth_is_a_clear_error(fields, match):
    with pytest.raises(ImageConversionError, match=match):
        di.depth_from_raw(*fields)


def test_malformed_compressed_depth_is_a_clear_error():
    from mr_mllm_ros.core import image_codecs
    jpeg = image_codecs.encode_compressed(np.zeros((4, 4, 3), np.uint8), 'jpeg')
    with pytest.raises(ImageConversionError, match='not a depth image'):
        di.depth_from_compressed('jpeg', jpeg)
    with pytest.raises(ImageConversionError, match='neither JPEG nor PNG'):
        di.depth_from_compressed('16UC1; compressedDepth png', b'\0' * 40)
    with pytest.raises(ImageConversionError, match='12-byte compressedDepth header'):
        png = image_codecs.encode_compressed(np.ones((4, 4), np.uint16), 'png')
        di.depth_from_compressed('32FC1; compressedDepth png', png)
    with pytest.raises(ImageConversionError, match='not supported'):
        di.check_depth_encoding('jpeg', compressed=True)


# ------------------------------------------------------------------------ camera_info

def test_intrinsics_from_camera_info_and_errors():
    k = intrinsics_from_camera_info([500, 0, 320, 0, 510, 240, 0, 0, 1], 640, 480)
    assert (k.fx, k.fy, k.cx, k.cy) == (500, 510, 320, 240)
    for bad, match in (([0] * 9, 'not calibrated'), ([1, 2, 3], '9 numbers'),
                       ([float('nan')] + [1] * 8, 'non-finite'),
                       ([-5, 0, 1, 0, 5, 1, 0, 0, 1], 'focal lengths'),
                       ([5, 0, 1, 0, 5, 1, 0, 0, 0], 'K\\[2\\]\\[2\\]')):
        with pytest.raises(CameraInfoError, match=match):
            intrinsics_from_camera_info(bad, 640, 480)
    with pytest.raises(CameraInfoError, match='width and height'):
        intrinsics_from_camera_info([500, 0, 320, 0, 510, 240, 0, 0, 1], 0, 480)


def test_intrinsics_scale_to_another_resolution_of_the_same_view():
    half = K.scaled(320, 240)
    assert half.fx == 250 and half.cx == pytest.approx(159.5)
    with pytest.raises(CameraInfoError, match='not the same view'):
        K.scaled(640, 640)


# ------------------------------------------------------------------------ box depth

def test_box_depth_is_the_median_of_valid_pixels_of_the_inner_region():
    depth = np.full((480, 640), 2.0, np.float32)
    depth[::2, ::2] = 0.0        # no measurement: ignored
    depth[1::4, 1::4] = np.nan   # ignored
    depth[200:210, 300:310] = 9.0  # a few far pixels: the median does not move
    found = box_depth(depth, Box(200, 100, 440, 380), SETTINGS)
    assert found.depth_m == 2.0 and found.spread_m == 0.0
    assert 0.5 < found.valid_share < 0.8
    # background outside the inner half does not count
    depth = np.full((480, 640), 5.0, np.float32)
    depth[190:290, 270:370] = 1.5
    assert box_depth(depth, Box(220, 140, 420, 340), SETTINGS).depth_m == 1.5


def test_box_without_enough_valid_depth_has_no_position():
    depth = np.full((480, 640), np.nan, np.float32)
    depth[200, 320] = 2.0
    ds = locate(_ds(Box(200, 100, 440, 380), Box(700, 500, 800, 600)),
                DepthFrame(depth, K), SETTINGS)
    assert [d.position for d in ds] == [None, None]
    assert 'locate' in ds.timings_ms


def test_position_is_the_box_centre_back_projected():
    depth = np.full((480, 640), 3.0, np.float32)
    ds = locate(_ds(Box(400, 200, 500, 300)), DepthFrame(depth, K), SETTINGS)
    x, y, z = ds[0].position
    assert z == pytest.approx(3.0)
    assert x == pytest.approx((450 - 0.5 - 319.5) * 3.0 / 500, abs=1e-3)
    assert y == pytest.approx((250 - 0.5 - 239.5) * 3.0 / 500, abs=1e-3)


def test_depth_at_half_resolution_and_camera_info_of_another_size():
    depth = np.full((240, 320), 4.0, np.float32)
    depth[:, :160] = 1.0  # left half near, right half far
    k_full_hd = CameraIntrinsics(1000.0, 1000.0, 639.5, 359.5, 1280, 720)
    with pytest.raises(CameraInfoError, match='not the same view'):
        locate(_ds(Box(0, 0, 10, 10)), DepthFrame(depth, k_full_hd), SETTINGS)
    ds = locate(_ds(Box(0, 0, 200, 480), Box(440, 0, 640, 480)),
                DepthFrame(depth, K.scaled(1280, 960)), SETTINGS)
    assert ds[0].position[2] == 1.0 and ds[1].position[2] == 4.0
    assert ds[0].position[0] < 0 < ds[1].position[0]


def test_motorcycle_distance_from_ground_truth_depth_within_5_percent():
    """Real data: the Middlebury motorcycle. Reference: the mean distance of the
    ground-truth 3D points of the bike's body (a region labelled by looking); the
    package's position comes from the whole-bike box (also labelled by looking)."""
    s = motorcycle_rgbd()
    x1, y1, x2, y2 = BIKE_BODY
    v, u = np.mgrid[y1:y2, x1:x2]
    z = s.depth_m[y1:y2, x1:x2]
    ok = np.isfinite(z)
    k = s.intrinsics
    pts = np.stack([(u[ok] - k.cx) * z[ok] / k.fx, (v[ok] - k.cy) * z[ok] / k.fy, z[ok]])
    reference = float(np.linalg.norm(pts, axis=0).mean())
    ds = locate(_ds(BIKE_BOX, w=741, h=500), DepthFrame(s.depth_m, k), SETTINGS)
    published = distance(ds[0].position)
    assert 2.0 < reference < 2.8
    assert abs(published - reference) / reference < 0.05, (published, reference)
    # through a 16UC1 depth image (mm), as a RealSense would send it
    raw = di.depth_to_raw(s.depth_m, '16UC1')
    depth = di.depth_from_raw('16UC1', raw.height, raw.width, raw.step, False, raw.data)
    k2 = intrinsics_from_camera_info(camera_info_k(k), 741, 500)
    again = locate(_ds(BIKE_BOX, w=741, h=500), DepthFrame(depth, k2), SETTINGS)
    assert distance(again[0].position) == pytest.approx(published, abs=0.002)


# ----------------------------------------------------------------------------- words

@pytest.mark.parametrize('position, words', [
    ((0.0, 0.0, 2.3), '2.3 m ahead'),
    ((-0.5, 0.2, 2.3), '2.4 m ahead, slightly left'),
    ((1.5, 0.0, 2.0), '2.5 m ahead, to the right'),
    ((-3.0, 0.0, 0.5), '3.0 m to the left'),
    ((0.0, 0.0, 12.4), '12 m ahead'),
])
def test_distance_words(position, words):
    assert distance_words(position) == words


# ----------------------------------------------------------------------------- poses

def test_pose_compose_inverse_and_apply():
    yaw90 = Pose.of((1, 2, 0), (0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)))
    assert yaw90.apply((1, 0, 0)) == pytest.approx((1, 3, 0))
    back = yaw90.inverse().compose(yaw90)
    assert back.apply((0.3, -0.2, 5)) == pytest.approx((0.3, -0.2, 5))
    with pytest.raises(ConfigError, match='7 numbers'):
        mount_from_list([0, 0, 0])
    with pytest.raises(ConfigError, match='no direction'):
        mount_from_list([0, 0, 0, 0, 0, 0, 0])


def test_static_object_from_two_robot_poses_agrees_within_10_cm():
    """Synthetic: a cup at (3, 1, 0.8) in the odometry frame, a camera mounted 0.2 m ahead
    of the base at 1 m height looking forward (optical: z forward, x right, y down), seen
    from two robot poses; the positions carried into the odometry frame agree."""
    # base_T_optical: x_opt = -y_base, y_opt = -z_base, z_opt = x_base
    mount = mount_from_list([0.2, 0.0, 1.0, -0.5, 0.5, -0.5, 0.5])
    cup = (3.0, 1.0, 0.8)
    seen = []
    for pose in (Pose.of((0, 0, 0), (0, 0, 0, 1)),
                 Pose.of((1.0, 0.5, 0), (0, 0, math.sin(0.3), math.cos(0.3)))):
        camera = pose.compose(mount)  # odom_T_optical
        in_camera = camera.inverse().apply(cup)
        assert in_camera[2] > 0  # in front of the camera
        # what the depth camera measures: 1 cm noise
        noisy = tuple(c + 0.01 for c in in_camera)
        seen.append(camera.apply(noisy))
    assert math.dist(seen[0], seen[1]) < 0.10
    assert math.dist(seen[0], cup) < 0.05


def test_pose_buffer_interpolates_and_refuses_gaps():
    buf = PoseBuffer(capacity=3, max_gap_ns=100)
    buf.add(0, Pose.of((0, 0, 0), (0, 0, 0, 1)), 'odom')
    buf.add(100, Pose.of((1, 0, 0), (0, 0, 0, 1)))
    assert buf.at(50).translation == pytest.approx((0.5, 0, 0))
    assert buf.at(150).translation == (1, 0, 0)  # nearest, within the gap
    assert buf.at(500) is None
    buf.add(400, Pose.of((4, 0, 0), (0, 0, 0, 1)))
    assert buf.at(250) is None  # neighbours 300 ns apart: no interpolation
    buf.add(500, Pose.of((5, 0, 0), (0, 0, 0, 1)))
    assert len(buf) == 3 and buf.frame_id == 'odom'


# ----------------------------------------------------------------------- topic names

def test_rgbd_topics_found_by_driver_naming():
    topics = ['/cam/color/image_raw', '/cam/aligned_depth_to_color/image_raw',
              '/cam/color/camera_info', '/k4a/rgb/image_raw/compressed',
              '/k4a/depth_to_rgb/image_raw/compressedDepth', '/k4a/rgb/camera_info',
              '/image', '/depth', '/camera_info', '/lonely/image', '/lonely/depth']
    found = find_depth_topics(topics)
    assert found['/cam/color/image_raw'].depth == '/cam/aligned_depth_to_color/image_raw'
    assert found['/k4a/rgb/image_raw/compressed'].camera_info == '/k4a/rgb/camera_info'
    assert found['/image'].layout == 'image_depth'
    assert '/lonely/image' not in found  # no camera_info: no positions
    assert depth_topics(topics) == {'/cam/aligned_depth_to_color/image_raw',
                                    '/k4a/depth_to_rgb/image_raw/compressedDepth', '/depth'}


def test_config_choices_of_camera_rgbd_are_the_layouts():
    import dataclasses
    field = next(f for f in dataclasses.fields(CameraConfig) if f.name == 'rgbd')
    assert field.metadata['choices'] == RGBD_CHOICES
