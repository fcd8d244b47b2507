"""QoS profiles by name, never magic numbers in the nodes. Users change the camera input's
through config keys (camera.qos_reliability, camera.qos_depth); the others are fixed here.
ROS's own QoS override parameters (`qos_overrides.<topic>.*`) are not wired: the nodes
create no subscription or publisher with QoSOverridingOptions, so setting them does
nothing."""

from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, QoSReliabilityPolicy,
                       qos_profile_sensor_data)

from ..core.config import CameraConfig
from ..core.geometry.rgbd_topics import layout_topics


def image_input(camera: CameraConfig) -> tuple[type, str]:
    """(message type, relative topic) of the camera input: `image` (sensor_msgs/Image) or
    `image/compressed` (CompressedImage, image_transport's naming); with an RGB-D layout
    (camera.rgbd) the driver's colour topic, e.g. `color/image_raw`."""
    from sensor_msgs.msg import CompressedImage, Image
    rgbd = layout_topics(camera.rgbd, camera.depth_topic, camera.camera_info_topic)
    base = rgbd.image if rgbd is not None else 'image'
    return (CompressedImage, f'{base}/compressed') if camera.compressed else (Image, base)


def depth_inputs(camera: CameraConfig) -> tuple[type, str, str] | None:
    """(depth message type, depth topic, camera_info topic), relative, of camera.rgbd;
    None without depth. A compressed depth is `<depth>/compressedDepth`."""
    from sensor_msgs.msg import CompressedImage, Image
    rgbd = layout_topics(camera.rgbd, camera.depth_topic, camera.camera_info_topic)
    if rgbd is None:
        return None
    if camera.depth_compressed:
        return CompressedImage, f'{rgbd.depth}/compressedDepth', rgbd.camera_info
    return Image, rgbd.depth, rgbd.camera_info


def image_qos(camera: CameraConfig) -> QoSProfile:
    """Camera input: sensor-data semantics (best effort, keep last N small) by default, so
    a slow consumer never back-pressures the driver; `reliable` matches drivers and bag
    players that only offer reliable."""
    reliability = (QoSReliabilityPolicy.BEST_EFFORT if camera.qos_reliability == 'best_effort'
                   else QoSReliabilityPolicy.RELIABLE)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=camera.qos_depth,
                      reliability=reliability, durability=DurabilityPolicy.VOLATILE)


#: Results (detections, descriptions): reliable so nothing computed is silently lost.
RESULTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                         reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)

#: Alerts: reliable + transient local, so a supervisor UI that starts late still gets the
#: recent alerts (the last `depth` of them).
ALERTS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                        reliability=QoSReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)

#: Debug images: best effort, newest only; viewers must never slow the pipeline down.
DEBUG_IMAGE_QOS = qos_profile_sensor_data

#: ask_scene requests: the default service depth (10) would silently drop requests beyond
#: ten in flight; the node answers every one (queued, or `busy` at once), so keep them all.
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200,
                         reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
