"""A small in-process ROS client for the demo, `mr-mllm ask`, graph tests and benchmarks:
publish, collect what topics carry, call services - every wait bounded by a timeout."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Generic, TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile

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


class RosClient:
    """Owns a node spinning in a background thread. Use as a context manager."""

    def __init__(self, name: str = 'mr_mllm_client', namespace: str = ''):
        self._own_context = not rclpy.ok()
        if self._own_context:
            rclpy.init(args=[])
        self.node: Node = rclpy.create_node(name, namespace=namespace)
        self._closing = False
        self._executor = MultiThreadedExecutor(num_threads=2)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        # A callback that raises would end spin(): log it and keep serving the others.
        while not self._closing:
            try:
                self._executor.spin()
            except ExternalShutdownException:
                return
            except Exception:
                if self._closing:
                    return  # shutdown races while closing are not errors
                log.exception('a callback of %s failed', self.node.get_name())

    def __enter__(self) -> 'RosClient':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._closing = True
        self._executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        if self._own_context and rclpy.ok():
            rclpy.shutdown()
        self._thread.join(timeout=2.0)

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
             wait_service_s: float = 10.0):
        """Call a service; None when the service is missing or the call times out."""
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=wait_service_s):
                return None
            future = client.call_async(request)
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            if not done.wait(timeout):
                client.remove_pending_request(future)
                return None
            return future.result()
        finally:
            self.node.destroy_client(client)

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
