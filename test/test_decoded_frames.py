"""ros.decoded_frames: with sharing on (the one-process mode, nodes/combined.py), two
copies of one image message - as two subscriptions receive it - are decoded once; a message
with the same stamp but other bytes is decoded anew; shared frames are read-only; the table
stays bounded; rgb8 views are not kept; sharing is off by default."""

import numpy as np
import pytest

from mr_mllm_ros.ros import conversions as conv
from mr_mllm_ros.ros.decoded_frames import DecodedFrames


@pytest.fixture
def shared():
    frames = DecodedFrames(capacity=2)
    conv.share_decoded_frames(frames)
    yield frames
    conv.share_decoded_frames(None)


def _image(value: int, stamp: int = 5) -> np.ndarray:
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[:, :, 0] = value
    return rgb


@pytest.mark.parametrize('kind', ['jpeg', 'png', 'bgr8'])
def test_one_message_received_twice_is_decoded_once(shared, kind):
    def message(value, stamp=5):
        return conv.image_msg(_image(value), 'bgr8', stamp, 'cam') if kind == 'bgr8' \
            else conv.compressed_msg(_image(value), kind, stamp, 'cam')

    first = conv.frame_from_msg(message(100), camera='front', max_pixels=10**6)
    second = conv.frame_from_msg(message(100), max_pixels=10**6)  # the other node's copy
    assert (shared.misses, shared.hits) == (1, 1)
    assert second.image is first.image and not first.image.flags.writeable
    assert (first.camera, second.camera, second.stamp_ns) == ('front', '', 5)
    with pytest.raises(ValueError):
        second.image[0, 0, 0] = 1               # one node cannot change the other's pixels

    other = conv.frame_from_msg(message(200), max_pixels=10**6)  # same stamp, other bytes
    assert shared.misses == 2 and other.image is not first.image
    assert not np.array_equal(other.image, first.image)


def test_the_table_is_bounded_and_rgb8_views_are_not_kept(shared):
    frames = [conv.frame_from_msg(conv.compressed_msg(_image(10 * s), 'png', s, 'cam'))
              for s in (1, 2, 3)]
    assert len(shared._frames) == 2                  # capacity 2: stamp 1 was dropped
    again = conv.frame_from_msg(conv.compressed_msg(_image(10), 'png', 1, 'cam'))
    assert again.image is not frames[0].image and shared.misses == 4

    raw = conv.image_msg(_image(7), 'rgb8', 9, 'cam')
    view = conv.frame_from_msg(raw)
    assert np.shares_memory(view.image, np.frombuffer(raw.data, np.uint8))
    assert all(key[1] != 9 for key in shared._frames)  # nothing to save: not kept


def test_sharing_is_off_unless_turned_on():
    msg = conv.compressed_msg(_image(50), 'png', 3, 'cam')
    a, b = conv.frame_from_msg(msg), conv.frame_from_msg(msg)
    assert a.image is not b.image and a.image.flags.writeable
