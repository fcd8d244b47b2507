"""Depth images and camera_info messages -> core values (pure functions, no node): the
nodes hand their fields to core.depth_images and core.geometry, which check them."""

from __future__ import annotations

from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..core import depth_images
from ..core.geometry import CameraIntrinsics, intrinsics_from_camera_info


def check_depth_msg(msg: Image | CompressedImage, max_pixels: int | None = None) -> None:
    """O(1) structural checks for an intake callback; raises ImageConversionError."""
    from ..core import image_codecs
    if isinstance(msg, CompressedImage):
        depth_images.check_depth_encoding(msg.format, compressed=True)
        image_codecs.check_compressed(msg.format, msg.data, max_pixels=max_pixels)
    else:
        depth_images.check_depth_encoding(msg.encoding, compressed=False)
        image_codecs.check_raw(msg.encoding, msg.height, msg.width, msg.step, len(msg.data),
                               max_pixels=max_pixels)


def depth_from_msg(msg: Image | CompressedImage, max_pixels: int | None = None):
    """(H, W) float32 metres, NaN = no measurement; raises ImageConversionError."""
    if isinstance(msg, CompressedImage):
        return depth_images.depth_from_compressed(msg.format, msg.data, max_pixels=max_pixels)
    return depth_images.depth_from_raw(msg.encoding, msg.height, msg.width, msg.step,
                                       msg.is_bigendian, msg.data, max_pixels=max_pixels)


def intrinsics_from_msg(msg: CameraInfo) -> CameraIntrinsics:
    """Raises CameraInfoError (uncalibrated, zero size, bad K)."""
    return intrinsics_from_camera_info(list(msg.k), msg.width, msg.height)
