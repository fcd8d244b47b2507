"""Executor stalls, measured: a model-free echo and perception_node's closed loop.

    bash scripts/with_env.sh python benchmarks/bench_executor.py [--trips 40] [--frames 60]
        [--only echo|node] [--json FILE]

1. Echo (no model): two processes. The echo process subscribes a VGA sensor_msgs/Image
   and sends it back after 40 ms of CPU work (`--busy-ms`), done either IN the
   subscription callback or OUT of it on a thread of its own (the callback only hands
   the message over, as our nodes do). Its executor is Single, Multi(2) or rclpy's
   experimental EventsExecutor. The client is our RosClient (single-threaded); one
   message in flight. Overhead = round trip - busy time.
2. perception_node closed loop (offline default detector, VGA, one frame in flight):
   overhead = round trip - the node's own detector time (the `total` stage it reports),
   beside the bare detector's time per frame in this process.
Prints overhead p50 / p95 / max in ms; nothing asserts on time. Every process it starts
is stopped before it returns (an echo that will not stop is killed and reported).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from measure import arguments, write_json  # noqa: E402

from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec, ensure_local_ros_env  # noqa: E402
from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402

apply_offline_env()
ensure_local_ros_env()

from sensor_msgs.msg import Image  # noqa: E402

from mr_mllm_interfaces.msg import DetectionArray  # noqa: E402
from mr_mllm_ros.ros import conversions as conv  # noqa: E402
from mr_mllm_ros.ros.client import RosClient  # noqa: E402
from mr_mllm_ros.ros.qos import RESULTS_QOS  # noqa: E402

EXECUTORS = ('single', 'multi', 'events')
STOP_S = 10.0  # an echo process gets this long to stop on SIGINT before it is killed


def _busy(ms: float) -> None:
    """CPU work that holds the GIL, like Python pre/post-processing does."""
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


def echo_server(kind: str, work: str, busy_ms: float) -> int:
    """The echo process: /echo/in -> (busy_ms of work) -> /echo/out."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
    rclpy.init()
    node = rclpy.create_node('echo')
    pub = node.create_publisher(Image, '/echo/out', 10)
    if work == 'in':
        def on_msg(msg):
            _busy(busy_ms)
            pub.publish(msg)
    else:
        box: list = []
        wake = threading.Event()

        def worker():
            while rclpy.ok():
                if not wake.wait(0.2):
                    continue
                wake.clear()
                while box:
                    m = box.pop()
                    _busy(busy_ms)
                    pub.publish(m)
        threading.Thread(target=worker, daemon=True).start()

        def on_msg(msg):
            box.append(msg)
            wake.set()
    node.create_subscription(Image, '/echo/in', on_msg, 10)
    if kind == 'single':
        executor = SingleThreadedExecutor()
    elif kind == 'multi':
        executor = MultiThreadedExecutor(num_threads=2)
    else:
        from rclpy.experimental import EventsExecutor
        executor = EventsExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


def stats(values_ms: list[float]) -> dict:
    a = np.asarray(values_ms)
    return {'n': len(a), 'p50': round(float(np.percentile(a, 50)), 1),
            'p95': round(float(np.percentile(a, 95)), 1), 'max': round(float(a.max()), 1)}


def vga() -> np.ndarray:
    import cv2

    from mr_mllm_ros.core.assets.sample_images import load_sample
    return cv2.resize(load_sample('camera'), (640, 480))


def timed_trips(pub, back, image, count: int, timeout_s: float):
    """Publish `image` `count` times (stamps 1000, 1001, ...), each after the previous
    answer came back on `back`; returns ([(round trip ms, answer)], None), or (answers so
    far, index of the first trip that got no answer within `timeout_s`)."""
    answers = []
    msg = conv.image_msg(image, 'rgb8', 0, 'cam')  # made once: not a hop
    for i in range(count):
        stamp = 1000 + i
        msg.header.stamp = conv.ns_to_stamp(stamp)
        t0 = time.perf_counter()
        pub.publish(msg)
        m = back.wait_for(lambda m, s=stamp: conv.stamp_to_ns(m.header.stamp) == s, timeout_s)
        if m is None:
            return answers, i
        answers.append(((time.perf_counter() - t0) * 1e3, m))
    return answers, None


def echo_run(kind: str, work: str, trips: int, busy_ms: float, image) -> dict:
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, __file__, '--echo-server', kind, '--work', work,
                             '--busy-ms', str(busy_ms)], env=env, start_new_session=True)
    result: dict = {'executor': kind, 'work': work}
    try:
        with RosClient('echo_client') as ros:
            pub = ros.publisher(Image, '/echo/in', 10)
            back = ros.collect(Image, '/echo/out', 10)
            if ros.request_reply(pub, conv.image_msg(image, 'rgb8', 1, 'cam'), back,
                                 lambda m: conv.stamp_to_ns(m.header.stamp) == 1, 60) is None:
                result['error'] = 'echo never answered'
                return result
            time.sleep(0.5)  # let the warm-up's re-sends drain
            answers, lost = timed_trips(pub, back, image, trips, 10)
            if lost is not None:
                result['error'] = f'trip {lost} lost'
                return result
            result.update(stats([rt - busy_ms for rt, _ in answers]))
    finally:
        proc.send_signal(2)
        try:
            proc.wait(STOP_S)
            result['stopped'] = 'SIGINT'
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            result['stopped'] = f'killed: did not stop within {STOP_S:.0f} s of SIGINT'
    return result


def node_run(frames: int, image) -> dict:
    from mr_mllm_ros.core.config import load_config
    from mr_mllm_ros.core.pipeline import PerceptionPipeline
    from mr_mllm_ros.core.types import Frame
    pipe = PerceptionPipeline(load_config())
    pipe.detect(Frame(image, 0, 'cam'))  # warm-up
    t0 = time.perf_counter()
    for i in range(frames):
        pipe.detect(Frame(image, i, 'cam'))
    bare_ms = (time.perf_counter() - t0) * 1e3 / frames
    pipe.close()
    with NodeGroup([NodeSpec('perception', 'bench_exec')]), RosClient('bench_exec') as ros:
        pub = ros.publisher(Image, '/bench_exec/image', 10)
        dets = ros.collect(DetectionArray, '/bench_exec/detections', RESULTS_QOS)
        if ros.request_reply(pub, conv.image_msg(image, 'rgb8', 1, 'cam'), dets,
                             lambda m: conv.stamp_to_ns(m.header.stamp) == 1, 90) is None:
            return {'error': 'no detections from perception_node'}
        time.sleep(0.5)
        gc.collect()
        gc.freeze()  # our own (client) GC pauses are not the node's overhead
        answers, lost = timed_trips(pub, dets, image, frames, 30)
        if lost is not None:
            return {'error': f'frame {lost} lost'}
        trip = [rt for rt, _ in answers]
        overhead = [rt - {t.stage: t.duration_ms for t in m.timings}['total']
                    for rt, m in answers]
    return dict(stats(overhead), bare_detector_ms=round(bare_ms, 1),
                round_trip_p50=round(float(np.percentile(trip, 50)), 1))


def main() -> int:
    ap = arguments(__doc__)
    ap.add_argument('--trips', type=int, default=40, help='echo round trips per config')
    ap.add_argument('--frames', type=int, default=60, help='closed-loop frames')
    ap.add_argument('--busy-ms', type=float, default=40.0)
    ap.add_argument('--only', choices=('echo', 'node'))
    ap.add_argument('--executors', default=','.join(EXECUTORS))
    ap.add_argument('--echo-server', choices=EXECUTORS, help=argparse.SUPPRESS)
    ap.add_argument('--work', choices=('in', 'out'), default='in', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.echo_server:
        return echo_server(args.echo_server, args.work, args.busy_ms)
    print(f'machine: {platform.machine()}, {os.cpu_count()} CPUs, load '
          f'{os.getloadavg()[0]:.1f}; ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]}', flush=True)
    image, results = vga(), {'echo': [], 'node': None}
    if args.only in (None, 'echo'):
        for kind in args.executors.split(','):
            for work in ('in', 'out'):
                r = echo_run(kind, work, args.trips, args.busy_ms, image)
                results['echo'].append(r)
                figures = r.get('error') or f'p50 {r["p50"]:6.1f}  p95 {r["p95"]:6.1f}  ' \
                                            f'max {r["max"]:7.1f}'
                print(f'echo  {kind:6s} work {work:3s} callback  overhead ms  {figures}'
                      f'   [{r.get("stopped", "")}]', flush=True)
    if args.only in (None, 'node'):
        r = node_run(args.frames, image)
        results['node'] = r
        print('perception_node closed loop, overhead ms  ' + (
            r.get('error') or f'p50 {r["p50"]:.1f}  p95 {r["p95"]:.1f}  max {r["max"]:.1f}  '
            f'(n={r["n"]}; round trip p50 {r["round_trip_p50"]} ms, bare detector '
            f'{r["bare_detector_ms"]} ms/frame)'), flush=True)
    write_json(args.json, results)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
