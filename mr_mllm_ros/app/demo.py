"""`mr-mllm demo`: the main job on the offline default models.

Starts perception_node and scene_node as separate processes (the same command lines
`mr-mllm up` uses), plays the real photos that installed packages ship as a camera, and
prints and saves what the graph published: detections, grounded descriptions (with the
names of the models that wrote them), alerts, and one visual-question round trip; the
result topics are recorded into a bag (OUT/graph_bag) as they come.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from sensor_msgs.msg import Image

from mr_mllm_interfaces.msg import CornerCaseAlert, DetectionArray, SceneDescription
from mr_mllm_interfaces.srv import AskScene

from ..core.assets.sample_images import SAMPLES, load_sample
from ..core.config import load_config, share_dir
from ..core.images import draw_detections, write_rgb
from ..ros import conversions as conv
from ..ros.client import RosCallError, RosClient
from ..ros.qos import ALERTS_QOS, RESULTS_QOS
from .launcher import NodeGroup, NodeSpec, ensure_local_ros_env
from .record import demo_recording

log = logging.getLogger(__name__)
CAMERA_NS = 'demo_cam'
QUESTION = ('grace_hopper', 'What is the person wearing?')
SEVERITY = {0: 'INFO', 1: 'WARN', 2: 'CRITICAL'}


def _stamp_is(stamp: int):
    return lambda m: conv.stamp_to_ns(m.header.stamp) == stamp


def describe_phrases(sd) -> list[str]:
    return [f'"{p.text}" -> ' + ', '.join(
        f'obj{i} {sd.detections[i].class_name}' for i in p.detection_indices)
        for p in sd.phrases]


def add_arguments(p) -> None:
    p.add_argument('--config', help='config YAML merged over the packaged defaults')
    p.add_argument('--out', default='output/demo', help='folder for annotated images')
    p.add_argument('--images', nargs='*', help='sample names (default: all)')
    p.add_argument('--record', metavar='BAG',
                   help='bag folder for the result topics the graph publishes (sqlite3; '
                        'read it with rosbags or ROS 2 tools); default OUT/graph_bag')
    p.add_argument('--no-record', action='store_true', help='do not record a bag')
    p.add_argument('--timeout', type=float, default=600.0,
                   help='give up after this many seconds (default 600)')


def run(args) -> int:
    ensure_local_ros_env()
    params = [str(share_dir() / 'config' / 'demo.yaml')] + ([args.config] if args.config else [])
    config = load_config(*params)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.images or list(SAMPLES)
    deadline = time.monotonic() + args.timeout
    left = lambda: max(0.0, deadline - time.monotonic())  # noqa: E731
    print(f'mr-mllm demo: ROS_DOMAIN_ID={os.environ["ROS_DOMAIN_ID"]}, localhost discovery; '
          f'detector {config.detector.backend} ({config.detector.model}), MLLM '
          f'{config.mllm.backend} ({config.mllm.model}); results in {out}/', flush=True)
    specs = [NodeSpec('perception', CAMERA_NS, params), NodeSpec('scene', CAMERA_NS, params)]
    results, stamps = [], {}
    bag = None if args.no_record else Path(args.record or out / 'graph_bag')
    if bag is not None and args.record is None and bag.exists():
        shutil.rmtree(bag)  # the demo's own output from an earlier run
    with NodeGroup(specs, log_dir=out / 'logs') as graph, RosClient('mr_mllm_demo') as ros, \
            demo_recording(ros.node, str(bag) if bag else None, CAMERA_NS):
        pub = ros.publisher(Image, f'/{CAMERA_NS}/image', 10)
        detections = ros.collect(DetectionArray, f'/{CAMERA_NS}/detections', RESULTS_QOS)
        descriptions = ros.collect(SceneDescription, f'/{CAMERA_NS}/scene_description',
                                   RESULTS_QOS)
        alerts = ros.collect(CornerCaseAlert, f'/{CAMERA_NS}/alerts', ALERTS_QOS)
        if not ros.wait_for_subscribers(pub, 2, timeout=min(120.0, left())):
            print(f'error: the nodes did not subscribe in time; see {out}/logs')
            return 1
        for name in names:
            rgb = load_sample(name)
            stamp = stamps[name] = ros.now_ns()
            msg = conv.image_msg(rgb, 'rgb8', stamp, 'demo_camera')
            det = ros.request_reply(pub, msg, detections, _stamp_is(stamp), min(60.0, left()))
            if det is None:
                print(f'{name}: no detections within the timeout'
                      f'{"" if graph.alive() else " (a node exited; see logs)"}')
                return 1
            ds = conv.detection_set_from_msg(det)
            sd = descriptions.wait_for(_stamp_is(stamp), min(120.0, left()))
            # The picture numbers its boxes as the description cites them: the refined set
            # (the looker's names, rejected boxes gone), or the detector's when none came.
            drawn = ds if sd is None else conv.scene_description_from_msg(sd).detections
            write_rgb(out / f'{name}.jpg', draw_detections(rgb, drawn))
            found = ', '.join(f'obj{i} {d.class_name} {d.score:.2f}'
                              for i, d in enumerate(ds)) or 'nothing'
            print(f'\n{name} ({rgb.shape[1]}x{rgb.shape[0]}): {found}  '
                  f'[{ds.timings_ms.get("total", 0):.0f} ms, {ds.model_name}]')
            record = {'image': name, 'stamp_ns': stamp, 'detector': ds.model_name,
                      'detections': [{'index': i, 'class': d.class_name,
                                      'score': round(d.score, 4),
                                      'box_xyxy': [round(v, 1) for v in (
                                          d.box.x1, d.box.y1, d.box.x2, d.box.y2)]}
                                     for i, d in enumerate(ds)]}
            if sd is None:
                print('  description: none within the timeout')
            else:
                print(f'  description by {sd.mllm_model}:\n    {sd.text}'
                      + ('' if sd.grounded else '   (ungrounded)'))
                for line in describe_phrases(sd):
                    print(f'      {line}')
                record['description'] = {'text': sd.text, 'raw': sd.raw_text,
                                         'grounded': sd.grounded, 'model': sd.mllm_model,
                                         'phrases': describe_phrases(sd)}
            results.append(record)
        ask_name, question = QUESTION
        if ask_name in stamps:
            request = AskScene.Request(question=question, timeout_s=min(120.0, left()),
                                       stamp=conv.ns_to_stamp(stamps[ask_name]))
            print(f'\nask_scene about {ask_name}: "{question}"')
            try:
                # a question about a past frame is safe to repeat: resent if its
                # response to our brand-new client is lost (RosClient.call)
                reply = ros.call(AskScene, f'/{CAMERA_NS}/ask_scene', request,
                                 timeout=min(130.0, left() + 1), resend_s=30.0)
            except RosCallError as e:
                reply = None
                print(f'  {e}')
            if reply is None:
                pass
            elif not reply.success:
                print(f'  refused: {reply.error}')
            else:
                print(f'  {reply.answer}  [{reply.mllm_model}, {reply.latency_s:.1f} s]')
                for p in reply.grounding:
                    print(f'      "{p.text}" -> ' + ', '.join(
                        f'obj{i} {reply.detections[i].class_name}'
                        for i in p.detection_indices))
        time.sleep(0.5)  # alerts are published after each description
        raised = alerts.snapshot()
        print(f'\nalerts: {len(raised)}')
        for a in raised:
            print(f'  [{SEVERITY.get(a.severity, a.severity)}] {a.rule}: {a.message}')
    (out / 'results.json').write_text(json.dumps(results, indent=1))
    print(f'\nwrote {len(results)} annotated images and results.json to {out}/')
    return 0
