"""`mr-mllm replay`: bags in every supported encoding and both storage formats, outputs
(results.jsonl, CSVs, result bags, report.html), resume, interruption, damaged input.

Most tests run the real offline detector (YOLOv3-tiny) with `mllm.backend: none` and
the alert rules of test/helpers/replay_bags.py, so alerts are deterministic; one slow test runs
the default models (with SmolLM2 descriptions) on the six sample photos.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from mr_mllm_ros.cli import main
from mr_mllm_ros.replay import bag_images, bag_reader
from mr_mllm_ros.replay.outputs import strip_timings

from helpers.chromium import screenshot  # noqa: E402
from helpers.replay_bags import (ENCODING_TOPICS, NS, T0, colour_frame, encodings_bag,  # noqa: E402
                         image_msg, write_bag, write_config)

FRAMES = 3  # per synthetic topic


def lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / 'results.jsonl').read_text().splitlines()]


def replay(*args) -> int:
    return main(['replay', *map(str, args)])


@pytest.fixture(scope='module')
def replayed(tmp_path_factory):
    """Both storage formats, every encoding + the shipped photos, replayed once."""
    tmp = tmp_path_factory.mktemp('replay')
    truth = {st: encodings_bag(tmp / f'bag_{st}', st, FRAMES) for st in ('sqlite3', 'mcap')}
    cfg = write_config(tmp)
    out = tmp / 'out'
    rc = replay(tmp / 'bag_sqlite3', tmp / 'bag_mcap', '--out', out, '--config', cfg)
    return {'tmp': tmp, 'out': out, 'rc': rc, 'truth': truth, 'config': cfg}


def test_every_frame_accounted_for(replayed):
    assert replayed['rc'] == 0
    recs = lines(replayed['out'])
    for st, truth in replayed['truth'].items():
        bag = str((replayed['tmp'] / f'bag_{st}').resolve())
        mine = [r for r in recs if r['bag'] == bag]
        assert len(mine) == sum(len(v) for v in truth.values())
        for topic, frames in truth.items():
            got = [r for r in mine if r['topic'] == topic]
            assert len(got) == len(frames), topic
            assert all(r['status'] == 'ok' for r in got), [r.get('error') for r in got]
            assert [(r['width'], r['height']) for r in got] == \
                [(f.shape[1], f.shape[0]) for f in frames]
    keys = [(r['bag'], r['topic'], r['log_time_ns'], r['stamp_ns']) for r in recs]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    # The shipped photos through the real detector: the camera man is a person, and the
    # hazard rule of the test config raises a CRITICAL alert citing him.
    cam = next(r for r in recs if r['frame_id'] == 'camera')
    assert 'person' in {d['class_name'] for d in cam['detections']['items']}
    assert any(a['rule'] == 'person_anywhere' and a['severity'] == 'CRITICAL'
               for a in cam['alerts'])
    assert cam['models']['detector'].startswith('ssd_mobilenet_v2')  # the offline default
    flat = [r for r in recs if r['topic'] == '/rgb/image']
    assert all(any(a['code'] == 'frame_blurred' for a in r['alerts']) for r in flat)


def test_bag_reader_decodes_every_encoding(replayed):
    for st, truth in replayed['truth'].items():
        info = bag_reader.open_bag(replayed['tmp'] / f'bag_{st}')
        assert info.storage == st and info.reader == 'rosbags'
        got: dict = {}
        for m in bag_reader.iter_frames(info, info.image_topics()):
            assert m.ok, m.error
            got.setdefault(m.topic, []).append(m.frame.image)
        for topic, frames in truth.items():
            enc = ENCODING_TOPICS.get(topic, ('rgb8', 0))[0]
            for a, b in zip(got[topic], frames):
                diff = np.abs(a.astype(int) - b.astype(int)).mean()
                assert diff < (3.0 if enc == 'jpeg' else 1e-9), (st, topic, diff)


@pytest.mark.parametrize('little_endian', [True, False])
def test_direct_cdr_parse_equals_rosbags(little_endian):
    """The replay's direct Image/CompressedImage CDR parse (zero-copy pixels) agrees with
    rosbags' deserializer for every string-length alignment, both byte orders."""
    from mr_mllm_ros.replay.result_messages import result_typestore
    store = result_typestore()
    rgb = colour_frame(1)
    for frame_id in ('', 'c', 'ca', 'cam', 'cam0', 'camera_left'):
        for enc in ('rgb8', 'mono8', 'bgra8', 'jpeg', 'png'):
            msg = image_msg(rgb, enc, T0 + 123, frame_id, pad=3 if enc == 'bgra8' else 0)
            data = bytes(store.serialize_cdr(msg, msg.__msgtype__,
                                             little_endian=little_endian))
            fields = bag_images.parse_image_cdr(data, msg.__msgtype__)
            ref = store.deserialize_cdr(data, msg.__msgtype__)
            assert (fields.stamp_ns, fields.frame_id) == (T0 + 123, frame_id)
            assert bytes(fields.data) == bytes(ref.data)
            if enc in ('jpeg', 'png'):
                assert fields.encoding == ref.format
            else:
                assert (fields.encoding, fields.height, fields.width, fields.step,
                        fields.is_bigendian) == (ref.encoding, ref.height, ref.width,
                                                 ref.step, ref.is_bigendian)
            raw = bag_reader.RawMessage('/t', msg.__msgtype__, 0, data)
            assert bag_reader.decode(raw).ok
    # Cut short: not parsed directly, and decode() reports rosbags' reason.
    raw = bag_reader.RawMessage('/t', msg.__msgtype__, 0, data[:40])
    with pytest.raises(bag_images.BadCdr):
        bag_images.parse_image_cdr(raw.data, raw.msgtype)
    bad = bag_reader.decode(raw)
    assert not bad.ok and bad.error.startswith('cannot deserialize')


def _expected_result_messages(recs: list[dict]) -> int:
    n = 0
    for r in recs:
        if r['status'] == 'ok':
            n += 1 + (r['refined'] is not None) + (r['description'] is not None) \
                + len(r['alerts'])
    return n


def test_output_bags_read_back(replayed):
    from rclpy.serialization import deserialize_message

    from mr_mllm_interfaces.msg import CornerCaseAlert, DetectionArray
    from mr_mllm_ros.replay.result_messages import result_typestore
    out, recs = replayed['out'], lines(replayed['out'])
    store = result_typestore()
    for st in ('sqlite3', 'mcap'):
        bag = str((replayed['tmp'] / f'bag_{st}').resolve())
        path = out / 'bags' / f'bag_{st}'
        suffix = '.mcap' if st == 'mcap' else '.db3'
        assert list(path.glob(f'*{suffix}')), f'{st} input should give a {st} result bag'
        mine = [r for r in recs if r['bag'] == bag]
        with Reader(path) as reader:
            topics = {c.topic: c.msgtype for c in reader.connections}
            assert topics['/rgb/detections'] == 'mr_mllm_interfaces/msg/DetectionArray'
            assert topics['/photos/alerts'] == 'mr_mllm_interfaces/msg/CornerCaseAlert'
            assert '/jpeg/detections' in topics  # .../image/compressed -> /jpeg
            assert all(c.digest.startswith('RIHS01_') for c in reader.connections)
            qos = {c.topic: c.ext.offered_qos_profiles[0] for c in reader.connections}
            assert qos['/photos/alerts'].durability.name == 'TRANSIENT_LOCAL'  # as live
            assert qos['/rgb/detections'].reliability.name == 'RELIABLE'
            msgs = list(reader.messages())
        assert len(msgs) == _expected_result_messages(mine)
        rclpy_types = {'mr_mllm_interfaces/msg/DetectionArray': DetectionArray,
                       'mr_mllm_interfaces/msg/CornerCaseAlert': CornerCaseAlert}
        for conn, t, data in msgs:
            m = store.deserialize_cdr(data, conn.msgtype)  # rosbags reads it
            assert m.header.frame_id
            # ... and so does ROS 2 (rclpy's own deserializer: what `ros2 bag play` sends).
            ros_msg = deserialize_message(data, rclpy_types[conn.msgtype])
            assert ros_msg.header.stamp.sec == m.header.stamp.sec
        alert = next(store.deserialize_cdr(d, c.msgtype) for c, _, d in msgs
                     if c.topic == '/photos/alerts')
        assert alert.severity == 2 and alert.detections[0].class_name == 'person'


def test_csvs_match_results(replayed):
    out, recs = replayed['out'], lines(replayed['out'])
    with open(out / 'detections.csv') as f:
        dets = list(csv.DictReader(f))
    with open(out / 'alerts.csv') as f:
        alerts = list(csv.DictReader(f))
    assert len(dets) == sum(len(r['detections']['items']) for r in recs)
    assert len(alerts) == sum(len(r['alerts']) for r in recs)
    assert {a['rule'] for a in alerts} == {'flat_frame', 'person_anywhere'}


def test_report_renders_in_headless_chromium(replayed, tmp_path):
    out, recs = replayed['out'], lines(replayed['out'])
    page = (out / 'report.html').read_text()
    alert_frames = sum(1 for r in recs if r['alerts'])
    assert page.count('src="data:image/jpeg;base64,') >= alert_frames
    assert 'http://' not in page.replace('http://www.w3.org/2000/svg', '')
    assert 'ssd_mobilenet_v2' in page and '/photos/image' in page
    shot = screenshot(out / 'report.html', tmp_path)
    assert shot.std() > 20, 'blank page'
    # The alert thumbnails (magenta test frames) are on screen, not just in the HTML.
    b, g, r = (shot[..., i].astype(int) for i in range(3))
    magenta = (r > 200) & (b > 200) & (g < 60)
    assert magenta.sum() > 20_000, f'only {magenta.sum()} magenta pixels in the screenshot'


def test_resume_skips_finished_frames_and_repairs_a_torn_line(replayed, tmp_path):
    out = tmp_path / 'out'
    shutil.copytree(replayed['out'], out)
    before = (out / 'results.jsonl').read_bytes()
    tmp, cfg = replayed['tmp'], replayed['config']
    args = (tmp / 'bag_sqlite3', tmp / 'bag_mcap', '--out', out, '--config', cfg)
    assert replay(*args) == 0
    assert (out / 'results.jsonl').read_bytes() == before  # nothing redone
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['new_frames'] == 0 and summary['resumed_frames'] == len(lines(out))
    # A run killed mid-way: the last 5 frames missing and half a line at the end.
    text = before.decode().splitlines(keepends=True)
    (out / 'results.jsonl').write_text(''.join(text[:-5]) + text[-5][:40])
    assert replay(*args) == 0
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['new_frames'] == 5
    assert [strip_timings(r) for r in lines(out)] == \
        [strip_timings(json.loads(t)) for t in text]
    with open(out / 'detections.csv') as f:  # rebuilt, no duplicates
        assert len(list(csv.DictReader(f))) == sum(
            len(r['detections']['items']) for r in lines(out))
    # Other settings into the same folder: refused rather than mixed.
    assert replay(*args, '--every', '2') == 2


def test_topics_window_and_every(replayed, tmp_path):
    tmp, cfg = replayed['tmp'], replayed['config']
    # /rgb/image has frames stamped 0, 0.5, 1.0 s (logged a few ms later); window
    # [0.4, 2) -> 0.5, 1.0; every 2 -> 0.5.
    assert replay(tmp / 'bag_sqlite3', '--out', tmp_path / 'o', '--config', cfg,
                  '--topics', '/rgb/image', '--start', '0.4', '--end', '2',
                  '--every', '2') == 0
    recs = lines(tmp_path / 'o')
    assert [(r['topic'], r['stamp_ns']) for r in recs] == [('/rgb/image', T0 + NS // 2)]


def _slow_bag(path: Path, storage: str, n: int, size=(160, 120)) -> None:
    rng = np.random.default_rng(0)
    msgs = [image_msg(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), 'rgb8',
                      T0 + i * NS // 10, 'cam') for i in range(n)]
    write_bag(path, storage, {'/cam/image': msgs}, period_s=0.1)


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_truncated_bag_keeps_what_is_readable(tmp_path, storage, capsys):
    bag = tmp_path / 'bag'
    _slow_bag(bag, storage, 30)
    (f,) = [p for p in bag.iterdir() if p.suffix in ('.db3', '.mcap')]
    f.write_bytes(f.read_bytes()[:int(f.stat().st_size * 0.7)])
    cfg = write_config(tmp_path)
    assert replay(bag, '--out', tmp_path / 'o', '--config', cfg) == 0
    printed = capsys.readouterr().out
    recs = lines(tmp_path / 'o')
    assert 10 <= len(recs) < 30, len(recs)
    assert all(r['status'] == 'ok' for r in recs)
    summary = json.loads((tmp_path / 'o' / 'summary.json').read_text())
    (info,) = summary['bags']
    assert info['reader'] == 'salvage' and info['problems']
    assert 'rosbags cannot open it' in info['problems'][0]
    assert 'problem:' in printed and 'rosbags cannot open it' in printed
    assert 'rosbags cannot open it' in (tmp_path / 'o' / 'report.html').read_text()
    with Reader(tmp_path / 'o' / 'bags' / 'bag') as r:  # the result bag is whole
        assert r.message_count == len(recs) + sum(len(x['alerts']) for x in recs)


def test_corrupt_page_mid_file_loses_only_its_message(tmp_path):
    """rosbags opens the bag, then fails on a damaged page while reading: the salvage
    reader continues after the last message read, without duplicates."""
    bag = tmp_path / 'bag'
    _slow_bag(bag, 'sqlite3', 40)
    f = bag / 'bag.db3'
    data = bytearray(f.read_bytes())
    page = len(data) // 2 // 4096
    data[page * 4096:(page + 3) * 4096] = b'\xff' * (3 * 4096)
    f.write_bytes(bytes(data))
    assert replay(bag, '--out', tmp_path / 'o', '--config', write_config(tmp_path)) == 0
    recs = lines(tmp_path / 'o')
    times = [r['log_time_ns'] for r in recs]
    assert 36 <= len(recs) < 40 and times == sorted(set(times))
    (info,) = json.loads((tmp_path / 'o' / 'summary.json').read_text())['bags']
    assert info['reader'] == 'rosbags'
    assert any('rosbags stopped after' in p for p in info['problems'])
    assert any('unreadable in the damaged part' in p for p in info['problems'])


def test_unknown_encoding_is_counted_and_the_rest_processed(tmp_path, capsys):
    good = [image_msg(colour_frame(i), 'rgb8', T0 + i * NS, 'cam') for i in range(3)]
    weird = []
    for i in range(3):
        m = image_msg(colour_frame(i), 'rgb8', T0 + i * NS, 'cam')
        m.encoding = 'yuv422_yuy2'
        weird.append(m)
    write_bag(tmp_path / 'bag', 'sqlite3', {'/good/image': good, '/weird/image': weird})
    cfg = write_config(tmp_path)
    assert replay(tmp_path / 'bag', '--out', tmp_path / 'o', '--config', cfg) == 0
    recs = lines(tmp_path / 'o')
    assert len(recs) == 6
    bad = [r for r in recs if r['topic'] == '/weird/image']
    assert all(r['status'] == 'skipped' and r['stage'] == 'decode' for r in bad)
    assert "unknown encoding 'yuv422_yuy2'" in bad[0]['error']
    assert all(r['status'] == 'ok' for r in recs if r['topic'] == '/good/image')
    printed = capsys.readouterr().out
    assert 'skipped 3: unknown encoding' in printed
    assert 'yuv422_yuy2' in (tmp_path / 'o' / 'report.html').read_text()
    # A bag with nothing decodable: clear message, non-zero exit, results still written.
    write_bag(tmp_path / 'bad', 'mcap', {'/weird/image': weird})
    assert replay(tmp_path / 'bad', '--out', tmp_path / 'o2', '--config', cfg) == 1
    assert 'no frame could be read' in capsys.readouterr().err
    assert len(lines(tmp_path / 'o2')) == 3


def test_unreadable_bag_exits_non_zero(tmp_path, capsys):
    bag = tmp_path / 'junk'
    bag.mkdir()
    (bag / 'junk.db3').write_bytes(b'not a database at all' * 100)
    assert replay(bag, '--out', tmp_path / 'o', '--config', write_config(tmp_path)) == 1
    out = capsys.readouterr()
    assert 'problem:' in out.out and 'no frame could be read' in out.err


def test_replay_runs_without_ros(tmp_path):
    """rclpy and every message package unimportable: replay still writes everything,
    result bag included (rosbags serialises the project's messages itself)."""
    write_bag(tmp_path / 'bag', 'mcap',
              {'/cam/image': [image_msg(colour_frame(i), 'rgb8', T0 + i * NS) for i in range(2)]})
    cfg = write_config(tmp_path)
    blocked = ['rclpy', 'rosidl_runtime_py', 'builtin_interfaces', 'std_msgs', 'sensor_msgs',
               'mr_mllm_interfaces']
    code = (f'import sys\nfor m in {blocked!r}:\n    sys.modules[m] = None\n'
            'from mr_mllm_ros.cli import main\n'
            f'raise SystemExit(main(["replay", {str(tmp_path / "bag")!r}, "--out", '
            f'{str(tmp_path / "o")!r}, "--config", {str(cfg)!r}]))\n')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(lines(tmp_path / 'o')) == 2
    with Reader(tmp_path / 'o' / 'bags' / 'bag') as r:
        assert r.topics['/cam/detections'].msgcount == 2


def _stop_after(cmd, results: Path, n: int, sig) -> tuple[int, bytes]:
    """Run `cmd` until `results` has `n` lines, send it `sig`, wait for it to exit;
    returns its exit status and output."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_lines(results, n, proc)
        proc.send_signal(sig)
        text, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, text


def _wait_lines(path: Path, n: int, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b'\n') >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f'{path} did not reach {n} lines (exit {proc.poll()})')


def test_interrupted_runs_leave_valid_outputs_and_resume(tmp_path):
    bag, out = tmp_path / 'bag', tmp_path / 'o'
    total = 120
    _slow_bag(bag, 'sqlite3', total)
    cfg = write_config(tmp_path)
    cmd = [sys.executable, '-m', 'mr_mllm_ros.cli', 'replay', str(bag), '--out', str(out),
           '--config', str(cfg), '--no-progress']
    results = out / 'results.jsonl'
    # Ctrl-C: the partial run is finalised (result bag + report) and says so.
    returncode, text = _stop_after(cmd, results, 5, signal.SIGINT)
    assert returncode == 130, text
    assert 'interrupted' in text.decode()
    first = lines(out)
    assert 5 <= len(first) < total
    assert (out / 'report.html').exists() and (out / 'bags' / 'bag').is_dir()
    # SIGTERM (a service manager stopping it) finalises the same way.
    returncode, text = _stop_after(cmd, results, len(first) + 3, signal.SIGTERM)
    assert returncode == 130, text
    first = lines(out)
    with Reader(out / 'bags' / 'bag') as r:
        assert r.topics['/cam/detections'].msgcount == len(first)
    # SIGKILL in the middle of the resumed run: whole lines only.
    _stop_after(cmd, results, len(first) + 5, signal.SIGKILL)
    raw = results.read_bytes()
    assert raw.endswith(b'\n')
    second = lines(out)  # every line parses
    assert len(first) < len(second) < total
    with open(out / 'detections.csv') as f:
        list(csv.reader(f))
    assert os.path.exists(out / '.lock')
    # The next run completes the bag: every frame exactly once.
    assert replay(bag, '--out', out, '--config', cfg) == 0
    final = lines(out)
    assert len(final) == total
    assert len({r['log_time_ns'] for r in final}) == total
    with Reader(out / 'bags' / 'bag') as r:
        assert r.topics['/cam/detections'].msgcount == total


@pytest.mark.slow
def test_default_models_describe_the_sample_photos(tmp_path):
    """The offline default models (SSD-MobileNet-v2 + SmolLM2-135M descriptions), unchanged
    config but --describe-every-frame, on the six shipped photos: every frame described,
    grounded phrases in the report. Verifies plumbing and grounding, not description
    quality."""
    encodings_bag(tmp_path / 'photos', 'sqlite3', frames=0)
    assert replay(tmp_path / 'photos', '--out', tmp_path / 'o', '--topics',
                  '/photos/image', '--describe-every-frame') == 0
    recs = lines(tmp_path / 'o')
    assert len(recs) == 6 and all(r['status'] == 'ok' for r in recs)
    described = [r for r in recs if r['description'] is not None]
    assert len(described) == 6
    assert any(r['models'].get('mllm', '').lower().startswith('smollm2') for r in recs)
    cited = [r for r in described if r['description']['phrases']]
    assert cited, [r['description']['text'] for r in described]
    page = (tmp_path / 'o' / 'report.html').read_text()
    assert '<mark>' in page and 'Described frames' in page
    with Reader(tmp_path / 'o' / 'bags' / 'photos') as r:
        assert r.topics['/photos/scene_description'].msgcount == 6
