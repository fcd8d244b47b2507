"""Reliability on the live graph (separate processes, localhost, random domain): a flood of
malformed images, a failing or vanished MLLM server, a stalled camera, and repeated
lifecycle cycles. Figures are recorded in docs/RELIABILITY.md."""

import statistics
import time

import numpy as np
import psutil
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from helpers.graph_helpers import (
    DISCOVERY_S,
    first_exchange,
    latest_status,
    node_status,
    publish_and_wait,
)
from helpers.openai_stub_server import StubOpenAiServer, fail, reply
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
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


def _malformed(kind: int, rgb: np.ndarray) -> Image:
    h, w = rgb.shape[:2]
    data = rgb.tobytes()
    return [
        Image(height=h, width=w, encoding='rgb8', step=w * 3 - 1, data=data),      # step
        Image(height=h, width=w, encoding='rgb8', step=w * 3, data=data[:999]),    # truncated
        Image(height=h, width=w, encoding='yuv_nonsense', step=w * 3, data=data),  # encoding
        Image(height=0, width=0, encoding='rgb8', step=0, data=b''),               # 0x0
        Image(height=20000, width=20000, encoding='mono8', step=20000, data=b'x'),  # 400 MP
        Image(height=h, width=w, encoding='mono16', step=w, data=data),            # step 16-bit
    ][kind % 6]


def test_a_thousand_mixed_messages(tmp_path):
    """900 malformed + 100 valid images: every valid frame gets its detections, every
    malformed one is counted with its reason, both nodes keep running."""
    # A deep subscription queue: the default (sensor data, depth 1) lets DDS itself drop
    # all but the newest of a burst, before the node could count them. 10 was not enough
    # on a loaded CI machine (the scene node's intake stalled for a burst: 884 of 900).
    deep = {'camera.qos_depth': 100}
    specs = [NodeSpec('perception', 'flood', parameters=deep),
             NodeSpec('scene', 'flood', parameters={'mllm.backend': 'none', **deep})]
    rgb = load_sample('motorcycle')
    with NodeGroup(specs, log_dir=tmp_path / 'logs') as group, RosClient('flood') as ros:
        pub = ros.publisher(Image, '/flood/image', 1000)
        dets = ros.collect(DetectionArray, '/flood/detections', RESULTS_QOS)
        diag = ros.collect(DiagnosticArray, '/diagnostics', 100)
        assert ros.wait_for_subscribers(pub, 2, DISCOVERY_S)
        first = publish_and_wait(ros, pub, dets, conv.image_msg(rgb, 'rgb8', 1, 'f'))
        assert first is not None
        t0 = time.monotonic()
        valid_ok, malformed_sent = 0, 0
        for i in range(100):
            for k in range(9):
                pub.publish(_malformed(i * 9 + k, rgb))
                malformed_sent += 1
                time.sleep(0.002)
            stamp = 1000 + i
            out = publish_and_wait(ros, pub, dets, conv.image_msg(rgb, 'rgb8', stamp, 'f'),
                                   timeout=30)
            valid_ok += out is not None and any(d.class_name == 'motorcycle'
                                                for d in out.detections)
        elapsed = time.monotonic() - t0
        assert valid_ok == 100
        for node in ('perception_node', 'scene_node'):
            got = node_status(diag, f'/flood/{node}',
                              lambda s, v: int(v['frames_malformed']) >= malformed_sent, 20)
            assert got is not None, (f'{node} did not count all {malformed_sent} malformed: '
                                     f'{latest_status(diag, f"/flood/{node}")}')
            assert int(got[1]['frames_malformed']) == malformed_sent
        _, values = latest_status(diag, '/flood/perception_node')
        reasons = {k[len('malformed: '):]: int(v) for k, v in values.items()
                   if k.startswith('malformed: ')}
        assert sum(reasons.values()) == malformed_sent and len(reasons) == 6, reasons
        assert group.alive()
        print(f'\n1000 messages (900 malformed, 100 valid) in {elapsed:.1f} s; reasons: '
              + '; '.join(f'{n} x {r}' for r, n in sorted(reasons.items())))


def test_failing_then_vanishing_mllm_server(tmp_path):
    """A backend error skips one description (diagnostics ERROR), the next frame is
    described; with the server gone descriptions fail with back-off; when it returns
    they resume."""
    ok = reply('<ground>A person</ground><objects><obj0></objects> stands.')
    server = StubOpenAiServer(default=ok).start()
    try:
        params = {'mllm.backend': 'openai', 'mllm.openai_base_url': server.url,
                  'mllm.openai_retries': 0, 'mllm.openai_timeout_s': 2.0,
                  'reinforce.enabled': False}
        specs = [NodeSpec('perception', 'flaky', [DEMO_PARAMS]),
                 NodeSpec('scene', 'flaky', [DEMO_PARAMS], parameters=params)]
        with NodeGroup(specs, log_dir=tmp_path / 'logs') as group, \
                RosClient('flaky') as ros:
            pub = ros.publisher(Image, '/flaky/image', 10)
            descs = ros.collect(SceneDescription, '/flaky/scene_description', RESULTS_QOS)
            diag = ros.collect(DiagnosticArray, '/diagnostics', 100)
            assert ros.wait_for_subscribers(pub, 2, DISCOVERY_S)
            rgb = load_sample('camera')

            def show(stamp, timeout=30):
                return publish_and_wait(ros, pub, descs,
                                        conv.image_msg(rgb, 'rgb8', stamp, 'f'), timeout)

            assert first_exchange(pub, lambda t: conv.image_msg(rgb, 'rgb8', t, 'f'),
                                  descs, 30, every=3.0) is not None
            server.push(fail(500))                   # one failure mid-run
            assert show(1001, timeout=6) is None    # that frame is skipped...
            err = node_status(diag, '/flaky/scene_node', lambda s, v: s.level == s.ERROR, 10)
            assert err is not None and 'HTTP 500' in err[0].message
            assert show(1002, timeout=40) is not None  # ...the next one is described
            mark = len(diag)
            server.stop()                            # the server goes away
            assert show(1003, timeout=8) is None
            down = node_status(diag, '/flaky/scene_node',
                               lambda s, v: 'connection' in s.message.lower(), 15, start=mark)
            assert down is not None and down[0].level == down[0].ERROR
            server.start()                           # and comes back on the same port
            assert show(1004, timeout=60) is not None, 'descriptions did not resume'
            assert group.alive()
    finally:
        server.stop()


def test_camera_stall_turns_diagnostics_to_warn(tmp_path):
    specs = [NodeSpec('perception', 'stall', parameters={'perception.stale_after_s': 1.0})]
    with NodeGroup(specs, log_dir=tmp_path / 'logs'), RosClient('stall') as ros:
        pub = ros.publisher(Image, '/stall/image', 10)
        dets = ros.collect(DetectionArray, '/stall/detections', RESULTS_QOS)
        diag = ros.collect(DiagnosticArray, '/diagnostics', 100)
        assert ros.wait_for_subscribers(pub, 1, DISCOVERY_S)
        assert publish_and_wait(ros, pub, dets,
                                conv.image_msg(load_sample('camera'), 'rgb8', 7, 'f'))
        assert node_status(diag, '/stall/perception_node', lambda s, v: s.level == s.OK, 5)
        t0 = time.monotonic()
        stale = node_status(diag, '/stall/perception_node',
                            lambda s, v: s.level == s.WARN and 'stale' in s.message, 10)
        assert stale is not None
        # within stale_after_s + one diagnostics period (+ discovery slack)
        assert time.monotonic() - t0 < 1.0 + 1.0 + 2.0


def _cycle(ros, node, n):
    for t in ([Transition.TRANSITION_CLEANUP] if n else []) + \
            [Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE,
             Transition.TRANSITION_DEACTIVATE]:
        r = ros.call(ChangeState, f'{node}/change_state',
                     ChangeState.Request(transition=Transition(id=t)), timeout=60)
        assert r is not None and r.success, (node, t)


@pytest.mark.parametrize('kind', ['perception', 'scene'])
def test_twenty_lifecycle_cycles_do_not_grow_memory_or_threads(tmp_path, kind):
    params = {'autostart': False}
    if kind == 'scene':
        from helpers.make_tiny_models import make_tiny_model
        params.update({'mllm.model': str(make_tiny_model('llm', tmp_path / 'llm'))})
    spec = NodeSpec(kind, 'cyc', parameters=params)
    node = f'/cyc/{kind}_node'
    with NodeGroup([spec], log_dir=tmp_path / 'logs') as group, RosClient('cyc') as ros:
        proc = psutil.Process(group.procs[0].pid)
        samples = []
        for n in range(22):
            _cycle(ros, node, n)
            samples.append((proc.memory_info().rss, proc.num_threads()))
        base_threads = samples[2][1]  # after warm-up (allocator pools, imports)
        rss = [s[0] for s in samples[2:]]
        threads = [s[1] for s in samples[2:]]
        # Growth is the trend: the median of the last 5 cycles against the first 5. A
        # single sample swings by about one model's size (perception: 412 <-> 441 MiB)
        # with whether glibc had handed the freed model back before the next load.
        first, last = statistics.median(rss[:5]), statistics.median(rss[-5:])
        growth = last / first - 1
        print(f'\n{kind}_node, 20 configure/cleanup cycles: RSS median {first / 2**20:.0f} -> '
              f'{last / 2**20:.0f} MiB (growth {growth * 100:.1f} %, highest '
              f'{max(rss) / 2**20:.0f}), threads {min(threads)}..{max(threads)}; MiB per '
              f'cycle {[r // 2**20 for r in rss]}')
        assert growth < 0.10, [r // 2**20 for r in rss]
        assert max(rss) < 1.25 * first, [r // 2**20 for r in rss]  # no runaway spike
        # Bounded, not per cycle: a CI run saw 22 -> 24 (a first call from another of the
        # executor's 4 pool threads can start a library thread); a per-cycle leak would
        # show +20.
        assert max(threads) - base_threads <= 4, threads
