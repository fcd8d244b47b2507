"""Positioned detections -> visualization_msgs/MarkerArray for RViz: the one mapping,
through ros.message_mapping's MessageFactory, so perception_node (rclpy) and the replay's
result bags (rosbags) publish the same markers. No rclpy import here.

Per frame: a DELETEALL (the previous frame's markers go), then for each detection with a
position a sphere at it (diameter twice the depth spread, 0.1-1 m: how sure the depth is)
and a text above it ("obj2 person 2.3 m"), in the image's optical frame (the header's
frame_id). Markers expire after LIFETIME_S, so they vanish when perception stops.
"""

from __future__ import annotations

from ..core.images import class_color
from ..core.geometry import distance, metres
from ..core.types import DetectionSet
from .message_mapping import MessageFactory, header_msg

MARKER_ARRAY = 'visualization_msgs/msg/MarkerArray'
NAMESPACE = 'mr_mllm'
SPHERE, TEXT_VIEW_FACING = 2, 9
ADD, DELETEALL = 0, 3
LIFETIME_S = 1.0
TEXT_HEIGHT_M = 0.15


def _marker(make: MessageFactory, header, marker_id: int, kind: int, action: int,
            position=(0.0, 0.0, 0.0), scale=(0.0, 0.0, 0.0), rgba=(0.0, 0.0, 0.0, 0.0),
            text: str = '', lifetime_s: float = 0.0):
    x, y, z = (float(c) for c in position)
    return make(
        'visualization_msgs/msg/Marker', header=header, ns=NAMESPACE, id=int(marker_id),
        type=kind, action=action,
        pose=make('geometry_msgs/msg/Pose',
                  position=make('geometry_msgs/msg/Point', x=x, y=y, z=z),
                  orientation=make('geometry_msgs/msg/Quaternion', x=0.0, y=0.0, z=0.0,
                                   w=1.0)),
        scale=make('geometry_msgs/msg/Vector3', x=float(scale[0]), y=float(scale[1]),
                   z=float(scale[2])),
        color=make('std_msgs/msg/ColorRGBA', r=float(rgba[0]), g=float(rgba[1]),
                   b=float(rgba[2]), a=float(rgba[3])),
        lifetime=make('builtin_interfaces/msg/Duration', sec=int(lifetime_s),
                      nanosec=int(round(lifetime_s % 1 * 1e9))),
        frame_locked=False, points=[], colors=[], texture_resource='',
        texture=make('sensor_msgs/msg/CompressedImage', header=header, format='',
                     data=make.uint8s(b'')),
        uv_coordinates=[], text=text, mesh_resource='',
        mesh_file=make('visualization_msgs/msg/MeshFile', filename='', data=make.uint8s(b'')),
        mesh_use_embedded_materials=False)


def marker_label(index: int, d) -> str:
    return f'obj{index} {d.class_name} {metres(distance(d.position))}'


def markers_msg(make: MessageFactory, ds: DetectionSet):
    """The MarkerArray of one frame's positioned detections (a DELETEALL first)."""
    header = header_msg(make, ds.stamp_ns, ds.frame_id)
    markers = [_marker(make, header, 0, SPHERE, DELETEALL)]
    for i, d in enumerate(ds.detections):
        if d.position is None:
            continue
        r, g, b = (c / 255.0 for c in class_color(d.class_name))
        size = min(1.0, max(0.1, 2.0 * d.position_spread))
        x, y, z = d.position
        markers.append(_marker(make, header, 2 * i, SPHERE, ADD, d.position, (size,) * 3,
                               (r, g, b, 0.8), lifetime_s=LIFETIME_S))
        # optical frame: y points down, so "above" is -y
        markers.append(_marker(make, header, 2 * i + 1, TEXT_VIEW_FACING, ADD,
                               (x, y - size / 2 - TEXT_HEIGHT_M, z),
                               (0.0, 0.0, TEXT_HEIGHT_M), (1.0, 1.0, 1.0, 1.0),
                               marker_label(i, d), LIFETIME_S))
    return make(MARKER_ARRAY, markers=markers)
