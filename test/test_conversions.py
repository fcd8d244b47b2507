"""mr_mllm_ros.ros.conversions: core types <-> messages, no ROS graph needed."""

import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from mr_mllm_ros.core import image_codecs
from mr_mllm_ros.core.errors import ImageConversionError
from mr_mllm_ros.core.types import (Alert, Box, Detection, DetectionSet, GroundedPhrase,
                                    GroundedText, SceneDescription, Severity, Source)
from mr_mllm_ros.ros import conversions as conv


def _detections():
    return DetectionSet(
        detections=(Detection(0, 'person', 0.9, Box(10, 20, 110, 220), track_id=4),
                    Detection(-1, 'forklift', 0.55, Box(0.5, 1.5, 30.25, 40.0),
                              source=Source.MLLM, verified=True,
                              original_class_name='truck', original_score=0.2)),
        image_width=640, image_height=480, stamp_ns=1_700_000_000_123_456_789,
        frame_id='cam_optical', model_name='yolo', timings_ms={'infer': 12.5})


def test_stamp_round_trip():
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789):
        assert conv.stamp_to_ns(conv.ns_to_stamp(ns)) == ns


def test_detection_array_round_trip_keeps_everything():
    ds = _detections()
    msg = conv.detection_array_msg(ds)
    assert msg.header.frame_id == 'cam_optical'
    assert conv.stamp_to_ns(msg.header.stamp) == ds.stamp_ns
    # vision_msgs semantics: centre + size in pixels
    assert (msg.detections[0].bbox.center_x, msg.detections[0].bbox.size_y) == (60.0, 200.0)
    back = conv.detection_set_from_msg(msg)
    assert back.stamp_ns == ds.stamp_ns and back.model_name == 'yolo'
    assert back.timings_ms == {'infer': 12.5}
    for a, b in zip(ds, back):
        assert (a.class_id, a.class_name, a.track_id, a.source, a.verified) == \
            (b.class_id, b.class_name, b.track_id, b.source, b.verified)
        assert a.score == pytest.approx(b.score, abs=1e-6)
        assert a.original_class_name == b.original_class_name
        for u, v in zip((a.box.x1, a.box.y1, a.box.x2, a.box.y2),
                        (b.box.x1, b.box.y1, b.box.x2, b.box.y2)):
            assert u == pytest.approx(v)
    assert back[1].original_score == pytest.approx(0.2)
    assert back[0].original_score is None


def test_scene_description_and_alert_messages():
    ds = _detections()
    gt = GroundedText('A man near a forklift.', '<ground>A man</ground>...',
                      (GroundedPhrase('A man', 0, 5, (0,)),), True)
    sd = SceneDescription(gt, ds, 'yolo', 'smollm2', '', 100, 12, {'generate': 300.0})
    msg = conv.scene_description_msg(sd)
    assert msg.text == gt.text and msg.grounded and msg.prompt_tokens == 100
    assert list(msg.phrases[0].detection_indices) == [0]
    assert len(msg.detections) == 2 and conv.stamp_to_ns(msg.header.stamp) == ds.stamp_ns
    back = conv.scene_description_from_msg(msg)
    assert back.grounded_text.phrases == gt.phrases and back.mllm_model == 'smollm2'
    alert = Alert(Severity.CRITICAL, 'hazard_in_region', 'forklift_zone', 'rule',
                  'forklift in zone', ds.stamp_ns, 'cam', (ds[1],),
                  (GroundedPhrase('forklift', 0, 8, (0,)),))
    am = conv.alert_msg(alert)
    assert am.severity == am.CRITICAL == 2 and am.detections[0].class_name == 'forklift'


def test_image_message_round_trip_and_errors():
    rgb = np.random.default_rng(0).integers(0, 255, (7, 5, 3), dtype=np.uint8)
    msg = conv.image_msg(rgb, 'rgb8', 42, 'f')
    frame = conv.frame_from_image(msg, camera='c')
    assert np.array_equal(frame.image, rgb) and frame.stamp_ns == 42 and frame.camera == 'c'
    bgr = conv.image_msg(np.ascontiguousarray(rgb[..., ::-1]), 'bgr8', 1, 'f')
    assert np.array_equal(conv.frame_from_image(bgr).image, rgb)
    bad = Image(height=7, width=5, encoding='rgb8', step=14, data=bytes(7 * 14))
    with pytest.raises(ImageConversionError, match='step'):
        conv.frame_from_image(bad)
    with pytest.raises(ImageConversionError, match='exceeds'):
        conv.frame_from_image(msg, max_pixels=10)


def test_compressed_round_trip():
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[:, :12] = (255, 0, 0)
    msg = conv.compressed_msg(rgb, 'png', 7, 'f')
    assert isinstance(msg, CompressedImage) and msg.format == 'png'
    frame = conv.frame_from_compressed(msg)
    assert np.array_equal(frame.image, rgb) and frame.stamp_ns == 7
    garbage = CompressedImage(format='jpeg', data=b'not a jpeg at all')
    with pytest.raises(ImageConversionError):
        conv.frame_from_compressed(garbage)


def test_image_codecs_are_what_conversions_use():
    # the node path and the core path must agree byte for byte
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    raw = image_codecs.image_to_raw(rgb, 'rgb8')
    msg = conv.image_msg(rgb, 'rgb8', 0, '')
    assert bytes(msg.data) == raw.data and msg.step == raw.step
