"""GoalCall (ros/goal_call.py) recovers action responses the middleware dropped: a goal
the status topic lists although its goal response never came is taken as accepted and its
result asked for; a result that never came for a goal the status says ended is asked for
again. Driven with a stand-in action client (no middleware): the recovery is the client's
own logic. The same status topic confirms a cancel whose response never came."""

import threading
import time

from action_msgs.msg import GoalStatus
from rclpy.task import Future

from mr_mllm_interfaces.action import AskScene
from mr_mllm_ros.ros.goal_call import RECOVER_AFTER_S, GoalCall


class StandIn:
    """The part of rclpy's ActionClient that GoalCall and ClientGoalHandle use; responses
    are whatever the test decides (None: lost)."""

    def __init__(self):
        self.goal_future = Future()
        self.result_futures: list[Future] = []

    def send_goal_async(self, goal, feedback_callback=None, goal_uuid=None):
        return self.goal_future

    def _get_result_async(self, handle):
        future = Future()
        self.result_futures.append(future)
        return future


def result_response(status=GoalStatus.STATUS_SUCCEEDED, answer='a person'):
    response = AskScene.Impl.GetResultService.Response()
    response.status = status
    response.result = AskScene.Result(success=True, answer=answer)
    return response


def test_a_lost_goal_response_is_recovered_from_the_status():
    client = StandIn()
    call = GoalCall(client, AskScene, AskScene.Goal(question='x'), None, executor=None)
    call._send()
    now = call.sent_at
    call._check(now + 10)            # no status yet: nothing known, nothing done
    assert call.accepted is None and not client.result_futures
    call._on_status(GoalStatus.STATUS_EXECUTING)
    call._check(now + RECOVER_AFTER_S / 2)  # not overdue yet
    assert call.accepted is None
    call._check(now + RECOVER_AFTER_S + 0.1)
    assert call.accepted and call.recovered == 1 and call.handle.goal_id == call.goal_id
    assert len(client.result_futures) == 1
    client.result_futures[0].set_result(result_response())
    assert call.wait(1.0) and call.result.answer == 'a person'
    # the goal response arriving late changes nothing
    client.goal_future.set_result(None)
    assert call.status == GoalStatus.STATUS_SUCCEEDED


def test_a_lost_result_is_asked_for_again_once_the_status_says_the_goal_ended():
    client = StandIn()
    call = GoalCall(client, AskScene, AskScene.Goal(question='x'), None, executor=None)
    call._send()
    accepted = AskScene.Impl.SendGoalService.Response(accepted=True)
    from rclpy.action.client import ClientGoalHandle
    call._goal_answered(ClientGoalHandle(client, call.goal_id, accepted))
    assert len(client.result_futures) == 1   # asked once; that response will be lost
    call._on_status(GoalStatus.STATUS_EXECUTING)
    call._check(call._server_status_at + 60)  # running: nothing to recover
    assert len(client.result_futures) == 1
    call._on_status(GoalStatus.STATUS_CANCELED)
    call._check(call._server_status_at + RECOVER_AFTER_S + 0.1)
    assert len(client.result_futures) == 2 and call.recovered == 1
    client.result_futures[1].set_result(result_response(GoalStatus.STATUS_CANCELED))
    assert call.wait(1.0) and call.status == GoalStatus.STATUS_CANCELED


class NoExecutor:
    """Takes the cancel request and never runs it: its response is as good as lost."""

    def __init__(self):
        self.tasks = []

    def create_task(self, fn):
        self.tasks.append(fn)


def _running_call():
    from rclpy.action.client import ClientGoalHandle
    client = StandIn()
    call = GoalCall(client, AskScene, AskScene.Goal(question='x'), None, executor=NoExecutor())
    call._send()
    accepted = AskScene.Impl.SendGoalService.Response(accepted=True)
    call._goal_answered(ClientGoalHandle(client, call.goal_id, accepted))
    call._on_status(GoalStatus.STATUS_EXECUTING)
    return call


def test_a_lost_cancel_response_is_confirmed_by_the_status_topic():
    call = _running_call()
    timer = threading.Timer(0.2, call._on_status, (GoalStatus.STATUS_CANCELING,))
    timer.start()
    t0 = time.monotonic()
    assert call.cancel(timeout=10.0)                 # taken: the status shows CANCELING
    assert time.monotonic() - t0 < 5.0 and call.cancel_accepted_at is None
    assert not call.wait_ended(0.2)                   # not over yet
    threading.Timer(0.2, call._on_status, (GoalStatus.STATUS_CANCELED,)).start()
    assert call.wait_ended(10.0) and not call.done   # ended, its result still on the way
    timer.join()


def test_no_sign_of_the_cancel_is_false_at_the_limit():
    call = _running_call()
    t0 = time.monotonic()
    assert not call.cancel(timeout=0.5)
    assert not call.wait_ended(0.3)
    assert time.monotonic() - t0 >= 0.8
