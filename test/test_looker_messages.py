"""The looker's fields on the wire: Detection.looks_like / looks_like_scores / posture /
posture_score, SOURCE_LOOKER, DetectionArray.looks_like - through rclpy messages, the
replay's rosbags messages (same CDR bytes) and results.jsonl, and back."""

import json

from rclpy.serialization import deserialize_message, serialize_message

from mr_mllm_interfaces.msg import Detection as DetectionMsg
from mr_mllm_interfaces.msg import DetectionArray
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Source
from mr_mllm_ros.replay import result_messages as rm
from mr_mllm_ros.replay.outputs import detection_set_from_json, detection_set_json
from mr_mllm_ros.ros import conversions as conv


def _set():
    person = Detection(0, 'person', 0.9, Box(0, 0, 100, 200), looks_like=(('tripod', 0.9375),
                       ('reflex camera', 0.25)), posture='lying', posture_score=0.5)
    tripod = Detection(-1, 'tripod', 0.95, Box(200, 250, 400, 500), source=Source.LOOKER,
                       original_class_name='person', original_score=0.45,
                       looks_like=(('tripod', 0.9492),))
    plain = Detection(41, 'cup', 0.5, Box(1, 2, 3, 4))
    return DetectionSet((person, tripod, plain), 512, 512, 123, 'cam', 'ssd',
                        looks_like=(('tripod', 0.9258),))


def test_rclpy_round_trip_keeps_what_the_looker_saw():
    ds = _set()
    msg = conv.detection_array_msg(ds)
    assert msg.detections[1].source == DetectionMsg.SOURCE_LOOKER == 2
    assert list(msg.detections[0].looks_like) == ['tripod', 'reflex camera']
    back = conv.detection_set_from_msg(deserialize_message(serialize_message(msg),
                                                           DetectionArray))
    assert back.looks_like == ds.looks_like
    for a, b in zip(back, ds):
        assert (a.looks_like, a.posture, a.source) == (b.looks_like, b.posture, b.source)
        assert abs(a.posture_score - b.posture_score) < 1e-6
    assert back[2].looks_like == () and back[2].posture == ''


def test_replay_bytes_and_json_carry_it_too():
    ds = _set()
    assert rm.serialize(rm.detection_array_msg(ds)) == \
        bytes(serialize_message(conv.detection_array_msg(ds)))
    again = detection_set_from_json(json.loads(json.dumps(detection_set_json(ds))), 123, 'cam')
    assert again == ds
    assert 'looks_like' not in detection_set_json(ds)['items'][2]  # keys only when looked
