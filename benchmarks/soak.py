"""Soak: N frames through perception_node + scene_node (offline default models), resident
memory and thread count of both processes sampled as it runs.

    bash scripts/with_env.sh python benchmarks/soak.py [--frames 10000] [--rate 20]

The camera cycles the six sample photos (so the class set changes often and scene_node
describes at its min_description_interval_s); the MLLM also answers a question every
~100 frames. Pass: RSS and threads flat within 10 % after warm-up (the first 10 % of the
run). Prints the samples and a verdict; --json writes them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from measure import arguments  # noqa: E402

from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec, ensure_local_ros_env  # noqa: E402
from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402

apply_offline_env()
ensure_local_ros_env()

from sensor_msgs.msg import Image  # noqa: E402

from mr_mllm_interfaces.msg import DetectionArray, SceneDescription  # noqa: E402
from mr_mllm_interfaces.srv import AskScene  # noqa: E402
from mr_mllm_ros.core.assets.sample_images import SAMPLES, load_sample  # noqa: E402
from mr_mllm_ros.ros import conversions as conv  # noqa: E402
from mr_mllm_ros.ros.client import RosClient  # noqa: E402
from mr_mllm_ros.ros.qos import RESULTS_QOS  # noqa: E402


def main() -> int:
    ap = arguments(__doc__)
    ap.add_argument('--frames', type=int, default=10000)
    ap.add_argument('--rate', type=float, default=20.0)
    args = ap.parse_args()
    photos = [load_sample(s) for s in SAMPLES]
    specs = [NodeSpec('perception', 'soak'), NodeSpec('scene', 'soak')]
    samples = []
    with NodeGroup(specs, log_dir='output/soak_logs') as group, RosClient('soak') as ros:
        procs = {s.kind: psutil.Process(p.pid) for s, p in zip(specs, group.procs)}
        pub = ros.publisher(Image, '/soak/image', 10)
        dets = ros.collect(DetectionArray, '/soak/detections', RESULTS_QOS)
        descs = ros.collect(SceneDescription, '/soak/scene_description', RESULTS_QOS)
        client = ros.node.create_client(AskScene, '/soak/ask_scene')
        if not ros.wait_for_subscribers(pub, 2, 180):
            raise SystemExit('nodes did not come up')
        t0 = time.monotonic()
        futures = []
        for i in range(args.frames):
            pub.publish(conv.image_msg(photos[i % len(photos)], 'rgb8', ros.now_ns(), 'cam'))
            if i % 100 == 50:
                futures.append(client.call_async(AskScene.Request(
                    question='What is in front of the camera?', timeout_s=30.0)))
            if i % int(args.rate * 10) == 0:  # every ~10 s
                samples.append({'frame': i, 't_s': round(time.monotonic() - t0, 1),
                                **{f'{k}_rss_mib': round(p.memory_info().rss / 2**20, 1)
                                   for k, p in procs.items()},
                                **{f'{k}_threads': p.num_threads() for k, p in procs.items()},
                                'descriptions': len(descs)})
                print(samples[-1], flush=True)
                if len(dets) > 1000:  # keep this process's memory bounded
                    dets.clear()
            time.sleep(max(0.0, t0 + (i + 1) / args.rate - time.monotonic()))
        alive = group.alive()
        elapsed = time.monotonic() - t0
    answered = sum(1 for f in futures if f.done() and f.result().success)
    warm = samples[max(1, len(samples) // 10):]
    verdict = {}
    for kind in procs:
        rss = [s[f'{kind}_rss_mib'] for s in warm]
        threads = [s[f'{kind}_threads'] for s in warm]
        verdict[kind] = {'rss_first': rss[0], 'rss_last': rss[-1], 'rss_max': max(rss),
                         'rss_growth': round(max(rss) / rss[0] - 1, 4),
                         'threads_min': min(threads), 'threads_max': max(threads)}
    flat = all(v['rss_growth'] <= 0.10 and v['threads_max'] <= v['threads_min'] + 1
               for v in verdict.values())
    print(f'\n{args.frames} frames at {args.rate} Hz in {elapsed:.0f} s; nodes alive: {alive}; '
          f'questions answered {answered}/{len(futures)}')
    for kind, v in verdict.items():
        print(f'{kind}_node: RSS {v["rss_first"]} -> {v["rss_last"]} MiB (max growth '
              f'{v["rss_growth"] * 100:.1f} % after warm-up), threads '
              f'{v["threads_min"]}..{v["threads_max"]}')
    print('FLAT' if flat and alive else 'NOT FLAT')
    if args.json:
        Path(args.json).write_text(json.dumps({'samples': samples, 'verdict': verdict,
                                               'elapsed_s': elapsed, 'alive': alive,
                                               'answered': answered}, indent=1))
    return 0 if flat and alive else 1


if __name__ == '__main__':
    raise SystemExit(main())
