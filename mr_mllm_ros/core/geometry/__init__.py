"""Space: where the detected objects are, in metres.

camera.py (intrinsics from CameraInfo, back-projection), locate.py (robust depth in a
box -> a 3D position per detection), words.py ("2.3 m ahead, slightly left"), poses.py
(odometry poses, the camera's mounting, positions in the odometry frame), rgbd_topics.py
(RGB-D drivers' topic names). No ROS here: the nodes and the replay hand in plain values.
"""

from .camera import CameraInfoError, CameraIntrinsics, intrinsics_from_camera_info
from .locate import BoxDepth, DepthFrame, box_depth, check_view, distance, locate
from .poses import Pose, PoseBuffer, interpolate, mount_from_list
from .rgbd_topics import LAYOUTS, RGBD_CHOICES, find_depth_topics, layout_topics
from .words import bearing_deg, distance_words, metres

__all__ = ['LAYOUTS', 'RGBD_CHOICES', 'BoxDepth', 'CameraInfoError', 'CameraIntrinsics',
           'DepthFrame', 'Pose', 'PoseBuffer', 'bearing_deg', 'box_depth', 'check_view', 'distance',
           'distance_words', 'find_depth_topics', 'interpolate', 'intrinsics_from_camera_info',
           'layout_topics', 'locate', 'metres', 'mount_from_list']
