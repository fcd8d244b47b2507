"""QoS profiles by name. Users change them through config keys (camera.qos_*) or the
standard ROS QoS override parameters, never through magic numbers in the nodes."""

from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, QoSReliabilityPolicy,
                       qos_profile_sensor_data)

from ..core.config import CameraConfig


def image_input(camera: CameraConfig) -> tuple[type, str]:
    """(message type, relative topic) of the camera input: `image` (sensor_msgs/Image) or
    `image/compressed` (CompressedImage, image_transport's naming)."""
    from sensor_msgs.msg import CompressedImage, Image
    return (CompressedImage, 'image/compressed') if camera.compressed else (Image, 'image')


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
