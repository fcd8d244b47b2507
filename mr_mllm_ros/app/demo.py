"""`mr-mllm demo`: the main job on the offline default models.

Starts the graph as separate processes (the same command lines `mr-mllm up` uses), plays
the real photos that installed packages ship as a camera, and prints and saves what the
graph published: detections, and annotated images in --out.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
from sensor_msgs.msg import Image

from mr_mllm_interfaces.msg import DetectionArray

from ..core.annotate import draw_detections
from ..core.config import load_config
from ..core.sample_images import SAMPLES, load_sample
from ..ros import conversions as conv
from ..ros.client import RosClient
from ..ros.qos import RESULTS_QOS
from .launcher import NodeGroup, NodeSpec, ensure_local_ros_env

log = logging.getLogger(__name__)
CAMERA_NS = 'demo_cam'


def run_demo(args) -> int:
    ensure_local_ros_env()
    config = load_config(args.config) if args.config else load_config()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.images or list(SAMPLES)
    params = [args.config] if args.config else []
    deadline = time.monotonic() + args.timeout
    print(f'mr-mllm demo: detector {config.detector.backend} '
          f'({config.detector.model}), ROS_DOMAIN_ID={__import__("os").environ["ROS_DOMAIN_ID"]}'
          f', localhost discovery; results in {out}/')
    results = []
    with NodeGroup([NodeSpec('perception', CAMERA_NS, params)], log_dir=out / 'logs') as graph, \
            RosClient('mr_mllm_demo') as ros:
        pub = ros.publisher(Image, f'/{CAMERA_NS}/image', 10)
        detections = ros.collect(DetectionArray, f'/{CAMERA_NS}/detections', RESULTS_QOS)
        if not ros.wait_for_subscribers(pub, 1, timeout=max(1.0, deadline - time.monotonic())):
            print('error: perception_node did not subscribe in time; see '
                  f'{out}/logs for its output')
            return 1
        for name in names:
            rgb = load_sample(name)
            stamp = ros.now_ns()
            # The node keeps only the newest frame: publish one, wait for its result.
            pub.publish(conv.image_msg(rgb, 'rgb8', stamp, 'demo_camera'))
            msg = detections.wait_for(lambda m: conv.stamp_to_ns(m.header.stamp) == stamp,
                                      timeout=max(0.0, min(60.0, deadline - time.monotonic())))
            if msg is None:
                print(f'{name}: no detections message within the timeout'
                      f'{"" if graph.alive() else " (a node exited)"}')
                return 1
            ds = conv.detection_set_from_msg(msg)
            path = out / f'{name}.jpg'
            cv2.imwrite(str(path), draw_detections(rgb, ds)[..., ::-1])
            found = ', '.join(f'obj{i} {d.class_name} {d.score:.2f}' for i, d in enumerate(ds)) \
                or 'nothing'
            print(f'{name:13s} {rgb.shape[1]}x{rgb.shape[0]}: {found}  '
                  f'[{ds.timings_ms.get("total", 0):.0f} ms, {ds.model_name}] -> {path}')
            results.append({'image': name, 'stamp_ns': stamp, 'model': ds.model_name,
                            'detections': [
                                {'index': i, 'class': d.class_name, 'score': round(d.score, 4),
                                 'box_xyxy': [round(v, 1) for v in
                                              (d.box.x1, d.box.y1, d.box.x2, d.box.y2)]}
                                for i, d in enumerate(ds)]})
    (out / 'results.json').write_text(json.dumps(results, indent=1))
    print(f'wrote {len(results)} annotated images and results.json to {out}/')
    return 0
