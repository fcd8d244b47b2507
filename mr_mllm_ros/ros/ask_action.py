"""scene_node's `ask_scene` action (mr_mllm_interfaces/action/AskScene), beside the
service of the same name: the same questions (ros/ask_flow.py: checks, fresh frame, queue,
MLLM thread), plus feedback as the answer is written, cancel, and freshness in the result.

- Feedback: the stage (waiting for a frame, queued, looking, thinking), the answer's text
  so far (markup removed) and the frame looked at; published on the executor when the
  question wakes, so a burst of tokens while the executor is busy becomes one message.
- Cancel: accepted at once (the goal is CANCELING); a queued question leaves the queue, an
  answer being written stops within one decoding step; then the goal is CANCELED.
- Results: success (answer, grounding, detections, frame stamp and age, models, latency,
  time to first text) or aborted with the reason ("stale: ...", "timeout ...", "busy"
  when the queue filled after acceptance). A goal that arrives while the question queue
  is full is rejected: that is "busy".
- A client that leaves: a goal naming its node (`client_node`) is cancelled ("client
  gone") once that node no longer subscribes to this action's feedback (DDS drops a
  process that exits at once, one that is killed after its lease, 20 s with Fast DDS);
  goals that name none are cancelled when no action client is left at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rclpy.action import ActionServer, CancelResponse, GoalResponse

from mr_mllm_interfaces.action import AskScene

from ..core.reasoning.vqa import LOOKING, QUEUED, THINKING, WAITING_FOR_FRAME
from . import conversions as conv
from .ask_flow import AskDesk, Cancel, Outcome, Question, fill_answer
from .qos import SERVICE_QOS

STAGES = {WAITING_FOR_FRAME: AskScene.Feedback.STAGE_WAITING_FOR_FRAME,
          QUEUED: AskScene.Feedback.STAGE_QUEUED,
          LOOKING: AskScene.Feedback.STAGE_LOOKING,
          THINKING: AskScene.Feedback.STAGE_THINKING}
#: Seconds a finished goal's result is kept for a client that asks for it late (a client
#: asks at once; ros/goal_call.py asks again within seconds when a response was lost). Every
#: goal kept is in every status message, so keep it short.
RESULT_KEEP_S = 15
#: How often the clients of running goals are looked for in the graph.
CLIENT_CHECK_S = 0.5
CLIENT_GONE = 'client gone'


@dataclass
class _Goal:
    cancel: Cancel
    client_node: str
    seen: bool = False           # its client was seen subscribed to the feedback
    started: float = field(default_factory=time.monotonic)


class AskActionServer:
    def __init__(self, node, desk: AskDesk, name: str = 'ask_scene', callback_group=None,
                 on_answer=None):
        """`on_answer(outcome)`: called for every answered goal (diagnostics)."""
        self._node, self._desk, self._on_answer = node, desk, on_answer
        self._goals: dict[bytes, _Goal] = {}
        self._any_client_seen = False
        self.rejected = 0  # goals rejected as busy
        self._feedback_topic = node.resolve_topic_name(name) + '/_action/feedback'
        # Deep request queues (SERVICE_QOS): with the default KEEP_LAST 10, goals (and
        # result requests) of more than ten clients asking at once push each other out
        # before the executor takes them, and those clients never hear back.
        self._server = ActionServer(node, AskScene, name, self._execute,
                                    goal_callback=self._on_goal,
                                    cancel_callback=self._on_cancel,
                                    callback_group=callback_group,
                                    goal_service_qos_profile=SERVICE_QOS,
                                    result_service_qos_profile=SERVICE_QOS,
                                    cancel_service_qos_profile=SERVICE_QOS,
                                    result_timeout=RESULT_KEEP_S)
        self._timer = node.create_timer(CLIENT_CHECK_S, self._check_clients,
                                        callback_group=callback_group)

    def destroy(self) -> None:
        self._node.destroy_timer(self._timer)
        self._server.destroy()

    def active_goals(self) -> int:
        return len(self._goals)

    # --------------------------------------------------------------- callbacks
    def _on_goal(self, goal) -> GoalResponse:
        """Rejected when the question queue is full: the cheapest "busy" (no goal handle,
        no status entry, no result to fetch), which keeps a flood of goals from loading
        the node and every client with status messages. Later "busy" (the queue filled up
        after acceptance) is an aborted goal with error "busy"."""
        if self._desk.full():
            self.rejected += 1
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_cancel(self, goal_handle) -> CancelResponse:
        goal = self._goals.get(bytes(goal_handle.goal_id.uuid))
        if goal is not None:
            goal.cancel.request()
        return CancelResponse.ACCEPT

    async def _execute(self, goal_handle) -> AskScene.Result:
        request = goal_handle.request
        key = bytes(goal_handle.goal_id.uuid)
        goal = self._goals[key] = _Goal(Cancel(), _fqn(request.client_node))
        if goal_handle.is_cancel_requested:  # cancelled before it started
            goal.cancel.request()

        def feedback(stage: str, text: str, stamp_ns: int, elapsed_s: float) -> None:
            goal_handle.publish_feedback(AskScene.Feedback(
                stage=STAGES[stage], text=text, image_stamp=conv.ns_to_stamp(stamp_ns),
                elapsed_s=elapsed_s))
        try:
            out = await self._desk.ask(Question(
                request.question, float(request.timeout_s) or None, 0,
                float(request.max_age_s), tuple(request.cameras)), feedback, goal.cancel)
        finally:
            del self._goals[key]
        result = self._result(out)
        if out.success:
            goal_handle.succeed()
            if self._on_answer is not None:
                self._on_answer(out)
        elif goal_handle.is_cancel_requested:
            goal_handle.canceled()
        else:
            goal_handle.abort()
        return result

    @staticmethod
    def _result(out: Outcome) -> AskScene.Result:
        result = fill_answer(AskScene.Result(), out)
        result.camera = out.camera
        result.time_to_first_token_s = out.first_text_s
        if out.success:
            result.detector_model = out.job.answer.detections.model_name
        return result

    # ------------------------------------------------------------- gone clients
    def _check_clients(self) -> None:
        if not self._goals:
            return
        try:
            infos = self._node.get_subscriptions_info_by_topic(self._feedback_topic)
        except Exception:  # noqa: BLE001 - a graph query must never end the node
            return
        clients = {_fqn(f'{i.node_namespace.rstrip("/")}/{i.node_name}') for i in infos}
        self._any_client_seen |= bool(clients)
        for goal in list(self._goals.values()):
            if goal.cancel.requested:
                continue
            if goal.client_node:
                if goal.client_node in clients:
                    goal.seen = True
                elif goal.seen:
                    goal.cancel.request(CLIENT_GONE)
            elif self._any_client_seen and not clients:
                goal.cancel.request(CLIENT_GONE)


def _fqn(name: str) -> str:
    """'/ns/node' for 'ns/node', '/node' or 'node'; '' stays ''."""
    name = name.strip()
    return '/' + name.strip('/') if name else ''
