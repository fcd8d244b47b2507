"""Positions through the message layer, without a ROS graph: Detection.position survives
core -> rclpy message -> core and results.jsonl; the rosbags messages of the replay and
the rclpy messages of the nodes serialize to the same CDR (DetectionArray with positions,
MarkerArray: one mapping each); a detection without a position is marked invalid."""

import json

from rclpy.serialization import deserialize_message, serialize_message
from visualization_msgs.msg import MarkerArray

from mr_mllm_interfaces.msg import DetectionArray
from mr_mllm_ros.core.types import Box, Detection, DetectionSet
from mr_mllm_ros.replay import result_messages as rm
from mr_mllm_ros.replay.outputs import detection_set_from_json, detection_set_json
from mr_mllm_ros.ros import conversions as conv
from mr_mllm_ros.ros.marker_mapping import markers_msg

DS = DetectionSet((
    Detection(0, 'person', 0.9, Box(10, 20, 110, 220), track_id=4,
              position=(-0.4, 0.1, 2.3), position_spread=0.05),
    Detection(41, 'cup', 0.6, Box(300, 300, 320, 330))), 640, 480, 1_700_000_000_123, 'opt')


def _same_cdr(ours: bytes, theirs: bytes) -> None:
    assert len(ours) == len(theirs)
    assert all(ours[i] == 0 for i, (a, b) in enumerate(zip(theirs, ours)) if a != b)


def test_positions_round_trip_through_rclpy_messages_and_json():
    msg = conv.detection_array_msg(DS)
    assert msg.detections[0].position_valid and not msg.detections[1].position_valid
    assert abs(msg.detections[0].position.z - 2.3) < 1e-9
    back = conv.detection_set_from_msg(msg)
    assert back[0].position == (-0.4, 0.1, 2.3)
    assert abs(back[0].position_spread - 0.05) < 1e-6
    assert back[1].position is None and back[1].position_spread == 0.0
    j = json.loads(json.dumps(detection_set_json(DS)))
    assert 'position' in j['items'][0] and 'position' not in j['items'][1]
    assert detection_set_from_json(j, DS.stamp_ns, DS.frame_id).detections == DS.detections


def test_rosbags_and_rclpy_write_the_same_detections_and_markers():
    ours = rm.serialize(rm.detection_array_msg(DS))
    theirs = serialize_message(conv.detection_array_msg(DS))
    _same_cdr(ours, theirs)
    assert deserialize_message(ours, DetectionArray) == deserialize_message(theirs,
                                                                             DetectionArray)
    [(name, bag_markers)] = rm.marker_messages(DS)
    assert name == 'markers'
    ours = rm.serialize(bag_markers)
    theirs = serialize_message(markers_msg(conv.MESSAGES, DS))
    _same_cdr(ours, theirs)
    markers = deserialize_message(ours, MarkerArray).markers
    assert [(m.type, m.action) for m in markers] == [(2, 3), (2, 0), (9, 0)]
    assert markers[2].text == 'obj0 person 2.3 m' and markers[1].header.frame_id == 'opt'
    assert rm.marker_messages(DS.with_detections(DS.detections[1:])) == []
