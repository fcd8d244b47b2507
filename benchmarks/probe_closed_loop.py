"""Closed-loop probe: publish one frame, wait for its DetectionArray, repeat; print every
round trip. Made to find where perception_node's occasional 0.1-2.3 s waits come from
(docs/BENCHMARKS.md, perception).

    bash scripts/with_env.sh python benchmarks/probe_closed_loop.py [--frames 10]
        [--best-effort] [--pause-s 0.05]

Three batches: VGA, a 64x48 image, VGA again. --best-effort puts both the image and the
detections topic of this client on best effort (the node's image subscription is best
effort already), which takes DDS reliability repair out of the loop. Prints round trips
in ms and the detector's own timings of the last frame. Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec, ensure_local_ros_env  # noqa: E402
from mr_mllm_ros.core.offline import apply_offline_env  # noqa: E402

apply_offline_env()
ensure_local_ros_env()

import cv2  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from mr_mllm_interfaces.msg import DetectionArray  # noqa: E402
from mr_mllm_ros.core.sample_images import load_sample  # noqa: E402
from mr_mllm_ros.ros import conversions as conv  # noqa: E402
from mr_mllm_ros.ros.client import RosClient  # noqa: E402
from mr_mllm_ros.ros.qos import RESULTS_QOS  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--frames', type=int, default=10, help='frames per batch')
    p.add_argument('--best-effort', action='store_true')
    p.add_argument('--pause-s', type=float, default=0.0, help='pause before each frame')
    args = p.parse_args()
    vga = cv2.resize(load_sample('camera'), (640, 480))
    tiny = cv2.resize(vga, (64, 48))
    image_qos = qos_profile_sensor_data if args.best_effort else 10
    det_qos = qos_profile_sensor_data if args.best_effort else RESULTS_QOS
    with NodeGroup([NodeSpec('perception', 'probe')]), RosClient('probe') as ros:
        pub = ros.publisher(Image, '/probe/image', image_qos)
        dets = ros.collect(DetectionArray, '/probe/detections', det_qos)
        if not ros.wait_for_subscribers(pub, 1, 60):
            raise SystemExit('perception_node did not come up')
        warm = conv.image_msg(vga, 'rgb8', 1, 'cam')
        if ros.request_reply(pub, warm, dets, lambda m: conv.stamp_to_ns(m.header.stamp) == 1,
                             30) is None:
            raise SystemExit('no detections from perception_node')
        stamp = 1000
        for name, image in (('vga', vga), ('64x48', tiny), ('vga', vga)):
            trips, last = [], None
            for _ in range(args.frames):
                stamp += 1
                time.sleep(args.pause_s)
                t0 = time.perf_counter()
                pub.publish(conv.image_msg(image, 'rgb8', stamp, 'cam'))
                last = dets.wait_for(lambda m, s=stamp: conv.stamp_to_ns(m.header.stamp) == s,
                                     10)
                trips.append(round((time.perf_counter() - t0) * 1e3) if last else -1)
            timings = {t.stage: round(t.duration_ms, 1) for t in last.timings} if last else {}
            print(f'{name:6s} round trips ms {trips}  detector {timings}', flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
