"""scene_node: grounded scene descriptions, visual question answering, MLLM -> perception
feedback and corner-case alerts for one camera (thin glue over core.scene, core.reinforce
and core.alerts).

Lifecycle: configure loads the MLLM and the alert rules (FAILURE with the reason when
something is missing; the node stays up), activate subscribes, cleanup frees the model.

Concurrency (SingleThreadedExecutor + two threads of our own; why single:
ros/node_runtime.py):
- executor thread: `image` and `detections` callbacks only store messages in the stamp
  pairer and wake the frame thread - O(1); the description timer only ticks the MLLM
  thread; /diagnostics and the camera-stale check; the ask_scene service is a coroutine:
  it validates and queues the request (bounded: full -> an immediate `busy`), then awaits
  its answer without holding the executor (the MLLM thread, or a timeout timer, completes
  an rclpy Future, which wakes the executor);
- frame thread: for the newest new pair, decode the image, evaluate the per-frame alert
  rules and notice scene changes (new track, different class set);
- the MLLM thread (core.inference_worker, the only thread that runs the model - one
  OpenMP team, one malloc arena): at description_rate_hz and on scene changes (never more
  often than min_description_interval_s) MLLM verification/labelling ->
  detections_refined, description -> scene_description, feedback alerts, MLLM judgement;
  it goes round: the questions waiting (arrival order), then a description if one is due.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.task import Future
from sensor_msgs.msg import CompressedImage

from mr_mllm_interfaces.msg import CornerCaseAlert, DetectionArray, SceneDescription
from mr_mllm_interfaces.srv import AskScene

from ..core.errors import ConfigError, MrMllmError
from ..core.inference_worker import InferenceWorker
from ..core.pairing import StampPairer
from ..core.pipeline import ScenePipeline
from ..core.stats import RollingStats
from ..core.types import Answer, DetectionSet, Frame
from ..ros import conversions as conv
from ..ros.base_node import ModelLifecycleNode
from ..ros.node_runtime import run_node
from ..ros.qos import ALERTS_QOS, RESULTS_QOS, SERVICE_QOS, image_input, image_qos

NODE_NAME = 'scene_node'
SECTIONS = ('camera', 'mllm', 'fusion', 'scene', 'reinforce', 'alerts')


@dataclass
class _VqaJob:
    question: str
    stamp_ns: int
    deadline: float
    received: float
    done: threading.Event = field(default_factory=threading.Event)
    answer: Answer | None = None
    error: str = ''
    cancelled: bool = False
    on_done: object = None  # called once answered or refused (wakes the service coroutine)

    def finish(self) -> None:
        self.done.set()
        if self.on_done is not None:
            self.on_done()


def validate_question(question: str, timeout_s: float, max_chars: int) -> str:
    """'' when the request is acceptable, else the reason it is refused."""
    if not isinstance(question, str) or any(0xD800 <= ord(c) <= 0xDFFF for c in question):
        return 'question is not valid UTF-8 text'
    if '\ufffd' in question:
        # rclpy decodes invalid UTF-8 bytes in a string field to U+FFFD.
        return 'question is not valid UTF-8 (it arrived with replacement characters)'
    if not question.strip():
        return 'empty question'
    if len(question) > max_chars:
        return f'question too long: {len(question)} characters (max {max_chars})'
    if not (isinstance(timeout_s, float) and math.isfinite(timeout_s) and timeout_s > 0):
        return f'timeout_s must be a positive number of seconds, got {timeout_s}'
    return ''


class SceneNode(ModelLifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, SECTIONS, 'scene.diagnostics_period_s', **kwargs)
        self._pipeline: ScenePipeline | None = None
        self._pairer: StampPairer | None = None
        self._describe_stats = RollingStats()  # ms per description
        self._vqa_stats = RollingStats()       # ms per answered question
        self._paired_stats = RollingStats()    # one entry per frame paired and decoded
        self._backend_errors = 0
        self._state_lock = threading.Lock()
        self._latest: tuple[Frame, DetectionSet] | None = None  # newest decoded pair
        self._latest_stamp = -1          # newest pair handled by the frame worker
        self._described_stamp = -1       # newest pair described
        self._last_describe_time = 0.0
        self._last_frame_time: float | None = None
        self._failures = 0          # consecutive reasoning failures (back-off)
        self._retry_at = 0.0
        self._pubs: dict[str, object] = {}
        self._describe_timer = None
        self._service = None
        self._start_worker('mllm', self._mllm_work, self._answer_job)  # self._worker
        self._frames = InferenceWorker('frames', self._frame_work, None, self._on_worker_bug)
        self._frames.start()

    # ----------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            config = self._params.config()
            pipeline = ScenePipeline(config)
        except (MrMllmError, ConfigError, ValueError) as e:
            return self._configure_failed(e)
        self._config, self._pipeline = config, pipeline
        self._pairer = StampPairer(config.scene.pair_buffer_size)
        self._pubs = {
            'description': self.create_lifecycle_publisher(SceneDescription,
                                                           'scene_description', RESULTS_QOS),
            'alerts': self.create_lifecycle_publisher(CornerCaseAlert, 'alerts', ALERTS_QOS),
            'refined': self.create_lifecycle_publisher(DetectionArray, 'detections_refined',
                                                       RESULTS_QOS),
        }
        rate = config.scene.description_rate_hz
        if rate > 0:
            self._describe_timer = self.create_timer(1.0 / rate, self._worker.tick)
        # Reentrant: a request awaiting its answer holds its callback group until it
        # returns, and in the node's default (mutually exclusive) group that would stop
        # every other request, subscription and timer meanwhile.
        self._service = self.create_service(AskScene, 'ask_scene', self._on_ask,
                                            qos_profile=SERVICE_QOS,
                                            callback_group=ReentrantCallbackGroup())
        self._last_error = ''
        rules = len(pipeline.alerts.rules) if pipeline.alerts is not None else 0
        self.get_logger().info(f'configured: {pipeline.model_name}, {rules} alert rules, '
                               f'reinforcement {"on" if pipeline.reinforcer else "off"}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cam = self._config.camera
        image_type, image_topic = image_input(cam)
        # Frames are kept until their detections arrive: the subscription depth only needs
        # to absorb bursts; the pairer holds pair_buffer_size frames.
        self._subs = [
            self.create_subscription(image_type, image_topic, self._on_image, image_qos(cam)),
            self.create_subscription(DetectionArray, 'detections', self._on_detections,
                                     RESULTS_QOS)]
        self._last_frame_time = None
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self._refuse_queued_questions()
        return super().on_deactivate(state)

    def _refuse_queued_questions(self) -> None:
        for job in self._worker.drain():  # answer whoever is still waiting
            job.error = 'node is shutting down'
            job.finish()

    def _release(self) -> None:
        self._unsubscribe()
        self._refuse_queued_questions()
        if self._service is not None:
            self.destroy_service(self._service)
            self._service = None
        if self._describe_timer is not None:
            self.destroy_timer(self._describe_timer)
            self._describe_timer = None
        # Lets a description, an answer or a frame in flight finish.
        with self._worker.paused(), self._frames.paused():
            for pub in self._pubs.values():
                self.destroy_lifecycle_publisher(pub)
            self._pubs = {}
            pipeline, self._pipeline = self._pipeline, None
            if pipeline is not None:
                pipeline.close()
        with self._state_lock:
            self._latest = None
        if self._pairer is not None:
            self._pairer.clear()

    def destroy_node(self) -> None:
        self._frames.stop()
        super().destroy_node()

    def _model_name(self) -> str:
        return self._pipeline.model_name if self._pipeline is not None else ''

    # -------------------------------------------------------------------- intake
    def _on_image(self, msg) -> None:
        self._last_frame_time = time.monotonic()
        try:
            conv.check_image_msg(msg, self._config.max_image_pixels)
        except MrMllmError as e:
            self._errors.add('image', str(e))
            return
        pairer = self._pairer
        if pairer is not None and pairer.add_frame(conv.stamp_to_ns(msg.header.stamp), msg):
            self._frames.tick()

    def _on_detections(self, msg: DetectionArray) -> None:
        pairer = self._pairer
        if pairer is not None and pairer.add_detections(conv.stamp_to_ns(msg.header.stamp),
                                                        msg):
            self._frames.tick()

    def _decode(self, image_msg, det_msg) -> tuple[Frame, DetectionSet]:
        limit = self._config.max_image_pixels
        frame = conv.frame_from_compressed(image_msg, max_pixels=limit) \
            if isinstance(image_msg, CompressedImage) \
            else conv.frame_from_image(image_msg, max_pixels=limit)
        return frame, conv.detection_set_from_msg(det_msg)

    # --------------------------------------------------------------- frame thread
    def _frame_work(self) -> None:
        latest = self._pairer.latest() if self._pairer is not None else None
        if latest is None or latest[0] <= self._latest_stamp:
            return
        stamp, image_msg, det_msg = latest
        self._latest_stamp = stamp
        try:
            frame, ds = self._decode(image_msg, det_msg)
        except MrMllmError as e:
            self._errors.add('image', str(e))
            return
        with self._state_lock:
            self._latest = (frame, ds)
        self._paired_stats.add(0.0)
        pipeline = self._pipeline
        if pipeline is None:
            return
        self._publish_alerts(pipeline.frame_alerts(frame, ds, time.monotonic()))
        if pipeline.scene_changed(ds) and self._config.scene.describe_on_change \
                and pipeline.reasoner is not None:
            self._worker.tick()

    # --------------------------------------------------------------- mllm worker
    def _mllm_work(self) -> None:
        config, pipeline = self._config, self._pipeline
        if pipeline is None or pipeline.reasoner is None:
            return
        with self._state_lock:
            latest = self._latest
        if latest is None:
            return
        frame, ds = latest
        now = time.monotonic()
        if frame.stamp_ns <= self._described_stamp or now < self._retry_at or \
                now - self._last_describe_time < config.scene.min_description_interval_s:
            return
        self._described_stamp = frame.stamp_ns
        self._last_describe_time = now
        try:
            t0 = time.perf_counter()
            result = pipeline.reason(frame, ds, now)
        except MrMllmError as e:
            # Back off (1, 2, 4 ... 30 s) so a dead server is not hammered every frame;
            # the first success resets it.
            self._failures += 1
            delay = min(30.0, 2.0 ** (self._failures - 1))
            self._retry_at = time.monotonic() + delay
            self._backend_errors += 1
            self._last_error = str(e)
            self.get_logger().error(f'scene reasoning failed, frame skipped; next try in '
                                    f'{delay:.0f} s: {e}')
            return
        self._failures, self._retry_at = 0, 0.0
        if pipeline.reinforcer is not None:
            self._pubs['refined'].publish(conv.detection_array_msg(result.refined))
        self._pubs['description'].publish(conv.scene_description_msg(result.description))
        self._describe_stats.add((time.perf_counter() - t0) * 1e3)
        self._publish_alerts(result.alerts)

    def _publish_alerts(self, alerts) -> None:
        pub = self._pubs.get('alerts')
        for a in alerts:
            self.get_logger().warning(f'alert [{a.severity.name}] {a.rule}: {a.message}')
            if pub is not None:
                pub.publish(conv.alert_msg(a))

    # ----------------------------------------------------------------------- VQA
    async def _on_ask(self, request: AskScene.Request, response: AskScene.Response):
        received = time.monotonic()
        config = self._config
        response.mllm_model = self._model_name()

        def fail(reason: str):
            response.success, response.error = False, reason
            response.latency_s = time.monotonic() - received
            return response

        if self._pipeline is None or not self._subs:
            return fail('scene_node is not active')
        if self._pipeline.reasoner is None:
            return fail('no MLLM configured (mllm.backend is none)')
        reason = validate_question(request.question, float(request.timeout_s),
                                   config.scene.max_question_chars)
        if reason:
            return fail(reason)
        timeout = min(float(request.timeout_s), config.scene.vqa_max_timeout_s)
        job = _VqaJob(request.question, conv.stamp_to_ns(request.stamp),
                      received + timeout, received)
        if not await self._answered(job, timeout, config.scene.vqa_queue_size):
            return fail('busy' if not job.done.is_set() and not job.cancelled
                        else f'timeout after {timeout:.1f} s')
        if job.answer is None:
            return fail(job.error or 'no answer')
        a = job.answer
        response.success = True
        response.answer, response.raw_answer = a.grounded_text.text, a.grounded_text.raw_text
        response.grounding = conv.phrases_to_msg(a.grounded_text.phrases)
        response.detections = [conv.detection_to_msg(d) for d in a.detections]
        response.image_stamp = conv.ns_to_stamp(a.detections.stamp_ns)
        response.mllm_model = a.mllm_model
        response.latency_s = time.monotonic() - received
        self._vqa_stats.add(response.latency_s * 1e3)
        return response

    async def _answered(self, job: _VqaJob, timeout: float, queue_size: int) -> bool:
        """Queue `job` and await it, for at most `timeout` s, without holding the
        executor: True when the MLLM thread finished it (answer or error), False when the
        queue was full (job not done, not cancelled) or the time ran out (cancelled)."""
        # set_result wakes the executor only through a done callback (rclpy schedules it
        # as a task): hence the no-op callback. Either side may finish first.
        finished: Future = Future(executor=self.executor)
        finished.add_done_callback(lambda _: None)

        def finish() -> None:
            if not finished.done():
                finished.set_result(None)
        job.on_done = finish
        if not self._worker.submit(job, queue_size):
            return False
        timer = self.create_timer(timeout, finish)
        try:
            await finished
        finally:
            self.destroy_timer(timer)
        if not job.done.is_set():
            job.cancelled = True
            return False
        return True

    def _answer_job(self, job: _VqaJob) -> None:  # on the MLLM thread
        if job.cancelled or time.monotonic() >= job.deadline:
            job.error = 'timeout before the question was reached'
            job.finish()
            return
        try:
            pair = self._frame_for(job.stamp_ns)
            if isinstance(pair, str):
                job.error = pair
            else:
                job.answer = self._pipeline.answer(pair[0], pair[1], job.question)
        except MrMllmError as e:
            job.error = f'answering failed: {e}'
        except Exception as e:  # a bug must not leave the caller waiting out its timeout
            self.get_logger().error(f'VQA: {e!r}')
            job.error = 'internal error'
        job.finish()

    def _frame_for(self, stamp_ns: int) -> tuple[Frame, DetectionSet] | str:
        if stamp_ns == 0:
            with self._state_lock:
                latest = self._latest
            return latest if latest is not None else 'no frame received yet'
        pair = self._pairer.get(stamp_ns) if self._pairer is not None else None
        if pair is None:
            stamps = self._pairer.stamps() if self._pairer is not None else []
            held = f' (held: {stamps[0]}..{stamps[-1]} ns)' if stamps else ''
            return f'no frame with stamp {stamp_ns} ns{held}'
        return self._decode(*pair)

    # --------------------------------------------------------------- diagnostics
    def _on_diagnostics_timer(self) -> None:
        pipeline = self._pipeline
        warning = ''
        if pipeline is not None and self._subs:
            if self._last_frame_time is None:
                # Not a stale camera but none yet (a graph started before its driver):
                # a WARN in diagnostics, not a CRITICAL alert every max_age_s.
                warning = f'no image yet on {self._subs[0].topic_name}'
            else:
                self._publish_alerts(pipeline.stale_alerts(
                    time.monotonic(), self._last_frame_time, self.get_namespace()))
        values = {
            'intake_rate_hz': f'{self._paired_stats.rate_hz():.2f}',
            'frames_paired': str(self._paired_stats.count),
            'description_rate_hz': f'{self._describe_stats.rate_hz(horizon_s=60.0):.3f}',
            'description_latency_ms_p50': f'{self._describe_stats.percentile(50):.0f}',
            'descriptions': str(self._describe_stats.count),
            'vqa_queue_depth': str(self._worker.pending()),
            'vqa_latency_ms_p50': f'{self._vqa_stats.percentile(50):.0f}',
            'vqa_answered': str(self._vqa_stats.count),
            'backend_errors': str(self._backend_errors),
            'mllm_model': self._model_name(),
        }
        if pipeline is not None and pipeline.alerts is not None:
            for rule, count in pipeline.alerts.stats().items():
                values[f'alerts: {rule}'] = str(count)
        self._publish_status('scene', pipeline is not None, 'describing', self._model_name(),
                             values, warning)


def main(args=None) -> int:
    return run_node(SceneNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
