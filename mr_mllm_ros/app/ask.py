"""`mr-mllm ask "question"`: call a running scene_node's ask_scene service.

Ends within --wait-service + --timeout + a few seconds whatever the graph does, and at
once on Ctrl-C / SIGTERM (the client's executor is stopped and joined first). Exit codes:
0 answered, 1 refused by the node (invalid question, timeout inside the node, ...),
3 service not found, 4 no response in time, 5 busy (the node's question queue is full).
"""

from __future__ import annotations

import sys

from mr_mllm_interfaces.srv import AskScene

from ..ros import conversions as conv
from ..ros.client import RosClient, ServiceNotFound, ServiceTimeout

#: Beyond the node's own timeout: the response's trip back, and our scheduling under load.
REPLY_SLACK_S = 5.0


def add_arguments(p) -> None:
    p.add_argument('question')
    p.add_argument('--namespace', default='', help='camera namespace of the scene_node')
    p.add_argument('--stamp-ns', type=int, default=0,
                   help='stamp of the frame to ask about (default 0: the latest)')
    p.add_argument('--timeout', type=float, default=60.0,
                   help='seconds the node may take to answer (default 60)')
    p.add_argument('--wait-service', type=float, default=30.0, metavar='S',
                   help='seconds to wait for the service to be discovered (default 30: a '
                        'loaded machine or a just-started graph can take that long)')


def run(args) -> int:
    ns = f'/{args.namespace.strip("/")}' if args.namespace.strip('/') else ''
    service = f'{ns}/ask_scene'
    request = AskScene.Request(question=args.question, timeout_s=args.timeout,
                               stamp=conv.ns_to_stamp(args.stamp_ns))
    try:
        with RosClient('mr_mllm_ask') as ros:
            reply = ros.call(AskScene, service, request, timeout=args.timeout + REPLY_SLACK_S,
                             wait_service_s=args.wait_service)
    except ServiceNotFound as e:
        print(f'service not found: {e}', file=sys.stderr)
        return 3
    except ServiceTimeout as e:
        print(f'no response: {e}', file=sys.stderr)
        return 4
    if not reply.success and reply.error == 'busy':
        print('busy: the scene_node\'s question queue is full (scene.vqa_queue_size); '
              'ask again in a moment', file=sys.stderr)
        return 5
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
