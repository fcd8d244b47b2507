"""`mr-mllm ask "question"`: ask a running scene_node through its `ask_scene` action.

On a terminal the answer is printed as the MLLM writes it (the stage before that on
stderr); `--no-stream`, or output to a pipe or file, prints only the final answer. Ctrl-C
cancels the goal (the node stops generating within a decoding step) and exits 130.
`--stamp-ns` asks about one past frame through the `ask_scene` service instead (no
streaming, no freshness wait).

Ends within --wait-service + --timeout + a few seconds whatever the graph does, and at
once on Ctrl-C / SIGTERM (the client's executor is stopped and joined first). Exit codes:
0 answered, 1 refused by the node (invalid question, timeout inside the node, ...),
3 action/service not found, 4 no response in time, 5 busy (the node's question queue is
full), 6 stale (no frame younger than --max-age came), 130 cancelled by Ctrl-C.
"""

from __future__ import annotations

import math
import os
import sys

from mr_mllm_interfaces.action import AskScene as AskAction
from mr_mllm_interfaces.srv import AskScene

from ..ros import conversions as conv
from ..ros.client import RosClient, ServiceNotFound, ServiceTimeout

#: Beyond the node's own timeout: the response's trip back, and our scheduling under load.
REPLY_SLACK_S = 5.0
#: How long a Ctrl-C waits for the node to take the cancel, and then for the goal's end
#: (a node stops within a decoding step; CI saw both take over 1.5 s on a loaded machine);
#: SIGTERM must still end us within seconds.
CANCEL_WAIT_S = 2.5
EXIT_REFUSED, EXIT_NOT_FOUND, EXIT_NO_RESPONSE, EXIT_BUSY, EXIT_STALE = 1, 3, 4, 5, 6
STAGE_NAMES = {AskAction.Feedback.STAGE_WAITING_FOR_FRAME: 'waiting for a fresh frame',
               AskAction.Feedback.STAGE_QUEUED: 'queued',
               AskAction.Feedback.STAGE_LOOKING: 'looking',
               AskAction.Feedback.STAGE_THINKING: 'thinking'}


def add_arguments(p) -> None:
    p.add_argument('question')
    p.add_argument('--namespace', default='', help='camera namespace of the scene_node')
    p.add_argument('--timeout', type=float, default=60.0,
                   help='seconds the node may take to answer (default 60)')
    p.add_argument('--max-age', type=float, default=0.0, metavar='S',
                   help='answer only about a frame at most S seconds old (default 0: the '
                        "node's scene.max_frame_age_s; -1: any age, e.g. after a one-shot "
                        'publish-images)')
    p.add_argument('--no-stream', action='store_true',
                   help='print only the final answer (the default when stdout is not a '
                        'terminal)')
    p.add_argument('--stamp-ns', type=int, default=0,
                   help='ask about the frame with this stamp, through the ask_scene service '
                        '(default 0: the latest frame, through the action)')
    p.add_argument('--wait-service', type=float, default=30.0, metavar='S',
                   help='seconds to wait for the node to be discovered (default 30: a '
                        'loaded machine or a just-started graph can take that long)')


def run(args) -> int:
    ns = f'/{args.namespace.strip("/")}' if args.namespace.strip('/') else ''
    if not math.isfinite(args.max_age):
        print(f'--max-age must be a number of seconds, got {args.max_age}', file=sys.stderr)
        return EXIT_REFUSED
    try:
        with RosClient(f'mr_mllm_ask_{os.getpid()}') as ros:
            if args.stamp_ns:
                return _ask_service(ros, f'{ns}/ask_scene', args)
            return _ask_action(ros, f'{ns}/ask_scene', args)
    except ServiceNotFound as e:
        print(f'not found: {e}', file=sys.stderr)
        return EXIT_NOT_FOUND
    except ServiceTimeout as e:
        print(f'no response: {e}', file=sys.stderr)
        return EXIT_NO_RESPONSE


# ------------------------------------------------------------------------ the action

class _Printer:
    """Prints the answer as it grows (on the client's executor thread)."""

    def __init__(self, live: bool):
        self.live = live
        self.text = ''
        self._stage_shown = False

    def feedback(self, fb) -> None:
        if not self.live:
            return
        if not fb.text and not self.text:
            sys.stderr.write(f'\r\033[K[{STAGE_NAMES.get(fb.stage, fb.stage)}]')
            sys.stderr.flush()
            self._stage_shown = True
            return
        if self._stage_shown:
            sys.stderr.write('\r\033[K')
            sys.stderr.flush()
            self._stage_shown = False
        if fb.text.startswith(self.text):
            sys.stdout.write(fb.text[len(self.text):])
        else:  # the writer took something back (rare): start the line again
            sys.stdout.write('\n' + fb.text)
        sys.stdout.flush()
        self.text = fb.text

    def end_line(self) -> None:
        if self._stage_shown:
            sys.stderr.write('\r\033[K')
            sys.stderr.flush()
        if self.live and self.text:
            sys.stdout.write('\n')
            sys.stdout.flush()


def _ask_action(ros, name: str, args) -> int:
    goal = AskAction.Goal(question=args.question, timeout_s=float(args.timeout),
                          max_age_s=float(args.max_age),
                          client_node=ros.node.get_fully_qualified_name())
    printer = _Printer(live=not args.no_stream and sys.stdout.isatty())
    call = ros.send_goal(AskAction, name, goal, printer.feedback,
                         wait_server_s=args.wait_service)
    limit = args.timeout + args.wait_service + REPLY_SLACK_S
    try:
        accepted = call.wait_accepted(limit)
        if accepted is None:
            raise ServiceTimeout(f'{name}: the goal was not acknowledged within {limit:.0f} s')
        if not accepted:  # the node rejects goals only while its question queue is full
            return _refused('busy')
        if not call.wait(args.timeout + REPLY_SLACK_S):
            raise ServiceTimeout(f'{name}: no result within {args.timeout + REPLY_SLACK_S:.0f} '
                                 's (the node is there but did not answer in time)')
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: cancel the goal, then exit as asked
        printer.end_line()
        cancelled = call.cancel(CANCEL_WAIT_S) and call.wait_ended(CANCEL_WAIT_S)
        print('cancelled' if cancelled else 'cancel sent; the node did not confirm it',
              file=sys.stderr)
        raise
    printer.end_line()
    return _print_result(call.result, printer)


def _print_result(r, printer: _Printer) -> int:
    if not r.success:
        return _refused(r.error)
    if not printer.text:
        print(r.answer)
    elif r.answer != printer.text:  # the finished answer (one grounded sentence) differs
        print(f'final: {r.answer}')
    _print_grounding(r)
    first = f', first words after {r.time_to_first_token_s:.2f} s' \
        if r.time_to_first_token_s >= 0 else ''
    print(f'[{r.mllm_model}; frame {conv.stamp_to_ns(r.image_stamp)} ns of {r.camera}, '
          f'{r.image_age_s:.1f} s old; {r.latency_s:.2f} s{first}]')
    return 0


def _refused(error: str) -> int:
    if error == 'busy':
        print("busy: the scene_node's question queue is full (scene.vqa_queue_size); ask "
              'again in a moment', file=sys.stderr)
        return EXIT_BUSY
    if error.startswith('stale'):
        print(f'{error}; ask again when the camera streams, or with --max-age -1 to accept '
              'any age', file=sys.stderr)
        return EXIT_STALE
    print(f'refused: {error}')
    return EXIT_REFUSED


def _print_grounding(r) -> None:
    for p in r.grounding:
        refs = ', '.join(f'obj{i} {r.detections[i].class_name}'
                         for i in p.detection_indices if 0 <= i < len(r.detections))
        print(f'  "{p.text}" -> {refs}')


# ----------------------------------------------------------------------- the service

def _ask_service(ros, name: str, args) -> int:
    request = AskScene.Request(question=args.question, timeout_s=args.timeout,
                               stamp=conv.ns_to_stamp(args.stamp_ns),
                               max_age_s=float(args.max_age))
    reply = ros.call(AskScene, name, request, timeout=args.timeout + REPLY_SLACK_S,
                     wait_service_s=args.wait_service)
    if not reply.success:
        return _refused(reply.error)
    print(reply.answer)
    _print_grounding(reply)
    print(f'[{reply.mllm_model}, frame {conv.stamp_to_ns(reply.image_stamp)} ns, '
          f'{reply.image_age_s:.1f} s old; {reply.latency_s:.2f} s]')
    return 0
