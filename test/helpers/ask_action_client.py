"""One client process for the ask_scene action's graph test and load benchmark
(test/test_graph_ask_action.py, benchmarks/bench_ask_action.py; not a test file).

    python ask_action_client.py ACTION GO_FILE OUT_DIR [--clients N] [--goals N]
        [--timeout S] [--cancel S] [--rounds N] [--leave]

Opens --clients action clients on one node (one DDS participant per process, as a
robot's process would have), writes OUT_DIR/ready_<pid>, waits for GO_FILE, then every
client sends --goals goals at once and waits for their ends (OUT_DIR/done_<pid>); with
--rounds N, round r > 0 starts at GO_FILE.r and ends with OUT_DIR/done.r_<pid>.
--cancel S: every other goal (the 1st, 3rd, ...) is cancelled S seconds after it was
accepted, whatever it is doing then (queued or writing). Prints one JSON line per goal: status
(action_msgs/GoalStatus), error, wall_s (send -> result), first_text_s, feedbacks,
growing (each feedback text extends the one before), cancel_s (cancel sent -> result),
cancel_ack_s (-> cancel accepted), recovered (responses recovered from the status),
round.

--leave: one goal; once its first text arrives, print its goal id and exit without
cancelling (the node must notice that the client is gone).
"""

import argparse
import json
import os
import threading
import time

from mr_mllm_interfaces.action import AskScene
from mr_mllm_ros.core.runtime.leftover_threads import exit_process
from mr_mllm_ros.ros.client import RosClient
from waiting import wait_until  # this script's folder (test/helpers) is on sys.path

QUESTION = 'What is the person doing?'  # the MLLM's own words (no looker or count answer)


class Goal:
    def __init__(self, ros: RosClient, action: str, timeout: float, cancel_after: float,
                 client_index: int = 0):
        self.texts: list[str] = []
        self.first_text_at: float | None = None
        self.cancel_after = cancel_after
        self.text_seen = threading.Event()
        goal = AskScene.Goal(question=QUESTION, timeout_s=timeout,
                             client_node=ros.node.get_fully_qualified_name())
        self.call = ros.send_goal(AskScene, action, goal, self.feedback, wait_server_s=60.0,
                                  client_index=client_index)

    def feedback(self, fb) -> None:
        if fb.text:
            self.texts.append(fb.text)
            if self.first_text_at is None:
                self.first_text_at = time.monotonic()
                self.text_seen.set()

    def report(self) -> dict:
        c = self.call
        growing = all(b.startswith(a) for a, b in zip(self.texts, self.texts[1:]))
        return {'status': c.status, 'accepted': c.accepted, 'cancels': self.cancel_after >= 0,
                'error': c.result.error if c.result is not None else
                'busy' if c.accepted is False else 'no result',  # rejected: queue full
                'wall_s': (c.done_at - c.sent_at) if c.done_at else None,
                'first_text_s': (self.first_text_at - c.sent_at) if self.first_text_at else None,
                'feedbacks': c.feedback_count, 'texts': len(self.texts), 'growing': growing,
                'cancel_s': (c.done_at - c.cancel_sent_at) if c.cancel_sent_at and c.done_at
                else None,
                'cancel_ack_s': (c.cancel_accepted_at - c.cancel_sent_at)
                if c.cancel_accepted_at else None,
                'ttft_node_s': c.result.time_to_first_token_s if c.result else None,
                'recovered': c.recovered,
                'image_age_s': c.result.image_age_s if c.result else None}


def canceller(goal: Goal, deadline: float) -> None:
    """Cancel `cancel_after` s after the goal was accepted, whatever it is doing then
    (waiting in the queue or writing)."""
    if goal.call.wait_accepted(max(0.0, deadline - time.monotonic())):
        time.sleep(goal.cancel_after)
        goal.call.cancel(timeout=10.0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument('action')
    ap.add_argument('go_file')
    ap.add_argument('out_dir')
    ap.add_argument('--clients', type=int, default=1)
    ap.add_argument('--goals', type=int, default=1)
    ap.add_argument('--timeout', type=float, default=60.0)
    ap.add_argument('--cancel', type=float, default=-1.0)
    ap.add_argument('--rounds', type=int, default=1)
    ap.add_argument('--leave', action='store_true')
    args = ap.parse_args()
    action, pid = args.action, os.getpid()
    ros = RosClient(f'ask_client_{pid}')
    try:
        for i in range(args.clients):  # discovered before the go: the load is the goals
            if not ros.action_client(AskScene, action, i).wait_for_server(timeout_sec=60.0):
                print(json.dumps({'status': None, 'error': 'action not found'}))
                return 3
        open(os.path.join(args.out_dir, f'ready_{pid}'), 'w').close()
        if args.leave:
            wait_until(lambda: os.path.exists(args.go_file), 300.0, 0.02)
            goal = Goal(ros, action, args.timeout, -1)
            goal.text_seen.wait(args.timeout)
            print(json.dumps({'goal_id': bytes(goal.call.handle.goal_id.uuid).hex(),
                              'text': goal.texts[-1] if goal.texts else ''}), flush=True)
            return 0  # closing the client below, without a cancel: it is gone
        reports = []
        for r in range(args.rounds):
            # round 0 starts at GO_FILE, round r at GO_FILE.r; each ends with done[.r]_<pid>
            suffix = f'.{r}' if r else ''
            wait_until(lambda p=args.go_file + suffix: os.path.exists(p), 300.0, 0.02)
            every = [c for _ in range(args.goals) for c in range(args.clients)]
            sent = [Goal(ros, action, args.timeout,
                         args.cancel if args.cancel >= 0 and i % 2 == 0 else -1, c)
                    for i, c in enumerate(every)]
            end = time.monotonic() + args.timeout + 20.0
            for g in sent:
                if g.cancel_after >= 0:
                    threading.Thread(target=canceller, args=(g, end), daemon=True).start()
            for g in sent:
                g.call.wait(max(0.0, end - time.monotonic()))
            open(os.path.join(args.out_dir, f'done{suffix}_{pid}'), 'w').close()
            reports += [dict(g.report(), round=r) for g in sent]
        for report in reports:
            print(json.dumps(report))
    finally:
        ros.close()
    return 0


if __name__ == '__main__':
    exit_process(main())
