"""Replay outputs people look at: the Foxglove MCAP (frames + ImageAnnotations on the same
timestamps, descriptions, alerts), its layout, the MCAP clip around each alert, the alert
evidence in the result bag and in report.html (rendered by headless Chromium).

The replay runs the real offline detector (YOLOv3-tiny) with `mllm.backend: none` and the
deterministic rules of test/helpers/replay_bags.py (a flat frame is "blurred"; a person anywhere
is a hazard), on synthetic frames and the shipped photos. Everything is read back with
readers that do not share our code: the `mcap` library, protobuf, rosbags, OpenCV.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from rosbags.rosbag2 import Reader

from mr_mllm_ros.cli import main
from mr_mllm_ros.replay.foxglove_outputs import clip_name
from mr_mllm_ros.replay.result_messages import result_typestore
from mr_mllm_ros.viz.layout import foxglove_layout

from helpers.chromium import screenshot  # noqa: E402
from helpers.foxglove_decode import boxes, decode, stamp_ns  # noqa: E402
from helpers.replay_bags import NS, encodings_bag, write_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BEFORE_S, AFTER_S = 0.6, 0.4


def _records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / 'results.jsonl').read_text().splitlines()]


@pytest.fixture(scope='module')
def replayed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('fox')
    encodings_bag(tmp / 'bag', 'mcap', 2)
    cfg = write_config(tmp)
    data = yaml.safe_load(cfg.read_text())
    data['alerts'].update(clip_before_s=BEFORE_S, clip_after_s=AFTER_S)
    cfg.write_text(yaml.safe_dump(data))
    out = tmp / 'out'
    rc = main(['replay', str(tmp / 'bag'), '--out', str(out), '--config', str(cfg)])
    assert rc == 0
    return out


def _read_mcap(path: Path) -> list[tuple]:
    with open(path, 'rb') as f:
        return [(s, c, m) for s, c, m in make_reader(f).iter_messages(log_time_order=True)]


def _shown(r: dict) -> list[dict]:
    return (r['refined'] if r.get('description') and r.get('refined') else
            r['detections'])['items']


def test_mcap_has_annotations_for_every_frame_with_detections(replayed):
    recs = [r for r in _records(replayed) if r['status'] == 'ok']
    with_dets = {(r['topic'], r['stamp_ns']): r for r in recs if _shown(r)}
    assert with_dets, 'the test bag must produce detections (the shipped photos)'
    msgs = _read_mcap(replayed / 'foxglove' / 'bag.mcap')
    by_schema: dict[str, list] = {}
    for s, c, m in msgs:
        by_schema.setdefault(s.name, []).append((s, c, m))
    annotations = by_schema['foxglove.ImageAnnotations']
    assert len(annotations) == len(with_dets)
    assert len(by_schema['foxglove.CompressedImage']) >= len(recs)  # frames (+ evidence)
    frames = {(c.topic.rsplit('/', 1)[0], m.log_time): decode(s.name, s.data, m.data)
              for s, c, m in by_schema['foxglove.CompressedImage']
              if not c.topic.endswith('/evidence')}
    assert len(frames) == len(recs)
    for s, c, m in annotations:
        ann = decode(s.name, s.data, m.data)
        ns = c.topic.rsplit('/', 1)[0]
        image = frames[(ns, m.log_time)]
        # Same timestamp as the frame: how Foxglove's Image panel pairs them.
        assert {stamp_ns(p.timestamp) for p in ann.points} == {stamp_ns(image.timestamp)}
        rec = with_dets[(ns + '/image', stamp_ns(image.timestamp))]
        want = sorted(tuple(round(v, 3) for v in d['box']) for d in _shown(rec))
        assert sorted(tuple(round(v, 3) for v in b) for b in boxes(ann)) == want
        labels = [t.text for t in ann.texts]
        for i, d in enumerate(_shown(rec)):
            assert any(t.startswith(f'obj{i} {d["class_name"]} {d["score"]:.2f}')
                       for t in labels)
        if rec['alerts']:  # alerts highlighted: a banner line and their boxes in red
            assert any(t.startswith('ALERT ') for t in labels)
        jpeg = cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_COLOR)
        assert jpeg.shape[:2] == (rec['height'], rec['width'])
    logs = by_schema['foxglove.Log']
    assert len(logs) == sum(len(r['alerts']) for r in recs)
    alerts_json = [json.loads(m.data) for s, c, m in msgs if c.topic.endswith('/alerts')]
    assert all(a['rationale'] and a['window_stamps_ns'] for a in alerts_json)


def test_layout_matches_the_mcap_topics_and_the_packaged_file(replayed):
    layout = json.loads((replayed / 'foxglove' / 'layout.json').read_text())
    topics = {c.topic for _, c, _ in _read_mcap(replayed / 'foxglove' / 'bag.mcap')}
    text = json.dumps(layout)
    image_panel = layout['content']['items'][0]['content']['config']['imageMode']
    assert image_panel['imageTopic'] in topics
    assert set(image_panel['annotations']) <= topics
    described = any(r.get('description') for r in _records(replayed))
    for ref in _topic_refs(layout):
        topic = ref.split('.')[0]
        # This run has no MLLM: no description channel (nothing was logged on it).
        assert topic in topics or (topic.endswith('/scene_description') and not described), \
            text
    # One source: the shipped layout is the generator's output for the `up` graph.
    assert (REPO / 'config' / 'foxglove_layout.json').read_text() == foxglove_layout('')


def _topic_refs(obj) -> list[str]:
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ('imageTopic', 'topicPath', 'topicToRender'):
                found.append(v)
            found += _topic_refs(v)
    elif isinstance(obj, list):
        for v in obj:
            found += _topic_refs(v)
    return found


def test_a_clip_around_every_alert_frame(replayed):
    recs = [r for r in _records(replayed) if r.get('alerts')]
    assert recs
    for r in recs:
        msgs = _read_mcap(replayed / 'clips' / clip_name(r))
        t = r['log_time_ns']
        times = [m.log_time for _, _, m in msgs]
        assert all(t - BEFORE_S * NS <= x <= t + AFTER_S * NS for x in times)
        topic = r['topic'].rsplit('/', 1)[0] if not r['topic'].endswith('compressed') \
            else r['topic'].rsplit('/', 2)[0]
        assert any(m.log_time == t and c.topic == f'{topic}/image' for _, c, m in msgs)
        assert any(m.log_time == t and c.topic == f'{topic}/alerts/log' for _, c, m in msgs)


def test_result_bag_alerts_carry_decodable_evidence(replayed):
    store = result_typestore()
    bag = replayed / 'bags' / 'bag'
    n = 0
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic.endswith('/alerts')]
        for conn, _, raw in reader.messages(connections=conns):
            msg = store.deserialize_cdr(raw, conn.msgtype)
            img = cv2.imdecode(np.asarray(msg.evidence_image.data, np.uint8), cv2.IMREAD_COLOR)
            assert img is not None and msg.evidence_image.format == 'jpeg'
            stamps = [s.sec * NS + s.nanosec for s in msg.window_stamps]
            assert stamps[-1] == msg.header.stamp.sec * NS + msg.header.stamp.nanosec
            assert msg.rationale and {kv.key for kv in msg.values} >= {'held'}
            n += 1
    assert n == sum(len(r['alerts']) for r in _records(replayed))


def test_report_shows_evidence_and_clips_in_headless_chromium(replayed, tmp_path):
    page = (replayed / 'report.html').read_text()
    recs = [r for r in _records(replayed) if r.get('alerts')]
    assert page.count('class="evidence"') == sum(len(r['alerts']) for r in recs)
    assert page.count('href="clips/') == len(recs)
    assert all(f'clips/{clip_name(r)}' in page for r in recs)
    shot = screenshot(replayed / 'report.html', tmp_path)
    # The evidence images are on screen in their red frame (#d62828), not just in the HTML.
    b, g, r = (shot[..., i].astype(int) for i in range(3))
    border = (abs(r - 0xd6) < 12) & (abs(g - 0x28) < 12) & (abs(b - 0x28) < 12)
    assert border.sum() > 2000, f'only {border.sum()} evidence-border pixels on screen'
