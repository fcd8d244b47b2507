"""One action goal as RosClient.send_goal sends it (GoalCall), and the tracker that keeps
its answers from getting lost (GoalTracker).

Why the tracker: a service response - an action's goal response or result response - is
dropped by rmw_fastrtps when the server has not yet discovered the client's response
reader within 100 ms of sending ("failed to send response (timeout): client will not
receive response"). On a loaded machine a client that sends right after it discovered the
server hits this: 2 of 30 goals in one run of benchmarks/bench_ask_action.py waited for
good. The action's status topic (transient local, one message lists every goal) still
tells the client that its goal was accepted, and when it ended; so the tracker watches it
and, when a response is overdue, makes the goal handle from the status (the goal id is
ours) and asks for the result again (the server keeps results for a while).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from action_msgs.msg import GoalStatus, GoalStatusArray
from rclpy.action.client import ClientGoalHandle
from rclpy.qos import qos_profile_action_status_default
from unique_identifier_msgs.msg import UUID

#: How long a response may be overdue (the status already says what it would) before the
#: tracker recovers it, and how often it looks.
RECOVER_AFTER_S = 2.0
CHECK_PERIOD_S = 1.0
TERMINAL = (GoalStatus.STATUS_SUCCEEDED, GoalStatus.STATUS_CANCELED, GoalStatus.STATUS_ABORTED)
#: What the status topic shows once the server took a cancel request.
CANCEL_TAKEN = (GoalStatus.STATUS_CANCELING, GoalStatus.STATUS_CANCELED)


class GoalCall:
    """Acceptance, feedback as it arrives, cancel, the result - every wait bounded. Times
    are time.monotonic() seconds, for the benchmarks: `sent_at`, `first_feedback_at`,
    `cancel_sent_at`, `cancel_accepted_at`, `done_at` (the result, with its terminal
    `status`); `recovered` counts responses recovered from the status topic."""

    def __init__(self, client, action_type: type, goal,
                 on_feedback: Callable[[Any], None] | None, executor):
        self._client, self._goal, self._executor = client, goal, executor
        self._action_type = action_type
        self._on_feedback = on_feedback
        self.goal_id = UUID(uuid=list(os.urandom(16)))
        self._accepted = threading.Event()
        self._done = threading.Event()
        self._cancel_answered = threading.Event()
        self.handle = None
        self.accepted: bool | None = None
        self.status: int | None = None      # action_msgs/GoalStatus.STATUS_*
        self.result = None
        self.feedback_count = 0
        self.recovered = 0
        self.sent_at = time.monotonic()
        self.first_feedback_at = self.cancel_sent_at = self.cancel_accepted_at = None
        self.done_at: float | None = None
        self._server_status: int | None = None   # from the status topic
        self._server_status_at = 0.0
        self._status_seen = threading.Condition()  # notified on each new server status
        self._result_asked_at = 0.0

    # ------------------------------------------------------ on the client's executor
    def _send(self) -> None:
        future = self._client.send_goal_async(self._goal, feedback_callback=self._feedback,
                                              goal_uuid=self.goal_id)
        future.add_done_callback(lambda f: self._goal_answered(f.result()))

    def _feedback(self, msg) -> None:
        self.feedback_count += 1
        if self.first_feedback_at is None:
            self.first_feedback_at = time.monotonic()
        if self._on_feedback is not None:
            self._on_feedback(msg.feedback)

    def _goal_answered(self, handle) -> None:
        if self._accepted.is_set():
            return  # recovered from the status, then the response came after all
        self.handle, self.accepted = handle, bool(handle.accepted)
        if handle.accepted:
            self._ask_result()
        else:
            self.done_at = time.monotonic()
            self._done.set()
        self._accepted.set()

    def _ask_result(self) -> None:
        self._result_asked_at = time.monotonic()
        self.handle.get_result_async().add_done_callback(self._result)

    def _result(self, future) -> None:
        if self._done.is_set():
            return
        response = future.result()
        self.status, self.result = response.status, response.result
        self.done_at = time.monotonic()
        self._done.set()

    def _on_status(self, status: int) -> None:
        if status != self._server_status:
            with self._status_seen:
                self._server_status, self._server_status_at = status, time.monotonic()
                self._status_seen.notify_all()

    def _check(self, now: float) -> None:
        """Recover a response the status shows is overdue (on the executor, periodic)."""
        if self._done.is_set() or self._server_status is None:
            return
        if self.accepted is None and now - self.sent_at > RECOVER_AFTER_S:
            response = self._action_type.Impl.SendGoalService.Response(accepted=True)
            self.recovered += 1
            self._goal_answered(ClientGoalHandle(self._client, self.goal_id, response))
        elif self.accepted and self._server_status in TERMINAL and \
                now - max(self._server_status_at, self._result_asked_at) > RECOVER_AFTER_S:
            self.recovered += 1
            self._ask_result()

    def _send_cancel(self) -> None:
        def answered(future):
            if future.result().goals_canceling:
                self.cancel_accepted_at = time.monotonic()
            self._cancel_answered.set()
            with self._status_seen:
                self._status_seen.notify_all()
        self.handle.cancel_goal_async().add_done_callback(answered)

    def _server_shows(self, statuses: tuple[int, ...], timeout: float,
                      also: Callable[[], bool]) -> bool:
        """Bounded wait until the status topic shows one of `statuses` or `also()` holds.
        The status topic is the witness that cannot be lost: a cancel or result response
        can be (see the module docstring), and on a loaded machine either may come late."""
        with self._status_seen:
            return self._status_seen.wait_for(
                lambda: self._server_status in statuses or also(), timeout)

    # ------------------------------------------------------------ the caller's side
    def wait_accepted(self, timeout: float) -> bool | None:
        """True accepted, False rejected, None: no answer within `timeout` s."""
        return self.accepted if self._accepted.wait(timeout) else None

    def cancel(self, timeout: float = 5.0) -> bool:
        """Ask the server to cancel the goal; True when it took the request: its cancel
        response accepted it, or the status topic shows the goal CANCELING or CANCELED
        (`wait_ended` gives its end). False: not accepted yet, refused, or no sign of it
        within `timeout` s."""
        if not self._accepted.is_set() or not self.accepted or self._done.is_set():
            return False
        self.cancel_sent_at = time.monotonic()
        self._executor.create_task(self._send_cancel)
        self._server_shows(CANCEL_TAKEN, timeout, self._cancel_answered.is_set)
        return self.cancel_accepted_at is not None or self._server_status in CANCEL_TAKEN

    def wait(self, timeout: float) -> bool:
        """True once the result (or a rejection) is in."""
        return self._done.wait(timeout)

    def wait_ended(self, timeout: float) -> bool:
        """True once the goal has ended: its result is in, or the status topic shows it
        ended (its result response may still be on the way, or lost)."""
        return self._server_shows(TERMINAL, timeout, self._done.is_set)

    @property
    def done(self) -> bool:
        return self._done.is_set()


class GoalTracker:
    """The goals one RosClient sent, per action: their status from the status topic, and
    a periodic check that recovers overdue responses (all on the client's executor)."""

    def __init__(self, node):
        self._node = node
        self._calls: dict[bytes, GoalCall] = {}
        self._subscribed: set[str] = set()
        self._timer = node.create_timer(CHECK_PERIOD_S, self._check)

    def track(self, action_name: str, call: GoalCall) -> None:
        topic = self._node.resolve_topic_name(action_name) + '/_action/status'
        if topic not in self._subscribed:
            self._subscribed.add(topic)
            self._node.create_subscription(GoalStatusArray, topic, self._on_status,
                                           qos_profile_action_status_default)
        self._calls[bytes(call.goal_id.uuid)] = call

    def _on_status(self, msg: GoalStatusArray) -> None:
        for s in msg.status_list:
            call = self._calls.get(bytes(s.goal_info.goal_id.uuid))
            if call is not None:
                call._on_status(s.status)

    def _check(self) -> None:
        now = time.monotonic()
        for key, call in list(self._calls.items()):
            if call.done:
                del self._calls[key]
            else:
                call._check(now)
