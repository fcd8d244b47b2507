"""VQA under load (the real graph, offline default models): 50 ask_scene requests at once
from 10 client processes (5 each) get an answer or an immediate `busy` within their
timeout, nothing hangs, and perception_node and scene_node keep their frame rates."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from helpers.graph_helpers import (
    DISCOVERY_S,
    first_exchange,
    latest_stamped_status,
    latest_status,
)
from helpers.waiting import client_output
from sensor_msgs.msg import Image

from mr_mllm_interfaces.msg import DetectionArray, SceneDescription
from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec
from mr_mllm_ros.core.assets.sample_images import load_sample
from mr_mllm_ros.core.config import share_dir
from mr_mllm_ros.ros import conversions as conv
from mr_mllm_ros.ros.client import RosClient
from mr_mllm_ros.ros.qos import RESULTS_QOS

pytestmark = pytest.mark.graph
DEMO_PARAMS = str(share_dir() / 'config' / 'demo.yaml')
CLIENTS, CALLS, TIMEOUT_S = 10, 5, 30.0
# A camera the detector keeps up with when idle: the question is whether asking costs the
# nodes frames. The default SSD-MobileNet-v2 takes ~110 ms a frame on its one thread here,
# so at 10 Hz it already dropped 11-13 % of frames idle and the shares measured its
# saturation jitter (one CI run: 0.77 loaded vs 0.99 idle; local runs 0.87-0.96).
CAMERA_HZ, IDLE_S = 5.0, 8.0
CLIENT_SCRIPT = Path(__file__).parent / 'helpers' / 'vqa_load_client.py'
IMMEDIATE_S = 2.0  # a `busy` must come back about at once (a loaded 2-core machine)


def _paired(diag):
    """(frames scene_node has paired, when it said so: its status's stamp in s). Rates are
    taken between two statuses' own stamps: the 1 Hz status read at the test's window
    edges would be up to 1 s stale at either end (+-12 % of an 8 s window at 5 Hz)."""
    got = latest_stamped_status(diag, '/load/scene_node')
    return (int(got[2]['frames_paired']), got[0]) if got else (0, 0.0)


def _paired_rate(before, after):
    return (after[0] - before[0]) / max(1e-6, after[1] - before[1])


def _perception(diag):
    """perception_node's own figures: what it received, detected and dropped, its latency."""
    st = latest_status(diag, '/load/perception_node')
    keys = ('frames_received', 'frames_processed', 'frames_dropped', 'latency_ms_p50',
            'latency_ms_p95')
    return {k: st[1][k] for k in keys} if st else {}


def _rates(dets, diag, sent, seconds):
    """(detections/s, scene frames paired/s, camera frames/s) over the next `seconds`."""
    n0, p0, s0, t0 = len(dets), _paired(diag), sent[0], time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    return (len(dets) - n0) / dt, _paired_rate(p0, _paired(diag)), (sent[0] - s0) / dt


def test_fifty_concurrent_questions_from_ten_processes(tmp_path):
    specs = [NodeSpec('perception', 'load', [DEMO_PARAMS]),
             NodeSpec('scene', 'load', [DEMO_PARAMS])]
    with NodeGroup(specs, log_dir=tmp_path / 'logs') as group, RosClient('load_test') as ros:
        pub = ros.publisher(Image, '/load/image', 10)
        dets = ros.collect(DetectionArray, '/load/detections', RESULTS_QOS)
        descriptions = ros.collect(SceneDescription, '/load/scene_description', RESULTS_QOS)
        diag = ros.collect(DiagnosticArray, '/diagnostics', 50)
        photo = cv2.resize(load_sample('camera'), (640, 480))
        assert ros.wait_for_subscribers(pub, 2, DISCOVERY_S * 3)
        assert first_exchange(pub, lambda t: conv.image_msg(photo, 'rgb8', t, 'cam'),
                              descriptions, 180, every=15.0) is not None

        stop = threading.Event()
        sent = [0]  # frames this test's camera published

        def camera():
            stamp, period = 1_000_000, 1.0 / CAMERA_HZ
            next_t = time.monotonic()
            while not stop.is_set():
                stamp += 1
                pub.publish(conv.image_msg(photo, 'rgb8', stamp, 'cam'))
                sent[0] += 1
                next_t += period
                time.sleep(max(0.0, next_t - time.monotonic()))
        cam = threading.Thread(target=camera, daemon=True)
        cam.start()
        clients: list[subprocess.Popen] = []
        try:
            time.sleep(2.0)
            idle = _rates(dets, diag, sent, IDLE_S)
            go = tmp_path / 'go'
            clients += [subprocess.Popen(
                [sys.executable, str(CLIENT_SCRIPT), '/load/ask_scene', str(CALLS),
                 str(TIMEOUT_S), str(go), str(tmp_path)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                start_new_session=True)  # an autogroup of its own (vqa_load_client.py)
                for _ in range(CLIENTS)]
            deadline = time.monotonic() + 120
            while len(list(tmp_path.glob('ready_*'))) < CLIENTS and \
                    time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(list(tmp_path.glob('ready_*'))) == CLIENTS
            time.sleep(1.0)  # client start-up load has passed
            n_dets, n_desc, n_sent = len(dets), len(descriptions), sent[0]
            paired0 = _paired(diag)
            perc0 = _perception(diag)
            t0 = time.monotonic()
            go.touch()
            # The window: from the go until every client has all its responses (their
            # own shutdown afterwards is not the load under test).
            while len(list(tmp_path.glob('done_*'))) < CLIENTS and \
                    time.monotonic() - t0 < TIMEOUT_S + 30:
                time.sleep(0.05)
            window = time.monotonic() - t0
            n_dets_end, n_sent_end = len(dets), sent[0]
            paired1 = _paired(diag)
            perc1 = _perception(diag)
            outs = [client_output(c, TIMEOUT_S + 60) for c in clients]
            loaded = ((n_dets_end - n_dets) / window, _paired_rate(paired0, paired1),
                      (n_sent_end - n_sent) / window)
            # idle again once the clients are gone: the window is compared with the idle
            # rates on both sides of it, so load that others put on the machine before or
            # after it (a drift, not the questions) moves both baselines alike
            idle_after = _rates(dets, diag, sent, IDLE_S)
        finally:
            stop.set()
            cam.join()
            for c in clients:
                if c.poll() is None:
                    c.kill()
        assert group.alive()
    assert all(c.returncode == 0 for c in clients), [o[1][-500:] for o in outs]
    results = [json.loads(line) for out, _ in outs for line in out.splitlines()]
    assert len(results) == CLIENTS * CALLS
    answered = [r for r in results if r['ok']]
    busy = [r for r in results if not r['ok'] and r['error'] == 'busy']
    timed_out = [r for r in results if not r['ok'] and r['error'].startswith('timeout')]
    others = [r for r in results if r not in answered + busy + timed_out]
    assert not others, f'neither an answer, busy nor a timeout: {others}'
    assert answered
    assert all(r['wall_s'] <= IMMEDIATE_S for r in busy), sorted(r['wall_s'] for r in busy)
    assert all(r['wall_s'] <= TIMEOUT_S + 2.0 for r in results)
    latencies = sorted(r['wall_s'] for r in answered)
    print(f'\n50 concurrent asks from {CLIENTS} processes: {len(answered)} answered '
          f'(wall p50 {latencies[len(latencies) // 2]:.1f} s, max {latencies[-1]:.1f} s), '
          f'{len(busy)} busy (max {max([r["wall_s"] for r in busy] or [0]):.2f} s), '
          f'{len(timed_out)} timed out; window {window:.1f} s; camera {idle[2]:.2f} -> '
          f'{loaded[2]:.2f} -> {idle_after[2]:.2f} frames/s, detections/s {idle[0]:.2f} -> '
          f'{loaded[0]:.2f} -> {idle_after[0]:.2f}, scene frames paired/s {idle[1]:.2f} -> '
          f'{loaded[1]:.2f} -> {idle_after[1]:.2f} (idle, loaded, idle); descriptions in '
          f'the window {len(descriptions) - n_desc}; perception before/after the window '
          f'{perc0} / {perc1}')
    # The nodes keep their rate: the share of the camera's frames they handle stays within
    # 10 % of idle (the mean of the idle shares before and after). (Shares, not Hz: this
    # test's own camera thread shares the 2 cores with everything else, and a frame it did
    # not send is not the nodes' loss.)
    for node in (0, 1):
        idle_share = (idle[node] / idle[2] + idle_after[node] / idle_after[2]) / 2
        assert loaded[node] / loaded[2] >= 0.9 * idle_share, (idle, loaded, idle_after)
