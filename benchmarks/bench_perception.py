"""perception_node vs the bare detector, and the latest-frame policy under overload.

    bash scripts/with_env.sh python benchmarks/bench_perception.py [--frames 300]

1. Overhead: the same N frames through (a) PerceptionPipeline.detect in-process and (b) a
   perception_node process, one frame in flight at a time (publish, wait for its
   DetectionArray). Overhead = node time per frame / bare time per frame - 1. It includes
   everything a user pays: serialization, transport, decode, publish.
2. Overload: a 30 Hz camera into a detector slower than 30 Hz for T and 10 T seconds;
   p50/p95 latency (image stamp -> DetectionArray received) and drops. The latest-frame
   slot keeps p95 flat as the run gets longer (a growing queue would make it grow).
Prints a table; --json writes the numbers. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec, ensure_local_ros_env  # noqa: E402
from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402

apply_offline_env()
ensure_local_ros_env()

from sensor_msgs.msg import Image  # noqa: E402

from mr_mllm_interfaces.msg import DetectionArray  # noqa: E402
from mr_mllm_ros.core.assets.sample_images import SAMPLES, load_sample  # noqa: E402
from mr_mllm_ros.core.config import load_config  # noqa: E402
from mr_mllm_ros.core.pipeline import PerceptionPipeline  # noqa: E402
from mr_mllm_ros.core.types import Frame  # noqa: E402
from mr_mllm_ros.ros import conversions as conv  # noqa: E402
from mr_mllm_ros.ros.client import RosClient  # noqa: E402
from mr_mllm_ros.ros.qos import RESULTS_QOS  # noqa: E402


def vga_frames(n: int) -> list[np.ndarray]:
    """The sample photos resized to 640x480, cycled."""
    import cv2
    photos = [cv2.resize(load_sample(s), (640, 480)) for s in SAMPLES]
    return [photos[i % len(photos)] for i in range(n)]


def bare(frames) -> float:
    pipe = PerceptionPipeline(load_config())
    t0 = time.perf_counter()
    for i, rgb in enumerate(frames):
        pipe.detect(Frame(rgb, i, 'cam'))
    dt = time.perf_counter() - t0
    pipe.close()
    return dt / len(frames)


def through_node(frames) -> tuple[float, float]:
    """(seconds per frame, bare detector ms reported by the node) closed loop."""
    with NodeGroup([NodeSpec('perception', 'bench')]), RosClient('bench') as ros:
        pub = ros.publisher(Image, '/bench/image', 10)
        dets = ros.collect(DetectionArray, '/bench/detections', RESULTS_QOS)
        if not ros.wait_for_subscribers(pub, 1, 60):
            raise SystemExit('perception_node did not come up')
        # warm-up (and make sure both directions are matched)
        warm = conv.image_msg(frames[0], 'rgb8', 1, 'cam')
        if ros.request_reply(pub, warm, dets, lambda m: m.header.stamp.nanosec == 1, 30) is None:
            raise SystemExit('no detections from perception_node')
        node_ms = []
        t0 = time.perf_counter()
        for i, rgb in enumerate(frames):
            stamp = 10_000 + i
            msg = conv.image_msg(rgb, 'rgb8', stamp, 'cam')
            pub.publish(msg)
            m = dets.wait_for(lambda m, s=stamp: conv.stamp_to_ns(m.header.stamp) == s, 30)
            if m is None:
                raise SystemExit(f'frame {i} lost')
            node_ms.append({t.stage: t.duration_ms for t in m.timings}['total'])
        dt = time.perf_counter() - t0
    return dt / len(frames), float(np.mean(node_ms))


def overload(frames, seconds: float, rate_hz: float = 30.0) -> dict:
    with NodeGroup([NodeSpec('perception', 'over')]), RosClient('bench_over') as ros:
        pub = ros.publisher(Image, '/over/image', 10)
        lat: list[float] = []
        got = threading.Event()

        def on_det(m):
            lat.append((ros.now_ns() - conv.stamp_to_ns(m.header.stamp)) / 1e6)
            got.set()

        ros.node.create_subscription(DetectionArray, '/over/detections', on_det, RESULTS_QOS)
        if not ros.wait_for_subscribers(pub, 1, 60):
            raise SystemExit('perception_node did not come up')
        # wait until results flow, then start measuring
        while not got.wait(1.0):
            pub.publish(conv.image_msg(frames[0], 'rgb8', ros.now_ns(), 'cam'))
        lat.clear()
        sent, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < seconds:
            pub.publish(conv.image_msg(frames[sent % len(frames)], 'rgb8', ros.now_ns(), 'cam'))
            sent += 1
            time.sleep(max(0.0, t0 + sent / rate_hz - time.monotonic()))
        time.sleep(1.0)
        return {'seconds': seconds, 'sent': sent, 'processed': len(lat),
                'dropped_share': round(1 - len(lat) / max(sent, 1), 3),
                'p50_ms': round(float(np.percentile(lat, 50)), 1),
                'p95_ms': round(float(np.percentile(lat, 95)), 1),
                'max_ms': round(float(np.max(lat)), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--frames', type=int, default=300)
    ap.add_argument('--overload-s', type=float, default=6.0, help='T (and 10 T) seconds')
    ap.add_argument('--json', help='write results here')
    args = ap.parse_args()
    frames = vga_frames(args.frames)
    print(f'machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
          f'ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]}; {args.frames} VGA frames')
    bare_s = bare(frames)
    node_s, node_detect_ms = through_node(frames)
    overhead = node_s / bare_s - 1
    print(f'bare detector          {bare_s * 1e3:7.1f} ms/frame')
    print(f'through perception_node {node_s * 1e3:6.1f} ms/frame (detector inside the node '
          f'{node_detect_ms:.1f} ms)  overhead {overhead * 100:+.1f} %')
    short = overload(frames, args.overload_s)
    long = overload(frames, 10 * args.overload_s)
    for r in (short, long):
        print(f'overload 30 Hz for {r["seconds"]:5.0f} s: sent {r["sent"]:5d}, processed '
              f'{r["processed"]:5d} (dropped {r["dropped_share"] * 100:4.1f} %), latency p50 '
              f'{r["p50_ms"]} ms, p95 {r["p95_ms"]} ms, max {r["max_ms"]} ms')
    print(f'p95 ratio long/short: {long["p95_ms"] / short["p95_ms"]:.2f}')
    if args.json:
        Path(args.json).write_text(json.dumps({
            'bare_ms': bare_s * 1e3, 'node_ms': node_s * 1e3,
            'node_detector_ms': node_detect_ms, 'overhead': overhead,
            'overload': [short, long]}, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
