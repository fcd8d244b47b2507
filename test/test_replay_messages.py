"""Result messages built with rosbags (replay, no rclpy) against rclpy's own: the same
CDR bytes and type hashes as the messages ros.conversions builds from the same core
objects, so a replay's result bag is what the live nodes would have recorded.

Fast CDR (rclpy) leaves alignment padding bytes uninitialised while rosbags writes
zeros, so the byte comparison is exact except at padding: there rclpy may hold anything
and rosbags must hold 0. Both directions of deserialisation are checked too.
"""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
from rclpy.serialization import deserialize_message, serialize_message

from mr_mllm_interfaces.msg import CornerCaseAlert, DetectionArray, SceneDescription
from mr_mllm_ros.core.types import (Alert, Box, Detection, DetectionSet, GroundedPhrase,
                                    GroundedText, SceneDescription as SceneDescriptionCore,
                                    Severity, Source)
from mr_mllm_ros.replay import result_messages as rm
from mr_mllm_ros.replay.outputs import (alert_from_json, alert_json, description_from_json,
                                        description_json, detection_set_from_json,
                                        detection_set_json)
from mr_mllm_ros.ros import conversions as conv

STAMP = 1_700_000_123_456_789_012


def _objects():
    d0 = Detection(0, 'person', 0.4612345, Box(1.5, 2.25, 30.0, 40.125), 3, Source.DETECTOR,
                   True)
    d1 = Detection(-1, 'cup', 0.3, Box(0.0, 0.0, 10.0, 10.0), -1, Source.MLLM, False,
                   'toilet', 0.42)
    ds = DetectionSet((d0, d1), 640, 480, STAMP, 'front_cam', 'yolov3-tiny (opencv_darknet)',
                      {'infer': 12.5, 'total': 13.25})
    gt = GroundedText('A man holds a cup.', '<ground>A man</ground><objects><obj0></objects>'
                      ' holds <ground>a cup</ground><objects><obj1></objects>.',
                      (GroundedPhrase('A man', 0, 5, (0,)),
                       GroundedPhrase('a cup', 12, 17, (1,))), True)
    sd = SceneDescriptionCore(gt, ds, ds.model_name, 'SmolLM2-135M-Instruct', '', 101, 17,
                              {'generate': 812.5})
    al = Alert(Severity.CRITICAL, 'hazard_in_region', 'person_in_path', 'rule',
               "person in region 'driving_corridor' (score 0.46)", STAMP, 'front_cam', (d0,),
               (GroundedPhrase('person', 0, 6, (0,)),), (STAMP - 10**8, STAMP),
               (('score', '0.46'), ('min_score', '0.3')), 'hazard_in_region: score 0.46',
               bytes(range(256)) * 3)
    return ds, sd, al


CASES = [
    ('DetectionArray', DetectionArray, conv.detection_array_msg, rm.detection_array_msg, 0),
    ('SceneDescription', SceneDescription, conv.scene_description_msg,
     rm.scene_description_msg, 1),
    ('CornerCaseAlert', CornerCaseAlert, conv.alert_msg, rm.alert_msg, 2),
]


@pytest.mark.parametrize('name,rclpy_type,build_rclpy,build_rosbags,which', CASES,
                         ids=[c[0] for c in CASES])
def test_rosbags_cdr_equals_rclpy(name, rclpy_type, build_rclpy, build_rosbags, which):
    core = _objects()[which]
    ros_msg = build_rclpy(core)
    ros_bytes = serialize_message(ros_msg)
    ours = rm.serialize(build_rosbags(core))
    assert len(ours) == len(ros_bytes)
    differing = [i for i, (a, b) in enumerate(zip(ros_bytes, ours)) if a != b]
    assert all(ours[i] == 0 for i in differing), 'a difference outside alignment padding'
    # rclpy reads our bytes as it reads its own (float32 fields rounded alike) ...
    assert deserialize_message(ours, rclpy_type) == deserialize_message(ros_bytes, rclpy_type)
    # ... and rosbags reads rclpy's bytes and writes ours again (padding normalised).
    store = rm.result_typestore()
    again = store.deserialize_cdr(ros_bytes, f'mr_mllm_interfaces/msg/{name}')
    assert bytes(store.serialize_cdr(again, again.__msgtype__)) == ours


def test_json_round_trip_gives_the_same_messages(tmp_path):
    """results.jsonl (+ the evidence files beside it) is the source of the output bag:
    nothing may be lost on the way."""
    ds, sd, al = _objects()
    ds2 = detection_set_from_json(json.loads(json.dumps(detection_set_json(ds))),
                                  ds.stamp_ns, ds.frame_id)
    assert rm.serialize(rm.detection_array_msg(ds2)) == rm.serialize(rm.detection_array_msg(ds))
    sd2 = description_from_json(json.loads(json.dumps(description_json(sd))), ds.stamp_ns,
                                ds.frame_id)
    assert rm.serialize(rm.scene_description_msg(sd2)) == \
        rm.serialize(rm.scene_description_msg(sd))
    (tmp_path / 'e.jpg').write_bytes(al.evidence_jpeg)
    al2 = alert_from_json(json.loads(json.dumps(alert_json(al, 'e.jpg'))), tmp_path)
    assert al2 == al
    assert rm.serialize(rm.alert_msg(al2)) == rm.serialize(rm.alert_msg(al))


def test_type_hashes_equal_the_ros_build():
    """The RIHS01 hashes written into result bags equal those rosidl generated when
    mr_mllm_interfaces was built (the .json type descriptions installed beside the .msg)."""
    shares = [Path(sys.prefix) / 'share' / 'mr_mllm_interfaces' / 'msg']
    jsons = [p for d in shares if d.is_dir() for p in sorted(d.glob('*.json'))]
    if not jsons:
        pytest.skip('mr_mllm_interfaces type descriptions (.json) are not installed here')
    for path in jsons:
        name = f'mr_mllm_interfaces/msg/{path.stem}'
        hashes = {h['type_name']: h['hash_string']
                  for h in json.loads(path.read_text())['type_hashes']}
        assert rm.result_typestore().hash_rihs01(name) == hashes[name], name


def test_alert_msg_round_trip_keeps_the_proof():
    """The viewer reads alerts back into core (conversions.alert_from_msg): evidence JPEG,
    window stamps, values and rationale survive rclpy's message and its CDR."""
    al = _objects()[2]
    msg = deserialize_message(serialize_message(conv.alert_msg(al)), CornerCaseAlert)
    back = conv.alert_from_msg(msg)
    # Detection.score is float32 on the wire: compare it approximately, the rest exactly.
    assert back.detections[0].score == pytest.approx(al.detections[0].score, rel=1e-6)
    assert dataclasses.replace(back, detections=al.detections) == al
