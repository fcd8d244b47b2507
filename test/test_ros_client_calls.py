"""RosClient.call: a request safe to repeat is sent again while no response comes
(`resend_s`), because a server may drop the response to a client it has not matched yet
(wait_for_service proves only the way to it); without `resend_s` the call ends with
ServiceTimeout at its limit. The server here never answers the first request it gets, as
if its response had been lost."""

import os
import time

import pytest
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.task import Future

from mr_mllm_interfaces.srv import QueryMemory
from mr_mllm_ros.ros.client import RosClient, ServiceTimeout

pytestmark = pytest.mark.graph


class FirstRequestLost:
    """A query_memory server that leaves its first request unanswered for good."""

    def __init__(self, node):
        self.requests = 0
        # Reentrant: the unanswered first request must not hold the group's only turn.
        node.create_service(QueryMemory, 'query_memory', self._answer,
                            callback_group=ReentrantCallbackGroup())

    async def _answer(self, request, response):
        self.requests += 1
        if self.requests == 1:
            await Future()  # never completes: this response never leaves
        response.success, response.answer = True, f'answer {self.requests}'
        return response


@pytest.fixture
def server_and_client():
    ns = f'calls_{os.getpid()}_{time.monotonic_ns() % 100000}'
    with RosClient('lossy_server', namespace=ns) as server, \
            RosClient('caller', namespace=ns) as client:
        yield FirstRequestLost(server.node), client


def test_a_repeatable_request_is_sent_again_until_a_response_comes(server_and_client):
    server, client = server_and_client
    t0 = time.monotonic()
    reply = client.call(QueryMemory, 'query_memory', QueryMemory.Request(question='x'),
                        timeout=30.0, resend_s=1.0)
    assert reply.success and reply.answer == 'answer 2'
    assert server.requests == 2 and time.monotonic() - t0 < 30.0
    # the client's one rclpy client is left with no pending request
    assert not client.service_client(QueryMemory, 'query_memory')._pending_requests


def test_without_resend_a_lost_response_is_a_timeout_at_the_limit(server_and_client):
    server, client = server_and_client
    t0 = time.monotonic()
    with pytest.raises(ServiceTimeout, match='no response within 2 s'):
        client.call(QueryMemory, 'query_memory', QueryMemory.Request(question='x'),
                    timeout=2.0)
    assert server.requests == 1 and time.monotonic() - t0 >= 2.0
