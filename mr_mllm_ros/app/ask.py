"""`mr-mllm ask "question"`: call a running scene_node's ask_scene service."""

from __future__ import annotations

from mr_mllm_interfaces.srv import AskScene

from ..ros import conversions as conv
from ..ros.client import RosClient


def add_arguments(p) -> None:
    p.add_argument('question')
    p.add_argument('--namespace', default='', help='camera namespace of the scene_node')
    p.add_argument('--stamp-ns', type=int, default=0,
                   help='stamp of the frame to ask about (default 0: the latest)')
    p.add_argument('--timeout', type=float, default=60.0, help='seconds (default 60)')


def run(args) -> int:
    ns = f'/{args.namespace.strip("/")}' if args.namespace.strip('/') else ''
    service = f'{ns}/ask_scene'
    request = AskScene.Request(question=args.question, timeout_s=args.timeout,
                               stamp=conv.ns_to_stamp(args.stamp_ns))
    with RosClient('mr_mllm_ask') as ros:
        reply = ros.call(AskScene, service, request, timeout=args.timeout + 5,
                         wait_service_s=10.0)
    if reply is None:
        print(f'no reply from {service} (is a scene_node running in this ROS_DOMAIN_ID?)')
        return 1
    if not reply.success:
        print(f'refused: {reply.error}')
        return 1
    print(reply.answer)
    for p in reply.grounding:
        refs = ', '.join(f'obj{i} {reply.detections[i].class_name}'
                         for i in p.detection_indices if 0 <= i < len(reply.detections))
        print(f'  "{p.text}" -> {refs}')
    print(f'[{reply.mllm_model}, frame {conv.stamp_to_ns(reply.image_stamp)} ns, '
          f'{reply.latency_s:.2f} s]')
    return 0
