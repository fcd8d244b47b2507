"""One client process for the ask_scene action's graph test and load benchmark
(test/test_graph_ask_action.py, benchmarks/bench_ask_action.py; not a test file).

    python ask_action_client.py ACTION CLIENTS GOALS TIMEOUT_S CANCEL GO_FILE OUT_DIR [leave]

Opens CLIENTS RosClients (each its own node and action client), writes OUT_DIR/ready_<pid>,
waits for GO_FILE, then every client sends GOALS goals at once. CANCEL: every other goal
(the 1st, 3rd, ...) is cancelled this many seconds after it was accepted, whatever it is doing
then (queued or writing), or -1 for none. Prints one JSON line per goal: status
(action_msgs/GoalStatus), error, wall_s
(send -> result), first_text_s, feedbacks, growing (each feedback text extends the one
before), cancel_s (cancel sent -> result), cancel_ack_s (-> cancel accepted). Writes
OUT_DIR/done_<pid> once every goal ended or its time ran out.

`leave`: one goal; once its first text arrives, print its goal id and exit without
cancelling (the node must notice that the client is gone).
"""

import json
import os
import sys
import threading
import time

from mr_mllm_interfaces.action import AskScene
from mr_mllm_ros.core.runtime.leftover_threads import exit_process
from mr_mllm_ros.ros.client import RosClient

QUESTION = 'What is the person doing?'  # the MLLM's own words (no looker or count answer)


class Goal:
    def __init__(self, ros: RosClient, action: str, timeout: float, cancel_after: float):
        self.texts: list[str] = []
        self.first_text_at: float | None = None
        self.cancel_after = cancel_after
        self.text_seen = threading.Event()
        goal = AskScene.Goal(question=QUESTION, timeout_s=timeout,
                             client_node=ros.node.get_fully_qualified_name())
        self.call = ros.send_goal(AskScene, action, goal, self.feedback, wait_server_s=60.0)

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
                'error': c.result.error if c.result is not None else 'no result',
                'wall_s': (c.done_at - c.sent_at) if c.done_at else None,
                'first_text_s': (self.first_text_at - c.sent_at) if self.first_text_at else None,
                'feedbacks': c.feedback_count, 'texts': len(self.texts), 'growing': growing,
                'cancel_s': (c.done_at - c.cancel_sent_at) if c.cancel_sent_at and c.done_at
                else None,
                'cancel_ack_s': (c.cancel_accepted_at - c.cancel_sent_at)
                if c.cancel_accepted_at else None,
                'ttft_node_s': c.result.time_to_first_token_s if c.result else None,
                'image_age_s': c.result.image_age_s if c.result else None}


def canceller(goal: Goal, deadline: float) -> None:
    """Cancel `cancel_after` s after the goal was accepted, whatever it is doing then
    (waiting in the queue or writing)."""
    if goal.call.wait_accepted(max(0.0, deadline - time.monotonic())):
        time.sleep(goal.cancel_after)
        goal.call.cancel(timeout=10.0)


def main() -> int:
    action, clients, goals, timeout, cancel_after, go_file, out_dir = \
        sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), \
        float(sys.argv[5]), sys.argv[6], sys.argv[7]
    leave = len(sys.argv) > 8 and sys.argv[8] == 'leave'
    pid = os.getpid()
    rosses = [RosClient(f'ask_client_{pid}_{i}') for i in range(clients)]
    try:
        for ros in rosses:  # discovered before the go: the load is the goals, not start-up
            if not ros.action_client(AskScene, action).wait_for_server(timeout_sec=60.0):
                print(json.dumps({'status': None, 'error': 'action not found'}))
                return 3
        open(os.path.join(out_dir, f'ready_{pid}'), 'w').close()
        deadline = time.monotonic() + 180.0
        while not os.path.exists(go_file) and time.monotonic() < deadline:
            time.sleep(0.02)
        if leave:
            goal = Goal(rosses[0], action, timeout, -1)
            goal.text_seen.wait(timeout)
            print(json.dumps({'goal_id': bytes(goal.call.handle.goal_id.uuid).hex(),
                              'text': goal.texts[-1] if goal.texts else ''}), flush=True)
            return 0  # closing the client below, without a cancel: it is gone
        every = [ros for _ in range(goals) for ros in rosses]
        sent = [Goal(ros, action, timeout,
                     cancel_after if cancel_after >= 0 and i % 2 == 0 else -1)
                for i, ros in enumerate(every)]
        end = time.monotonic() + timeout + 20.0
        cancels = [threading.Thread(target=canceller, args=(g, end), daemon=True)
                   for g in sent if g.cancel_after >= 0]
        for t in cancels:
            t.start()
        for g in sent:
            g.call.wait(max(0.0, end - time.monotonic()))
        open(os.path.join(out_dir, f'done_{pid}'), 'w').close()
        for g in sent:
            print(json.dumps(g.report()))
    finally:
        for ros in rosses:
            ros.close()
    return 0


if __name__ == '__main__':
    exit_process(main())
