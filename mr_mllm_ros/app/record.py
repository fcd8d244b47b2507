"""`mr-mllm record --topics T... --out BAG`: record topics into a rosbag2 bag, for
installs without `ros2 bag` (e.g. the pip wheels).

rclpy raw subscriptions (the serialized bytes, never deserialized) go straight into a
rosbags Writer (sqlite3 or mcap, rosbag2 metadata v9, message definitions and type hashes
from the rosbags Kilted typestore plus this project's messages). The log time is the
receive time on the node clock, as `ros2 bag record` does. QoS follows the publishers
(reliable / transient local only when every publisher offers it). Stops cleanly on
Ctrl-C / SIGTERM, after --duration seconds or --max-messages messages; the bag is
closed (metadata.yaml written) in every case.
"""

from __future__ import annotations

import importlib
import logging
import queue
import signal
import threading
import time
from pathlib import Path

from ..core.errors import BagError
from ..replay.result_messages import result_typestore
from .common_arguments import add_duration_argument
from .launcher import ensure_local_ros_env

log = logging.getLogger(__name__)


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    package, kind, name = msgtype.split('/')
    return getattr(importlib.import_module(f'{package}.{kind}'), name)


class BagRecorder:
    """Raw subscriptions on `node` written into a new bag at `out`; close() finalises it.

    Callbacks may run on any executor thread (the demo's is multi-threaded); they only
    queue the bytes. One writer thread owns the rosbags Writer, because an SQLite
    connection may only be used by the thread that opened it."""

    QUEUE = 10000  # messages waiting for the disk at most; beyond it they are dropped

    def __init__(self, node, out: str | Path, storage: str = 'sqlite3'):
        self.node = node
        self.out = Path(out)
        if self.out.exists():
            raise BagError(f'{self.out} exists already; record into a new bag')
        self.storage = storage
        self._queue: queue.Queue = queue.Queue(maxsize=self.QUEUE)
        self._lock = threading.Lock()
        self._subs = []
        self._closed = False
        self.counts: dict[str, int] = {}
        self.dropped = 0
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_loop, name='bag-writer',
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(30.0) or self._error is not None:
            raise BagError(f'cannot create bag {self.out}: {self._error or "timeout"}')

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def _write_loop(self) -> None:
        from ..replay.bag_writer import open_writer
        try:
            writer = open_writer(self.out, self.storage)
        except Exception as e:  # noqa: BLE001 - reported by __init__
            self._error = e
            self._started.set()
            return
        self._started.set()
        conns = {}
        try:
            while True:
                item = self._queue.get()  # None (close) always arrives: see close()
                if item is None:
                    return
                if item[0] == 'add':
                    _, topic, msgtype, reply = item
                    try:
                        conns[topic] = writer.add_connection(topic, msgtype,
                                                             typestore=result_typestore())
                    except Exception as e:  # noqa: BLE001 - handed to add()
                        reply['error'] = e
                    reply['done'].set()
                else:
                    _, topic, stamp, data = item
                    writer.write(conns[topic], stamp, data)
        finally:
            writer.close()

    def add(self, topic: str, msgtype: str, qos) -> None:
        if msgtype not in result_typestore().types:
            raise BagError(f'cannot record {topic}: type {msgtype} is unknown to the '
                           'rosbags typestore')
        reply = {'done': threading.Event(), 'error': None}
        self._queue.put(('add', topic, msgtype, reply), timeout=10.0)
        if not reply['done'].wait(10.0) or reply['error'] is not None:
            raise BagError(f'cannot record {topic}: {reply["error"] or "timeout"}')
        with self._lock:
            self.counts[topic] = 0
        self._subs.append(self.node.create_subscription(
            message_class(msgtype), topic, self._callback(topic), qos, raw=True))

    def _callback(self, topic: str):
        def on_message(data: bytes) -> None:  # one parameter: rclpy passes no MessageInfo
            stamp = self.node.get_clock().now().nanoseconds
            with self._lock:
                if self._closed:
                    return
                try:
                    self._queue.put_nowait(('write', topic, stamp, data))
                    self.counts[topic] += 1
                except queue.Full:
                    self.dropped += 1
        return on_message

    def close(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._subs = []
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:  # waits only while the writer drains a full queue
            self._queue.put(None, timeout=60.0)
        except queue.Full:
            log.error('bag writer stuck; %s may be incomplete', self.out)
        self._thread.join(60.0)
        if self.dropped:
            log.warning('%d messages dropped: the disk could not keep up', self.dropped)

    def __enter__(self) -> 'BagRecorder':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class demo_recording:  # noqa: N801 - used like a function in a `with` statement
    """The result topics of the demo camera into a bag; does nothing when `out` is None."""

    def __init__(self, node, out: str | None, namespace: str):
        self.recorder = None
        if out:
            from ..ros.qos import ALERTS_QOS, RESULTS_QOS
            self.recorder = BagRecorder(node, out)
            ns = f'/{namespace.strip("/")}'
            for name, msgtype, qos in (
                    ('detections', 'mr_mllm_interfaces/msg/DetectionArray', RESULTS_QOS),
                    ('detections_refined', 'mr_mllm_interfaces/msg/DetectionArray',
                     RESULTS_QOS),
                    ('scene_description', 'mr_mllm_interfaces/msg/SceneDescription',
                     RESULTS_QOS),
                    ('alerts', 'mr_mllm_interfaces/msg/CornerCaseAlert', ALERTS_QOS)):
                self.recorder.add(f'{ns}/{name}', msgtype, qos)

    def __enter__(self):
        return self.recorder

    def __exit__(self, *exc) -> None:
        if self.recorder is not None:
            self.recorder.close()
            counts = ', '.join(f'{t} {n}' for t, n in self.recorder.counts.items())
            print(f'recorded {self.recorder.total} messages into {self.recorder.out} '
                  f'({counts})')


def publisher_qos(node, topic: str, depth: int = 100):
    """Subscription QoS compatible with every publisher of `topic` (like rosbag2)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    infos = node.get_publishers_info_by_topic(topic)
    reliable = bool(infos) and all(
        i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
    latched = bool(infos) and all(
        i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE if reliable
                      else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched
                      else DurabilityPolicy.VOLATILE)


def add_arguments(p) -> None:
    p.add_argument('--topics', nargs='+', required=True, metavar='TOPIC')
    p.add_argument('--out', required=True, metavar='BAG', help='new bag folder')
    p.add_argument('--storage', choices=('sqlite3', 'mcap'), default='sqlite3')
    add_duration_argument(p)
    p.add_argument('--max-messages', type=int, default=0, metavar='N',
                   help='stop after N messages in all (default 0: no limit)')
    p.add_argument('--discovery-timeout', type=float, default=10.0, metavar='S',
                   help='wait at most S seconds for the topics to appear (default 10)')


def run(args) -> int:
    ensure_local_ros_env()
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    if Path(args.out).exists():
        raise BagError(f'{args.out} exists already; record into a new bag')
    topics = ['/' + t.strip('/') for t in args.topics]
    stop = threading.Event()
    handlers = {s: signal.signal(s, lambda *_: stop.set())
                for s in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node('mr_mllm_record')
    try:
        types = _discover(node, topics, args.discovery_timeout, stop)
        missing = [t for t in topics if t not in types]
        if missing:
            print(f'mr-mllm record: no publisher of {", ".join(missing)} within '
                  f'{args.discovery_timeout:g} s' + ('; recording the others' if types else ''))
        if not types:
            return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        with BagRecorder(node, args.out, args.storage) as recorder:
            for topic, msgtype in types.items():
                recorder.add(topic, msgtype, publisher_qos(node, topic))
            print(f'recording {", ".join(f"{t} ({m})" for t, m in types.items())} into '
                  f'{args.out} ({args.storage}); Ctrl-C stops', flush=True)
            deadline = time.monotonic() + args.duration if args.duration > 0 else None
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline) \
                    and not (args.max_messages and recorder.total >= args.max_messages):
                executor.spin_once(timeout_sec=0.1)
        executor.shutdown(timeout_sec=1.0)
        print(f'recorded {recorder.total} messages: '
              + ', '.join(f'{t} {n}' for t, n in recorder.counts.items()))
        return 0
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        for s, h in handlers.items():
            signal.signal(s, h)


def _discover(node, topics: list[str], timeout: float, stop: threading.Event) -> dict:
    """topic -> message type for those of `topics` that have a publisher."""
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    while True:
        for name, msgtypes in node.get_topic_names_and_types():
            if name in topics and msgtypes and node.count_publishers(name) > 0:
                found[name] = msgtypes[0]
        if len(found) == len(topics) or stop.is_set() or time.monotonic() >= deadline:
            return {t: found[t] for t in topics if t in found}
        time.sleep(0.1)
