"""`mr-mllm view`: the live graph in Foxglove, over the Foxglove WebSocket protocol.

A separate ROS process (it never runs inside a node, so it cannot slow one down) that
subscribes to each camera's image, detections, description and alerts and to
/diagnostics, and serves them on ws://HOST:PORT (localhost by default) with the topics of
viz.foxglove_messages: the frame as JPEG, its boxes as ImageAnnotations on the same
timestamp, the description, the alerts with their evidence images, and diagnostics;
with depth (camera.rgbd) the positioned objects as a SceneUpdate (NS/scene, 3D panel).
Open Foxglove > Open connection > Foxglove WebSocket, then import
config/foxglove_layout.json (or the file `--layout` writes).

Bounded: subscription callbacks only store the newest message (latest-frame; alerts and
descriptions in short bounded queues) and wake one sender thread, which sends at most
`--rate` frames per second per camera; the server drops the oldest data for a slow client
(message backlog). Nothing queues up, whatever the camera rate.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path

from .common_arguments import add_cameras_argument, add_duration_argument

log = logging.getLogger(__name__)

PAIR_WINDOW = 16        # images kept to pair with detections that arrive later
DETECTIONS_WAIT_S = 1.0  # no detections for this long: send frames without annotations
QUEUE = 50              # descriptions / alerts kept between two sender rounds
BACKLOG = 64            # messages buffered per WebSocket client before the oldest drops


def add_arguments(p) -> None:
    add_cameras_argument(p)
    p.add_argument('--host', default='127.0.0.1',
                   help='address to serve on (default 127.0.0.1: this machine only)')
    p.add_argument('--port', type=int, default=8765, help='WebSocket port (default 8765)')
    p.add_argument('--rate', type=float, default=10.0,
                   help='frames per second per camera sent at most (default 10)')
    p.add_argument('--compressed', action='store_true',
                   help='subscribe to image/compressed instead of image')
    p.add_argument('--image-topic', default='image',
                   help='colour image topic relative to each namespace (default image; '
                        'color/image_raw for camera.rgbd realsense, rgb/image_raw for '
                        'azure_kinect)')
    p.add_argument('--layout', metavar='FILE',
                   help='also write the Foxglove layout for these topics to FILE')
    add_duration_argument(p)


class CameraBridge:
    """One camera: O(1) subscription callbacks fill latest-value slots; `send` (on the
    sender thread) converts and logs what is new."""

    def __init__(self, ros, channels, namespace: str, compressed: bool, wake,
                 image_topic: str = 'image'):
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image

        from mr_mllm_interfaces.msg import CornerCaseAlert, DetectionArray, SceneDescription

        from ..ros.qos import ALERTS_QOS, RESULTS_QOS
        self.channels = channels
        self._wake = wake
        self._lock = threading.Lock()
        self._images: OrderedDict[int, object] = OrderedDict()
        self._newest_image = None
        self._detections = None
        self._last_detections_s = -1e9
        self._descriptions: deque = deque(maxlen=QUEUE)
        self._alerts: deque = deque(maxlen=QUEUE)
        self._sent_stamp = None
        self._sent_detections = None
        self._last_sent_s = 0.0
        ns = '/' + namespace.strip('/') if namespace.strip('/') else ''
        node = ros.node
        image_type, image_topic = (CompressedImage, f'{ns}/{image_topic}/compressed') \
            if compressed else (Image, f'{ns}/{image_topic}')
        node.create_subscription(image_type, image_topic, self._on_image,
                                 qos_profile_sensor_data)
        for name in ('detections', 'detections_refined'):
            node.create_subscription(DetectionArray, f'{ns}/{name}', self._on_detections,
                                     RESULTS_QOS)
        node.create_subscription(SceneDescription, f'{ns}/scene_description',
                                 self._on_description, RESULTS_QOS)
        node.create_subscription(CornerCaseAlert, f'{ns}/alerts', self._on_alert, ALERTS_QOS)

    # ------------------------------------------------------------- callbacks: O(1)
    def _on_image(self, msg) -> None:
        from ..ros.conversions import stamp_to_ns
        with self._lock:
            self._images[stamp_to_ns(msg.header.stamp)] = msg
            while len(self._images) > PAIR_WINDOW:
                self._images.popitem(last=False)
            self._newest_image = msg
        self._wake.set()

    def _on_detections(self, msg) -> None:
        with self._lock:
            # detections_refined of a stamp replaces its detections (it cites the same
            # objects the description does); a newer stamp replaces both.
            self._detections = msg
            self._last_detections_s = time.monotonic()
        self._wake.set()

    def _on_description(self, msg) -> None:
        self._descriptions.append(msg)
        self._wake.set()

    def _on_alert(self, msg) -> None:
        self._alerts.append(msg)
        self._wake.set()

    # ------------------------------------------------------------- sender thread
    def send(self, min_interval_s: float) -> None:
        from ..ros import conversions as conv
        while self._descriptions:
            sd = conv.scene_description_from_msg(self._descriptions.popleft())
            self.channels.log_description(sd, sd.detections.stamp_ns)
        recent_alerts = []
        while self._alerts:
            a = conv.alert_from_msg(self._alerts.popleft())
            self.channels.log_alerts([a], a.stamp_ns)
            recent_alerts.append(a)
        late = [a for a in recent_alerts if a.stamp_ns == self._sent_stamp]
        if late and self._sent_detections is not None:
            # Alerts come after their frame (scene_node runs after perception): annotate
            # the frame already sent again, now with its alert objects highlighted.
            self.channels.log_annotations(self._sent_detections, self._sent_stamp,
                                          self._sent_stamp, alerts=late)
        now = time.monotonic()
        if now - self._last_sent_s < min_interval_s:
            return
        with self._lock:
            dets = self._detections
            image = self._images.get(conv.stamp_to_ns(dets.header.stamp)) \
                if dets is not None else None
            if image is None and now - self._last_detections_s > DETECTIONS_WAIT_S:
                image = self._newest_image  # no perception running: frames alone
                dets = None
        if image is None:
            return
        stamp = conv.stamp_to_ns(image.header.stamp)
        if stamp == self._sent_stamp:
            return
        self._sent_stamp, self._last_sent_s = stamp, now
        self._log_frame(image, dets, stamp, recent_alerts)

    def _log_frame(self, image, dets, stamp: int, alerts: list) -> None:
        from ..core import images
        from ..ros import conversions as conv
        fmt = getattr(image, 'format', '')
        if fmt in ('jpeg', 'png'):
            data = bytes(image.data)
        else:
            frame = conv.frame_from_msg(image)
            data, fmt = images.jpeg(frame.image, 85), 'jpeg'
        self.channels.log_image(data, stamp, image.header.frame_id, stamp, fmt)
        self._sent_detections = None
        if dets is not None:
            self._sent_detections = ds = conv.detection_set_from_msg(dets)
            self.channels.log_annotations(ds, stamp, stamp,
                                          alerts=[a for a in alerts if a.stamp_ns == stamp])
            self.channels.log_scene(ds, stamp, stamp)  # 3D, when the objects have positions


def _diagnostics_record(msg) -> dict:
    def level(value) -> int:  # DiagnosticStatus.level is a `byte`: bytes in rclpy
        return value if isinstance(value, int) else int.from_bytes(value, 'little')

    return {'status': [{'name': s.name, 'level': level(s.level), 'message': s.message,
                        'values': {kv.key: kv.value for kv in s.values}}
                       for s in msg.status]}


def serve(namespaces: list[str], host: str, port: int, rate: float, compressed: bool,
          stop: threading.Event, ready=None, image_topic: str = 'image') -> None:
    """Run the viewer until `stop` is set. `ready(port)` is called once it serves."""
    import foxglove
    from diagnostic_msgs.msg import DiagnosticArray

    from ..ros.client import RosClient
    from ..viz.foxglove_messages import CameraChannels
    context = foxglove.Context()
    server = foxglove.start_server(name='mr_mllm_ros', host=host, port=port, context=context,
                                   message_backlog_size=BACKLOG)
    diagnostics = foxglove.Channel('/diagnostics', context=context)
    wake = threading.Event()
    latest_diag: list = [None]

    def on_diagnostics(msg) -> None:
        latest_diag[0] = msg
        wake.set()

    try:
        with RosClient('mr_mllm_view') as ros:
            bridges = [CameraBridge(ros, CameraChannels(context, ns), ns, compressed, wake,
                                    image_topic)
                       for ns in namespaces or ['']]
            ros.node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
            log.info('serving the live graph for Foxglove on ws://%s:%d (cameras: %s)', host,
                     server.port, ', '.join(ns or '/' for ns in namespaces or ['']))
            if ready is not None:
                ready(server.port)
            interval = 1.0 / rate if rate > 0 else 0.0
            while not stop.is_set():
                wake.wait(0.1 if interval <= 0 else min(0.1, interval))
                wake.clear()
                msg, latest_diag[0] = latest_diag[0], None
                if msg is not None:
                    diagnostics.log(_diagnostics_record(msg))
                for b in bridges:
                    try:
                        b.send(interval)
                    except Exception:  # noqa: BLE001 - a bad message must not end the viewer
                        log.exception('could not forward a message')
    finally:
        server.stop()


def run(args) -> int:
    if args.layout:
        from ..viz.layout import foxglove_layout
        Path(args.layout).write_text(foxglove_layout((args.namespace or [''])[0]),
                                     encoding='utf-8')
        log.info('wrote the Foxglove layout for these topics to %s', args.layout)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.duration > 0:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()
    try:
        serve(args.namespace, args.host, args.port, args.rate, args.compressed, stop,
              image_topic=args.image_topic.strip('/'))
    except KeyboardInterrupt:
        pass
    return 0
