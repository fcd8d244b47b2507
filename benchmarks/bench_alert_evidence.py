"""Cost of alerts with evidence images: does publishing them lower the detection rate?

    bash scripts/with_env.sh python benchmarks/bench_alert_evidence.py [--seconds 20]
        [--rounds 2] [--json F]

1. Evidence encoding alone, in-process: core.images.annotated_jpeg on a VGA frame with
   its boxes (what the scene node's frame worker / MLLM thread does per alert frame),
   and conversions.alert_msg with it.
2. The graph: a 10 Hz camera (VGA photo with a person) into perception_node + scene_node
   (rules only, no MLLM), (a) alerts disabled, (b) 4 rules each raising an alert for
   every frame scene_node handles (>= 10 alerts/s once it handles >= 2.5 frames/s)
   without evidence images (alerts.evidence_max_side 0), (c) the same with evidence:
   detections/s and alerts/s received, rounds interleaved a, b, c, a, b, c so machine
   load drifts hit all alike. Nothing asserts on time.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
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
from mr_mllm_ros.core.images import annotated_jpeg  # noqa: E402
from mr_mllm_ros.core.assets.sample_images import load_sample  # noqa: E402
from mr_mllm_ros.core.types import Alert, Box, Detection, DetectionSet, Frame, Severity  # noqa
from mr_mllm_ros.ros import conversions as conv  # noqa: E402
from mr_mllm_ros.ros.client import RosClient  # noqa: E402
from mr_mllm_ros.ros.qos import ALERTS_QOS, RESULTS_QOS  # noqa: E402

CAMERA_HZ = 10.0
PERSON = {'type': 'hazard_in_region', 'severity': 'CRITICAL', 'classes': ['person'],
          'min_score': 0.3, 'anchor': 'any_overlap',
          'region': [[0, 0], [1, 0], [1, 1], [0, 1]], 'debounce': {'n': 1, 'm': 1},
          'cooldown_s': 0.0}
# Every rule raises an alert per frame scene_node handles: 4 rules keep >= 10 alerts/s
# even when the detector manages only ~3 frames/s on this machine.
ALERTS = {'rules': [{'name': f'person_{k}', **PERSON} for k in range(4)]}


def vga_photo() -> np.ndarray:
    return cv2.resize(load_sample('camera'), (640, 480), interpolation=cv2.INTER_AREA)


def encoding_cost(n: int = 50) -> dict:
    rgb = vga_photo()
    frame = Frame(rgb, 1, 'cam')
    dets = tuple(Detection(0, 'person', 0.5, Box(60 + 10 * i, 40, 300 + 10 * i, 470))
                 for i in range(5))
    ds = DetectionSet(dets, 640, 480, 1, 'cam')
    t_enc, t_msg = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        jpg = annotated_jpeg(frame.image, ds, {0}, max_side=640, quality=80)
        t1 = time.perf_counter()
        conv.alert_msg(Alert(Severity.WARN, 'c', 'r', 'rule', 'm', 1, 'cam', dets[:1],
                             evidence_jpeg=jpg))
        t2 = time.perf_counter()
        t_enc.append((t1 - t0) * 1e3)
        t_msg.append((t2 - t1) * 1e3)
    return {'encode_ms_p50': float(np.median(t_enc)), 'msg_ms_p50': float(np.median(t_msg)),
            'jpeg_kb': len(jpg) / 1024}


def graph_rates(ns: str, scene_params: dict, seconds: float) -> tuple[float, float]:
    specs = [NodeSpec('perception', ns, log_level='error'),
             NodeSpec('scene', ns, parameters=scene_params, log_level='error')]
    with NodeGroup(specs), RosClient(f'bench_{ns}') as ros:
        pub = ros.publisher(Image, f'/{ns}/image', 10)
        counts = {'dets': 0, 'alerts': 0}

        def counter(key):
            return lambda _m: counts.__setitem__(key, counts[key] + 1)

        ros.node.create_subscription(DetectionArray, f'/{ns}/detections', counter('dets'),
                                     RESULTS_QOS)
        ros.node.create_subscription(CornerCaseAlert, f'/{ns}/alerts', counter('alerts'),
                                     ALERTS_QOS)
        if not ros.wait_for_subscribers(pub, 2, 120):
            raise SystemExit('nodes did not come up')
        rgb = vga_photo()
        warm_until = time.monotonic() + 3.0
        sent = 0
        t0 = None
        start = time.monotonic()
        while True:
            now = time.monotonic()
            if t0 is None and now >= warm_until:
                counts.update(dets=0, alerts=0)
                t0 = now
            if t0 is not None and now - t0 >= seconds:
                break
            pub.publish(conv.image_msg(rgb, 'rgb8', ros.now_ns(), 'cam'))
            sent += 1
            time.sleep(max(0.0, start + sent / CAMERA_HZ - time.monotonic()))
        elapsed = time.monotonic() - t0
        return counts['dets'] / elapsed, counts['alerts'] / elapsed


def main() -> int:
    ap = arguments(__doc__)
    ap.add_argument('--seconds', type=float, default=20.0)
    ap.add_argument('--rounds', type=int, default=2)
    args = ap.parse_args()
    out: dict = {'machine': f'{platform.machine()}, {os.cpu_count()} CPUs',
                 'load': os.getloadavg()[0]}
    print(out['machine'], f'load {out["load"]:.1f}')
    cost = encoding_cost()
    out['encoding'] = cost
    print(f'1. evidence JPEG of a VGA frame with 5 boxes: {cost["encode_ms_p50"]:.1f} ms '
          f'(p50), alert_msg {cost["msg_ms_p50"]:.2f} ms, {cost["jpeg_kb"]:.0f} KiB')
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / 'rules.yaml'
        rules.write_text(yaml.safe_dump(ALERTS))
        base = {'mllm.backend': 'none'}
        conditions = {'no_alerts': {**base, 'alerts.enabled': False},
                      'plain_alerts': {**base, 'alerts.rules_file': str(rules),
                                       'alerts.evidence_max_side': 0},
                      'evidence_alerts': {**base, 'alerts.rules_file': str(rules)}}
        for r in range(args.rounds):
            for name, params in conditions.items():
                dets, alerts = graph_rates(f'{name}{r}', params, args.seconds)
                rows.append({'round': r, 'condition': name, 'detections_hz': dets,
                             'alerts_hz': alerts})
                print(f'2. round {r} {name:16s} detections {dets:5.2f}/s  alerts '
                      f'{alerts:5.2f}/s  (camera {CAMERA_HZ:g} Hz)')
    out['graph'] = rows
    for name in conditions:
        v = [x['detections_hz'] for x in rows if x['condition'] == name]
        out[f'{name}_mean_hz'] = float(np.mean(v))
    base_hz = out['no_alerts_mean_hz']
    print('   mean detections/s: ' + ', '.join(
        f'{name} {out[f"{name}_mean_hz"]:.2f} ({out[f"{name}_mean_hz"] / base_hz * 100:.0f} %)'
        for name in conditions))
    write_json(args.json, out)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
