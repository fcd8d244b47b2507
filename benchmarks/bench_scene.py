"""scene_node costs on this machine, with the offline default models.

    bash scripts/with_env.sh python benchmarks/bench_scene.py [--seconds 20] [--hz 10] [--json F]

1. Detection rate held: a 10 Hz camera (--hz) into (a) perception_node alone and (b) perception_node
   + scene_node describing every new scene + 20 concurrent ask_scene calls; detections/s
   received, same run. On 2 shared CPU cores the MLLM competes with the detector for the
   same cores; on a robot they sit on GPU + CPU.
2. Alert latency, image published -> CornerCaseAlert received: a rule-only alert
   (hazard_in_region) vs the MLLM judgement alert (mllm_judgement with threshold 0, so
   every judgement raises).
Nothing asserts on time.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from measure import arguments, write_json  # noqa: E402

from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec, ensure_local_ros_env  # noqa: E402
from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402

apply_offline_env()
ensure_local_ros_env()

from sensor_msgs.msg import Image  # noqa: E402

from mr_mllm_interfaces.msg import CornerCaseAlert, DetectionArray  # noqa: E402
from mr_mllm_interfaces.srv import AskScene  # noqa: E402
from mr_mllm_ros.core.assets.sample_images import load_sample  # noqa: E402
from mr_mllm_ros.ros import conversions as conv  # noqa: E402
from mr_mllm_ros.ros.client import RosClient  # noqa: E402
from mr_mllm_ros.ros.qos import ALERTS_QOS, RESULTS_QOS  # noqa: E402

RULES = {'rules': [
    {'name': 'person_zone', 'type': 'hazard_in_region', 'severity': 'CRITICAL',
     'classes': ['person'], 'min_score': 0.4, 'anchor': 'bottom_center',
     'region': [[0, 0], [1, 0], [1, 1], [0, 1]], 'debounce': {'n': 1, 'm': 1},
     'cooldown_s': 0.0},
    {'name': 'mllm_says', 'type': 'mllm_judgement', 'severity': 'WARN',
     'min_probability': 0.0, 'debounce': {'n': 1, 'm': 1}, 'cooldown_s': 0.0}]}


def camera_rate(ros, ns: str, seconds: float, ask: bool, hz: float) -> tuple[float, int, int]:
    """Publish at `hz` for `seconds`; detections/s received (and VQA answered/busy)."""
    pub = ros.publisher(Image, f'/{ns}/image', 10)
    count = [0]
    ros.node.create_subscription(DetectionArray, f'/{ns}/detections',
                                 lambda m: count.__setitem__(0, count[0] + 1), RESULTS_QOS)
    if not ros.wait_for_subscribers(pub, 2 if ask else 1, 120):
        raise SystemExit('nodes did not come up')
    frames = [load_sample(s) for s in ('camera', 'grace_hopper', 'motorcycle')]
    answered, busy = 0, 0
    futures = []
    if ask:
        client = ros.node.create_client(AskScene, f'/{ns}/ask_scene')
        client.wait_for_service(timeout_sec=60)
    time.sleep(2.0)  # let the first descriptions start
    count[0] = 0
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < seconds:
        pub.publish(conv.image_msg(frames[sent % 3], 'rgb8', ros.now_ns(), 'cam'))
        sent += 1
        if ask and sent == round(2 * hz):  # 2 s in: 20 concurrent questions
            futures = [client.call_async(AskScene.Request(question=f'What is there {i}?',
                                                          timeout_s=30.0)) for i in range(20)]
        time.sleep(max(0.0, t0 + sent / hz - time.monotonic()))
    rate = count[0] / (time.monotonic() - t0)
    deadline = time.monotonic() + 40
    while futures and not all(f.done() for f in futures) and time.monotonic() < deadline:
        time.sleep(0.1)
    for f in futures:
        if f.done():
            r = f.result()
            answered += r.success
            busy += (not r.success and r.error == 'busy')
    return rate, answered, busy


def alert_latency(ros, ns: str, n: int = 8) -> dict[str, list[float]]:
    pub = ros.publisher(Image, f'/{ns}/image', 10)
    alerts = ros.collect(CornerCaseAlert, f'/{ns}/alerts', ALERTS_QOS)
    if not ros.wait_for_subscribers(pub, 2, 120):
        raise SystemExit('nodes did not come up')
    time.sleep(3.0)
    latency: dict[str, list[float]] = {'person_zone': [], 'mllm_says': []}
    rgb = load_sample('camera')
    for i in range(n):
        stamp = ros.now_ns()
        t0 = time.monotonic()
        pub.publish(conv.image_msg(rgb, 'rgb8', stamp, 'cam'))
        for rule in latency:
            got = alerts.wait_for(lambda a, r=rule: a.rule == r and
                                  conv.stamp_to_ns(a.header.stamp) == stamp, 60)
            if got is not None:
                latency[rule].append((time.monotonic() - t0) * 1e3)
        time.sleep(0.5)
    return latency


def main() -> int:
    ap = arguments(__doc__)
    ap.add_argument('--seconds', type=float, default=20.0)
    ap.add_argument('--hz', type=float, default=10.0, help='camera rate')
    args = ap.parse_args()
    out: dict = {'machine': f'{platform.machine()}, {os.cpu_count()} CPUs'}
    print(out['machine'])
    describe_all = {'scene.description_rate_hz': 2.0, 'scene.min_description_interval_s': 0.0}
    with NodeGroup([NodeSpec('perception', 'alone')]), RosClient('bench_alone') as ros:
        alone, _, _ = camera_rate(ros, 'alone', args.seconds, ask=False, hz=args.hz)
    with NodeGroup([NodeSpec('perception', 'busy'),
                    NodeSpec('scene', 'busy', parameters=describe_all)]), \
            RosClient('bench_busy') as ros:
        busy_rate, answered, busy = camera_rate(ros, 'busy', args.seconds, ask=True,
                                                hz=args.hz)
    out['detection_rate'] = {'camera_hz': args.hz, 'alone_hz': alone,
                             'with_scene_and_vqa_hz': busy_rate, 'ratio': busy_rate / alone,
                             'vqa_answered': answered, 'vqa_busy': busy}
    print(f'1. detections/s with a {args.hz:g} Hz camera: perception alone {alone:.2f}, with '
          f'scene_node describing + 20 concurrent VQA {busy_rate:.2f} '
          f'({busy_rate / alone * 100:.0f} %); VQA: {answered} answered, {busy} busy')
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / 'rules.yaml'
        rules.write_text(yaml.safe_dump(RULES))
        params = {**describe_all, 'alerts.rules_file': str(rules),
                  'alerts.mllm_judgement': True, 'alerts.judgement_rate_hz': 10.0}
        with NodeGroup([NodeSpec('perception', 'alerts'),
                        NodeSpec('scene', 'alerts', parameters=params)]), \
                RosClient('bench_alerts') as ros:
            lat = alert_latency(ros, 'alerts')
    out['alert_latency_ms'] = {k: {'p50': float(np.median(v)) if v else None, 'n': len(v)}
                               for k, v in lat.items()}
    for rule, v in lat.items():
        kind = 'rule only' if rule == 'person_zone' else 'MLLM judgement'
        print(f'2. alert latency ({kind}): p50 {np.median(v):.0f} ms over {len(v)} frames'
              if v else f'2. alert latency ({kind}): no alert')
    write_json(args.json, out)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
