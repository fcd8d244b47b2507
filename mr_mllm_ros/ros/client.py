"""A small in-process ROS client for the demo, `mr-mllm ask`, graph tests and benchmarks:
publish, collect what topics carry, call services, send action goals (feedback, cancel,
result) - every wait bounded by a timeout.

One SingleThreadedExecutor spins the client's node in a background thread (a
MultiThreadedExecutor here added waits of up to 316 ms to a closed loop:
docs/BENCHMARKS.md#executor); the caller's thread publishes and waits on Events. The
client owns its rclpy Context, so closing it never tears down someone else's, and close()
stops the executor and joins its thread *before* the node and the context go: shutting
the context down under a thread still waiting in the executor hung `mr-mllm ask` for good
(rclpy's logging teardown waits on it).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Generic, TypeVar

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.signals import SignalHandlerOptions

from ..core.runtime import leftover_threads
from .goal_call import GoalCall, GoalTracker
from .qos import SERVICE_QOS

M = TypeVar('M')
log = logging.getLogger(__name__)


class Collector(Generic[M]):
    """Messages received on one topic, with `wait_for(predicate, timeout)`."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.messages: list[M] = []

    def add(self, msg: M) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[M], bool], timeout: float,
                 start: int = 0) -> M | None:
        """First message satisfying `predicate` among those received from index `start`
        on (0: including messages received before the call; len(self) for only new ones)."""
        deadline = time.monotonic() + timeout
        seen = start
        with self._cond:
            while True:
                for msg in self.messages[seen:]:
                    if predicate(msg):
                        return msg
                seen = len(self.messages)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def __len__(self) -> int:
        with self._cond:
            return len(self.messages)

    def clear(self) -> None:
        with self._cond:
            self.messages.clear()

    def snapshot(self) -> list[M]:
        with self._cond:
            return list(self.messages)


class RosCallError(Exception):
    """A service call that brought no response; the message says which way it failed."""


class ServiceNotFound(RosCallError):
    """The service was not discovered in time."""


class ServiceTimeout(RosCallError):
    """The service was there, the request went out, no response came in time."""


#: Longest close() waits for the executor thread (a callback in flight finishes first).
_JOIN_S = 3.0


class RosClient:
    """Owns a node spinning in a background thread. Use as a context manager.

    Signals: the client installs none (rclpy's handlers are off for its context), so
    SIGINT stays Python's KeyboardInterrupt in the caller's thread and a CLI command
    decides what SIGTERM means (app/signals.py turns it into the same clean exit)."""

    def __init__(self, name: str = 'mr_mllm_client', namespace: str = ''):
        self._context = Context()
        rclpy.init(args=[], context=self._context,
                   signal_handler_options=SignalHandlerOptions.NO)
        self.node: Node = rclpy.create_node(name, namespace=namespace, context=self._context)
        self._closed = False
        self._service_clients: dict[tuple[type, str], Any] = {}
        self._action_clients: dict[tuple[type, str, int], Any] = {}
        self._goals: GoalTracker | None = None
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f'{name}_spin', daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        # A callback that raises would end spin(): log it and keep serving the others.
        while self._context.ok() and not self._closed:
            try:
                self._executor.spin()
                return  # executor shut down
            except ExternalShutdownException:
                return
            except Exception:
                if self._closed:
                    return  # shutdown races while closing are not errors
                log.exception('a callback of %s failed', self.node.get_name())

    def __enter__(self) -> 'RosClient':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the executor, join its thread, then destroy the node and the context (in
        that order; bounded). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(timeout_sec=_JOIN_S)
        self._thread.join(timeout=_JOIN_S)
        if self._thread.is_alive():
            log.warning('%s: executor thread still running after %.0f s; leaving it',
                        self.node.get_name(), _JOIN_S)
            leftover_threads.note(self._thread.name)
        self.node.destroy_node()
        if self._context.ok():
            rclpy.shutdown(context=self._context)

    def collect(self, msg_type: type[M], topic: str, qos: QoSProfile | int = 10) -> Collector[M]:
        collector: Collector[M] = Collector()
        self.node.create_subscription(msg_type, topic, collector.add, qos)
        return collector

    def publisher(self, msg_type: type, topic: str, qos: QoSProfile | int = 10):
        return self.node.create_publisher(msg_type, topic, qos)

    def wait_for_subscribers(self, publisher, count: int = 1, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if publisher.get_subscription_count() >= count:
                return True
            time.sleep(0.05)
        return False

    def wait_for_publishers(self, topic: str, count: int = 1, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.node.count_publishers(topic) >= count:
                return True
            time.sleep(0.05)
        return False

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 30.0,
             wait_service_s: float = 10.0, resend_s: float | None = None):
        """Call a service and return its response. Raises ServiceNotFound when the
        service is not discovered within `wait_service_s` (naming what the graph does
        offer) and ServiceTimeout when no response comes within `timeout` s.

        `resend_s`, for requests that are safe to repeat (a read-only query): send the
        request again each `resend_s` s without a response; the first response wins.
        The server may drop a response to a client whose reader it has not matched yet
        (rmw_fastrtps: "failed to send response (timeout)", see ros/goal_call.py), and
        wait_for_service only proves the way to the server, not the way back."""
        client = self.service_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=wait_service_s):
            raise ServiceNotFound(self._not_found(name, wait_service_s))
        done = threading.Event()
        futures = []
        deadline = time.monotonic() + timeout
        while not done.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                for future in futures:
                    client.remove_pending_request(future)
                raise ServiceTimeout(f'{client.srv_name}: no response within {timeout:.0f} s '
                                     f'(the server is there but did not answer in time)')
            future = client.call_async(request)
            future.add_done_callback(lambda _: done.set())
            futures.append(future)
            done.wait(min(left, resend_s) if resend_s else left)
        answered = next(f for f in futures if f.done())
        for future in futures:
            if future is not answered:
                client.remove_pending_request(future)
        return answered.result()

    def service_client(self, srv_type: type, name: str):
        """This client's one rclpy client for (type, name), made on first use and kept
        (no discovery round per call). Deep history (SERVICE_QOS): with the default
        KEEP_LAST 10, responses to more than ten calls in flight that arrive before the
        executor takes them would push each other out."""
        key = (srv_type, name)
        if key not in self._service_clients:
            self._service_clients[key] = self.node.create_client(
                srv_type, name, qos_profile=SERVICE_QOS)
        return self._service_clients[key]

    def action_client(self, action_type: type, name: str, index: int = 0):
        """This client's rclpy ActionClient for (type, name), made on first use (deep
        response queues, as for services); `index` > 0: further clients of the same action
        on the same node (load tests)."""
        key = (action_type, name, index)
        if key not in self._action_clients:
            from rclpy.action import ActionClient
            self._action_clients[key] = ActionClient(
                self.node, action_type, name, goal_service_qos_profile=SERVICE_QOS,
                result_service_qos_profile=SERVICE_QOS, cancel_service_qos_profile=SERVICE_QOS)
        return self._action_clients[key]

    def send_goal(self, action_type: type, name: str, goal: Any,
                  on_feedback: Callable[[Any], None] | None = None,
                  wait_server_s: float = 10.0, client_index: int = 0) -> GoalCall:
        """Send an action goal; returns its GoalCall at once (wait_accepted / wait /
        cancel). `on_feedback(feedback)` runs on the client's executor thread. Raises
        ServiceNotFound when the action server is not discovered within `wait_server_s`.
        A goal or result response the server could not deliver is recovered from the
        action's status topic (ros/goal_call.py)."""
        client = self.action_client(action_type, name, client_index)
        if not client.wait_for_server(timeout_sec=wait_server_s):
            raise ServiceNotFound(self._not_found(name, wait_server_s, action=True))
        if self._goals is None:
            self._goals = GoalTracker(self.node)
        call = GoalCall(client, action_type, goal, on_feedback, self._executor)
        self._goals.track(name, call)
        # On the executor thread: rclpy 9.1.2's send_goal_async registers the response's
        # future a second time after releasing its lock, so from another thread a reply
        # that arrives in between is lost (the caller would wait for it for good).
        self._executor.create_task(call._send)
        return call

    def _not_found(self, name: str, waited_s: float, action: bool = False) -> str:
        full = self.node.resolve_service_name(name)
        leaf = full.rsplit('/', 1)[-1]
        if action:  # action servers only (our own client would be listed too)
            from rclpy.action import get_action_server_names_and_types_by_node
            names = [n for node, ns in self.node.get_node_names_and_namespaces()
                     if node != self.node.get_name()
                     for n, _ in get_action_server_names_and_types_by_node(self.node, node, ns)]
        else:
            names = [n for n, _ in self.node.get_service_names_and_types()]
        similar = sorted(n for n in names if n.rsplit('/', 1)[-1] == leaf)
        nodes = sorted(f'{ns.rstrip("/")}/{n}' for n, ns in
                       self.node.get_node_names_and_namespaces() if n != self.node.get_name())
        kind = 'action' if action else 'service'
        seen = (f'{kind}s named {leaf!r} seen: {", ".join(similar)}' if similar
                else f'no {kind} named {leaf!r} in the graph')
        return (f'{full} not found within {waited_s:.0f} s; {seen}; nodes seen: '
                f'{", ".join(nodes) if nodes else "none"} '
                f'(ROS_DOMAIN_ID must match the graph\'s)')

    def request_reply(self, publisher, msg, replies: Collector[M],
                      predicate: Callable[[M], bool], timeout: float,
                      resend_every: float = 2.0) -> M | None:
        """Publish `msg` and wait for a reply matching `predicate`, publishing again every
        `resend_every` s: a fresh endpoint may not be matched on the far side yet even
        when our side already counts it (discovery is asymmetric), and a latest-frame
        node may have dropped it in favour of a newer frame."""
        deadline = time.monotonic() + timeout
        while True:
            publisher.publish(msg)
            left = deadline - time.monotonic()
            reply = replies.wait_for(predicate, min(resend_every, max(left, 0.0)))
            if reply is not None or time.monotonic() >= deadline:
                return reply

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds
