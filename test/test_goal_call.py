"""GoalCall (ros/goal_call.py) recovers action responses the middleware dropped: a goal
the status topic lists although its goal response never came is taken as accepted and its
result asked for; a result that never came for a goal the status says ended is asked for
again. Driven with a stand-in action client (no middleware): the recovery is the client's
own logic."""

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
