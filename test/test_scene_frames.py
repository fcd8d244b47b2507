"""ros.scene_frames: image and detection messages paired by stamp, decoded once through
conversions.frame_from_msg (raw and compressed alike); a question about the newest frame
reuses its decoded pair, one about an older stamp decodes that one."""

import numpy as np
import pytest
from helpers.builders import det, dset

from mr_mllm_ros.ros import conversions as conv
from mr_mllm_ros.ros.scene_frames import SceneFrames


@pytest.mark.parametrize('compressed', [False, True])
def test_the_newest_pair_is_decoded_once_and_older_ones_on_demand(compressed):
    frames = SceneFrames(capacity=4, max_pixels=10**6)
    rgb = np.zeros((32, 48, 3), np.uint8)
    for stamp in (1, 2):
        rgb[:] = 60 * stamp
        msg = conv.compressed_msg(rgb, 'png', stamp, 'cam') if compressed \
            else conv.image_msg(rgb, 'rgb8', stamp, 'cam')
        frames.add_image(msg)
        assert frames.add_detections(conv.detection_array_msg(
            dset(det('cup'), w=48, h=32, stamp=stamp)))
    newest = frames.take_newest()
    assert newest[0].stamp_ns == 2 and int(newest[0].image[0, 0, 0]) == 120
    assert frames.take_newest() is None                # taken once
    assert frames.lookup(2) is newest and frames.lookup(0) is newest  # not decoded again
    older = frames.lookup(1)
    assert older[0].stamp_ns == 1 and int(older[0].image[0, 0, 0]) == 60
    assert [d.class_name for d in older[1]] == ['cup']
    assert frames.lookup(7).startswith('no frame with stamp 7 ns')
