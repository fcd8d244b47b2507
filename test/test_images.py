"""core.images, the image jobs: a file read as RGB, an RGB image in an encoding's channel
layout, boxes drawn on a copy, and the annotated or plain JPEGs scaled to a side."""

import cv2
import numpy as np
import pytest
from helpers.builders import det, dset

from mr_mllm_ros.core import image_codecs, images
from mr_mllm_ros.core.errors import ImageConversionError
from mr_mllm_ros.core.images import class_color, draw_detections
from mr_mllm_ros.core.types import Box, Detection, DetectionSet


def test_the_highest_scored_label_is_drawn_on_top():
    # the demo's cat: two lower-scored 'bed' boxes share its top-left corner
    cat = Detection(15, 'cat', 0.91, Box(8, 0, 400, 290))
    bed = Detection(59, 'bed', 0.26, Box(0, 4, 420, 295))
    rgb = np.full((300, 450, 3), 255, np.uint8)
    out = draw_detections(rgb, DetectionSet((cat, bed), 450, 300))
    assert (rgb == 255).all()  # drawn on a copy
    label = out[2:10, 12:40].reshape(-1, 3)  # inside obj0's label background
    colours = {tuple(int(v) for v in c) for c in label}
    assert tuple(class_color('cat')) in colours and tuple(class_color('bed')) not in colours


def _photo():
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 0] = 200  # red
    rgb[:, 30:, 2] = 120
    return rgb


def test_a_file_is_read_as_rgb_and_written_back(tmp_path):
    rgb = _photo()
    images.write_rgb(tmp_path / 'p.png', rgb)
    assert np.array_equal(images.read_rgb(tmp_path / 'p.png'), rgb)
    with pytest.raises(ImageConversionError, match='cannot read image'):
        images.read_rgb(tmp_path / 'missing.jpg')


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8', 'mono16',
                                      '16UC1'])
def test_rgb_in_an_encoding_layout_reads_back_as_the_same_picture(encoding):
    rgb = _photo()
    raw = image_codecs.image_to_raw(images.rgb_to_encoding(rgb, encoding), encoding)
    back = image_codecs.raw_to_rgb8(raw.encoding, raw.height, raw.width, raw.step, False,
                                    raw.data)
    if encoding == 'mono8':
        assert np.array_equal(back[..., 0], cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    elif encoding in ('mono16', '16UC1'):
        assert back.shape == rgb.shape  # depth-like: read back as stretched grey
    else:
        assert np.array_equal(back, rgb)
    with pytest.raises(ImageConversionError, match='yuv422'):
        images.rgb_to_encoding(rgb, 'yuv422')


def test_annotated_jpeg_scales_image_and_boxes_and_a_plain_jpeg_shrinks_only():
    rgb = np.full((800, 1200, 3), 40, np.uint8)
    ds = dset(det('person', (60, 400, 180, 760)), w=1200, h=800)
    jpg = images.annotated_jpeg(rgb, ds, {0}, max_side=600, quality=90)
    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].astype(int)
    assert img.shape[:2] == (400, 600)
    red = (img[..., 0] > 120) & (img[..., 0] - np.maximum(img[..., 1], img[..., 2]) > 60)
    assert red[210:370, 27:34].any(axis=1).mean() > 0.9  # the box's left edge, halved
    assert not red[210:370, 40:80].any()  # nothing drawn inside the box
    small = images.annotated_jpeg(rgb[:40, :60], ds, max_side=120, quality=90, enlarge=True)
    assert cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (80, 120)
    plain = images.jpeg(rgb[:40, :60], 85, max_side=120)  # never enlarged
    assert cv2.imdecode(np.frombuffer(plain, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (40, 60)
