"""memory_node: one scene memory for every camera namespace, and the `query_memory`
service ("when did you last see a tie?") - thin glue over core.memory.

Lifecycle: configure opens the store (SQLite file or PostgreSQL URL; FAILURE with the
reason when it cannot) and starts its writer thread; activate subscribes to
<cam>/detections, <cam>/scene_description and <cam>/alerts of each camera in
memory.cameras (empty: this node's own namespace); cleanup flushes and closes the store.

Thumbnails (memory.thumbnail_interval_s > 0): also subscribes <cam>/image and keeps the
last IMAGE_BUFFER frames by stamp; when a track is due for a thumbnail and its frame is
at hand, the detections go to the node's thumbnail thread, which decodes the frame, saves
JPEG crops and then records them with the observations.

A memory of places (memory.odometry_topic): also subscribes nav_msgs/Odometry and keeps
the recent poses (core.geometry.PoseBuffer, bounded); each frame's positions are stored in
the odometry frame, through the pose at its stamp and the camera's mounting
(memory.camera_mount); without a pose at that stamp, in the camera's optical frame.

Concurrency (fits a SingleThreadedExecutor): the subscription callbacks only convert the
message and queue records for the writer thread (never a database call, never a decode);
the service callback runs one question inline - an indexed, LIMIT-bounded SQL query of a
few ms (docs/BENCHMARKS.md, scene memory) - so it holds the executor only that long.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from nav_msgs.msg import Odometry
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data

from mr_mllm_interfaces.msg import CornerCaseAlert, DetectionArray, SceneDescription
from mr_mllm_interfaces.srv import QueryMemory

from ..core.errors import ConfigError, MrMllmError
from ..core.geometry import Pose, PoseBuffer, mount_from_list
from ..core.memory import SceneMemory, redact
from ..core.memory.thumbnails import ThumbnailPolicy, save_crops, thumbnail_dir
from ..core.reasoning.vqa import validate_question
from ..core.runtime.stats import RollingStats
from ..ros import conversions as conv
from ..ros.base_node import ModelLifecycleNode
from ..ros.memory_conversions import alert_record_from_msg, fill_response
from ..ros.node_runtime import run_node
from ..ros.qos import ALERTS_QOS, RESULTS_QOS, SERVICE_QOS, image_input, image_qos

NODE_NAME = 'memory_node'
SECTIONS = ('memory',)
IMAGE_BUFFER = 30   # frames kept per camera to pair with their detections
THUMBNAIL_JOBS = 8  # frames waiting for the thumbnail thread at most (more: no thumbnail)


class MemoryNode(ModelLifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, SECTIONS, 'memory.diagnostics_period_s', **kwargs)
        self._memory: SceneMemory | None = None
        self._service = None
        self._cameras: list[tuple[str, str]] = []  # (camera name, topic prefix)
        self._received = 0
        self._queries = RollingStats()  # ms per answered question
        self._images: dict[str, OrderedDict] = {}  # camera -> stamp -> image message
        self._policy = ThumbnailPolicy(0.0)
        self._thumbnails = 0
        self._poses: PoseBuffer | None = None  # odometry (memory.odometry_topic)
        self._mount = Pose()
        self._start_worker('thumbnails', lambda: None, self._thumbnail_job)

    # ----------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._config = self._params.config()
            self._mount = mount_from_list(self._config.memory.camera_mount)
            memory = SceneMemory.open(self._config.memory,
                                      run_label=self.get_fully_qualified_name())
            if memory.embedder is not None:
                memory.embedder(['warm-up'])  # load it now, not in the first question
        except (MrMllmError, ConfigError) as e:
            return self._configure_failed(e)
        except (ImportError, OSError) as e:
            return self._configure_failed(MrMllmError(
                f'sentence embeddings (memory.embeddings) unavailable: {e}'))
        self._memory = memory
        own = self.get_namespace().strip('/')
        self._cameras = [(c.strip('/'), f'{c.strip("/")}/')
                         for c in self._config.memory.cameras] or [(own, '')]
        self._policy = ThumbnailPolicy(self._config.memory.thumbnail_interval_s)
        self._service = self.create_service(QueryMemory, 'query_memory', self._on_query,
                                            qos_profile=SERVICE_QOS)
        return self._configured(
            f'memory at {redact(memory.url)}, cameras: '
            f'{", ".join(c or "<node namespace>" for c, _ in self._cameras)}')

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        odometry = self._config.memory.odometry_topic
        if odometry:
            self._poses = PoseBuffer(max_gap_ns=int(self._config.memory.max_pose_gap_s * 1e9))
            # sensor-data QoS (best effort) matches reliable and best-effort odometry alike
            self._subs.append(self.create_subscription(Odometry, odometry, self._on_odometry,
                                                       qos_profile_sensor_data))
        for camera, prefix in self._cameras:
            self._subs += [
                self.create_subscription(DetectionArray, f'{prefix}detections',
                                         lambda m, c=camera: self._on_detections(c, m),
                                         RESULTS_QOS),
                self.create_subscription(SceneDescription, f'{prefix}scene_description',
                                         lambda m, c=camera: self._on_description(c, m),
                                         RESULTS_QOS),
                self.create_subscription(CornerCaseAlert, f'{prefix}alerts',
                                         lambda m, c=camera: self._on_alert(c, m),
                                         ALERTS_QOS)]
            if self._policy.interval_ns > 0:
                msg_type, topic = image_input(self._config.camera)
                self._subs.append(self.create_subscription(
                    msg_type, f'{prefix}{topic}', lambda m, c=camera: self._on_image(c, m),
                    image_qos(self._config.camera)))
        return super().on_activate(state)

    def _drop_pending(self) -> None:
        self._images.clear()

    def _release(self) -> None:
        self._worker.drain()  # frames waiting for thumbnails: their records are lost
        if self._service is not None:
            self.destroy_service(self._service)
            self._service = None
        if self._memory is not None:
            self._memory.close()  # commits what is queued (bounded wait)
            self._memory = None

    # ---------------------------------------------------------------- data path
    def _camera(self, camera: str, header) -> str:
        return camera or header.frame_id

    def _on_odometry(self, msg: Odometry) -> None:
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        try:
            pose = Pose.of((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
        except ValueError as e:  # a zero quaternion: not a pose
            self._errors.add('odometry', f'odometry pose rejected: {e}')
            return
        self._poses.add(conv.stamp_to_ns(msg.header.stamp), pose, msg.header.frame_id)

    def _record(self, memory: SceneMemory, ds, camera: str, thumbs=None) -> None:
        """Record a frame's detections; positions into the odometry frame when there is a
        pose at its stamp."""
        pose = self._poses.at(ds.stamp_ns) if self._poses is not None \
            and any(d.position is not None for d in ds) else None
        if pose is None:
            memory.record_detections(ds, camera, thumbs)
        else:
            memory.record_detections(ds, camera, thumbs, pose.compose(self._mount),
                                     self._poses.frame_id or 'odom')

    def _on_image(self, camera: str, msg) -> None:
        images = self._images.setdefault(camera, OrderedDict())
        images[conv.stamp_to_ns(msg.header.stamp)] = msg
        while len(images) > IMAGE_BUFFER:
            images.popitem(last=False)

    def _on_detections(self, camera: str, msg: DetectionArray) -> None:
        memory = self._memory
        if memory is None:
            return
        self._received += 1
        ds = conv.detection_set_from_msg(msg)
        name = self._camera(camera, msg.header)
        due = self._policy.due(ds, name)
        image = self._images.get(camera, {}).pop(ds.stamp_ns, None) if due else None
        if image is None or not self._worker.submit((name, ds, image, due), THUMBNAIL_JOBS):
            self._record(memory, ds, name)

    def _thumbnail_job(self, job) -> None:  # on the thumbnail thread
        camera, ds, image, due = job
        memory = self._memory
        if memory is None:
            return
        thumbs = {}
        try:
            frame = conv.frame_from_msg(image, max_pixels=self._config.max_image_pixels)
            cfg = self._config.memory
            thumbs = save_crops(frame.image, ds, due, camera, thumbnail_dir(memory.url),
                                cfg.thumbnail_side_px, cfg.thumbnail_jpeg_quality)
            self._thumbnails += len(thumbs)
        except (MrMllmError, OSError) as e:
            self._errors.add('image', str(e))
        finally:
            self._record(memory, ds, camera, thumbs)

    def _on_description(self, camera: str, msg: SceneDescription) -> None:
        if self._memory is not None:
            self._memory.record_description(conv.scene_description_from_msg(msg),
                                            self._camera(camera, msg.header))

    def _on_alert(self, camera: str, msg: CornerCaseAlert) -> None:
        if self._memory is not None:
            self._memory.record(alert_record_from_msg(msg, self._camera(camera, msg.header)))

    def _on_query(self, request: QueryMemory.Request, response: QueryMemory.Response):
        t0 = time.monotonic()
        memory, config = self._memory, self._config
        reason = validate_question(request.question, float(request.timeout_s),
                                   config.memory.max_question_chars) if config else ''
        if memory is None:
            reason = 'memory not configured'
        if reason:
            response.success, response.error = False, reason
            return response
        try:
            answer = memory.ask(request.question, request.camera.strip('/'))
        except MrMllmError as e:
            response.success, response.error = False, str(e)
            return response
        except Exception as e:  # a database error must not leave the caller waiting
            self.get_logger().error(f'query_memory failed: {e!r}')
            response.success, response.error = False, f'{type(e).__name__}: {e}'
            return response
        latency = time.monotonic() - t0
        self._queries.add(latency * 1e3)
        return fill_response(response, answer, latency)

    # -------------------------------------------------------------- diagnostics
    def _on_diagnostics_timer(self) -> None:
        memory = self._memory
        writer = memory.writer if memory is not None else None
        warning = ''
        if writer is not None and writer.dropped:
            warning = f'{writer.dropped} records dropped (writer queue full)'
        if writer is not None and writer.last_error:
            warning = f'writer: {writer.last_error}'
        self._publish_status('memory', memory is not None, 'recording',
                             redact(memory.url) if memory else '', {
                                 'messages_received': str(self._received),
                                 'records_written': str(writer.written if writer else 0),
                                 'records_pending': str(writer.pending if writer else 0),
                                 'records_dropped': str(writer.dropped if writer else 0),
                                 'batches': str(writer.batches if writer else 0),
                                 'thumbnails': str(self._thumbnails),
                                 'queries': str(self._queries.count),
                                 'query_ms_p95': f'{self._queries.percentile(95):.1f}',
                             }, warning)


def main(args=None) -> int:
    return run_node(MemoryNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
