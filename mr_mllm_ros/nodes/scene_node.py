"""scene_node: grounded scene descriptions, visual question answering, MLLM -> perception
feedback and corner-case alerts for one camera; thin glue over core.pipeline.ScenePipeline
and its reasoning schedule (core.reasoning.schedule). Lifecycle: configure loads the MLLM and the
alert rules (FAILURE with the reason; the node stays up), activate subscribes, cleanup
frees the model.

Concurrency (SingleThreadedExecutor + two threads of our own; why: ros/node_runtime.py):
- executor: the `image`/`detections` callbacks only store messages (ros/scene_frames.py)
  and wake the frame thread - O(1); the schedule's wake-up timer ticks the MLLM thread;
  /diagnostics, stale-camera check; `ask_scene` (a service, and an action that streams
  and can be cancelled) runs as coroutines that wait for a fresh frame, queue the
  question and await its answer without holding the executor (ros/ask_flow.py);
- frame thread: decode the newest new pair, hand it to ScenePipeline.on_frame (per-frame
  alert rules, scene change, the schedule), publish its alerts, wake the MLLM thread when
  it says a reasoning step is due;
- MLLM thread (core.runtime.inference_worker, the only one running the model: one OpenMP team,
  one malloc arena): the questions waiting (arrival order), then ScenePipeline.step
  (monotonic time), which reasons on the newest frame when the schedule starts a step;
  publish its result: detections_refined, scene_description, alerts.
"""

from __future__ import annotations

import os
import time

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn

from mr_mllm_interfaces.msg import CornerCaseAlert, DetectionArray, SceneDescription
from mr_mllm_interfaces.srv import AskScene

from ..core.alerts import FrameArrivals
from ..core.errors import ConfigError, MrMllmError
from ..core.pipeline import ScenePipeline, StepFailed
from ..core.reasoning.vqa import VqaJob, answer_job
from ..core.runtime.cpu_threads import (apply_cpu_threads, lower_group_priority,
                                        lower_thread_priority, node_threads)
from ..core.runtime.inference_worker import InferenceWorker
from ..core.runtime.stats import RollingStats
from ..ros import ask_flow, ask_service
from ..ros.ask_action import AskActionServer
from ..ros import conversions as conv
from ..ros.base_node import ModelLifecycleNode
from ..ros.node_runtime import run_node
from ..ros.qos import ALERTS_QOS, RESULTS_QOS, SERVICE_QOS, image_input, image_qos
from ..ros.scene_frames import SceneFrames

NODE_NAME = 'scene_node'
# looker: ScenePipeline runs it in the reasoning step, so its parameters are this node's.
SECTIONS = ('camera', 'mllm', 'fusion', 'scene', 'reinforce', 'looker', 'alerts')


class SceneNode(ModelLifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, SECTIONS, 'scene.diagnostics_period_s', **kwargs)
        self._pipeline: ScenePipeline | None = None
        self._pairs: SceneFrames | None = None
        self._describe_stats = RollingStats()  # ms per description
        # ms from the described frame's stamp to the description's publication
        self._age_stats = RollingStats()
        self._vqa_stats = RollingStats()       # ms per answered question
        self._paired_stats = RollingStats()    # one entry per frame paired and decoded
        self._backend_errors = 0
        self._arrivals = FrameArrivals()  # when images came: is the camera streaming?
        self._pubs: dict[str, object] = {}
        self._wake_timer = self._service = self._desk = self._action = None
        self._start_worker('mllm', self._mllm_work, self._answer_job)  # self._worker
        self._frames = InferenceWorker('frames', self._frame_work, None, self._on_worker_bug)
        self._frames.start()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            config = self._params.config()
            pipeline = ScenePipeline(config)
        except (MrMllmError, ConfigError, ValueError) as e:
            return self._configure_failed(e)
        threads = apply_cpu_threads(node_threads(config.scene.threads))
        self.get_logger().info(f'CPU threads: {threads}; '
                               f'{self._lower_priority(config, pipeline)}')
        self._config, self._pipeline = config, pipeline
        self._pairs = SceneFrames(config.scene.pair_buffer_size, config.max_image_pixels)
        self._pubs = {
            'description': self.create_lifecycle_publisher(SceneDescription,
                                                           'scene_description', RESULTS_QOS),
            'alerts': self.create_lifecycle_publisher(CornerCaseAlert, 'alerts', ALERTS_QOS),
            'refined': self.create_lifecycle_publisher(DetectionArray, 'detections_refined',
                                                       RESULTS_QOS),
        }
        period = pipeline.wake_period_s()
        if period is not None:  # steps can fall due between frames (the frames stopped)
            self._wake_timer = self.create_timer(period, self._worker.tick)
        # Reentrant: a request awaiting its answer holds its group until it returns.
        asking = ReentrantCallbackGroup()
        self._desk = ask_flow.AskDesk(self, self._worker, self._ask_state, asking)
        self._service = self.create_service(AskScene, 'ask_scene', self._on_ask,
                                            qos_profile=SERVICE_QOS, callback_group=asking)
        self._action = AskActionServer(self, self._desk, 'ask_scene', asking,
                                       on_answer=lambda out: self._vqa_stats.add(
                                           out.latency_s * 1e3))
        return self._configured(pipeline.summary())

    def _lower_priority(self, config, pipeline: ScenePipeline) -> str:
        """scene.nice: the MLLM thread yields the CPU to the detector (the executor,
        answering feedback and cancels, keeps the process's priority). A node alone in its
        process and session (`mr-mllm up` starts each in its own) is an autogroup of its
        own, whose threads' niceness does not count against perception_node's: the group is
        made nicer too. The combined node's group holds the detector: only the thread there.
        With no MLLM (mllm.backend none: rule alerts only) there is nothing to yield, and a
        nicer group would only slow the intake (a flood test lost 103 of 900 messages)."""
        if pipeline.reasoner is None:
            return 'niceness unchanged (no MLLM)'
        out = 'MLLM thread ' + lower_thread_priority(self._worker.native_id, config.scene.nice)
        executor = self.executor  # configure runs once every node of the process is added
        alone = executor is not None and len(executor.get_nodes()) == 1
        if config.scene.nice > 0 and alone and os.getsid(0) == os.getpid():
            out += ', ' + lower_group_priority(config.scene.nice)
        return out

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        cam = self._config.camera
        image_type, image_topic = image_input(cam)
        # Frames wait in the pairer for their detections: the depth only absorbs bursts.
        self._subs = [
            self.create_subscription(image_type, image_topic, self._on_image, image_qos(cam)),
            self.create_subscription(DetectionArray, 'detections', self._on_detections,
                                     RESULTS_QOS)]
        self._arrivals.clear()
        return super().on_activate(state)

    def _drop_pending(self) -> None:
        ask_flow.refuse_queued(self._worker)

    def _release(self) -> None:
        if self._service is not None:
            self.destroy_service(self._service)
            self._service = None
        if self._action is not None:
            self._action.destroy()
            self._action = None
        if self._desk is not None:
            self._desk.close()
            self._desk = None
        if self._wake_timer is not None:
            self.destroy_timer(self._wake_timer)
            self._wake_timer = None
        # Lets a description, an answer or a frame in flight finish.
        with self._worker.paused(), self._frames.paused():
            for pub in self._pubs.values():
                self.destroy_lifecycle_publisher(pub)
            self._pubs = {}
            pipeline, self._pipeline = self._pipeline, None
            if pipeline is not None:
                pipeline.close()
        if self._pairs is not None:
            self._pairs.clear()

    def destroy_node(self) -> None:
        self._frames.stop()
        super().destroy_node()

    # -------------------------------------------------------------------- intake
    def _on_image(self, msg) -> None:
        self._arrivals.note(time.monotonic())
        if not self._image_ok(msg):
            return
        pairs = self._pairs
        if pairs is not None and pairs.add_image(msg):
            self._frames.tick()

    def _on_detections(self, msg: DetectionArray) -> None:
        pairs = self._pairs
        if pairs is not None and pairs.add_detections(msg):
            self._frames.tick()

    # --------------------------------------------------------------- frame thread
    def _frame_work(self) -> None:
        pairs, pipeline = self._pairs, self._pipeline
        try:
            pair = pairs.take_newest() if pairs is not None else None
        except MrMllmError as e:
            self._errors.add('image', str(e))
            return
        if pair is None:
            return
        self._paired_stats.add(0.0)
        desk = self._desk
        if desk is not None:  # questions waiting for a fresh frame look again
            desk.frame_arrived()
        if pipeline is None:
            return
        update = pipeline.on_frame(*pair, time.monotonic())
        self._publish_alerts(update.alerts)
        if update.step_due:
            self._worker.tick()

    # --------------------------------------------------------------- MLLM thread
    def _mllm_work(self) -> None:
        pipeline = self._pipeline
        if pipeline is None:
            return
        try:
            step = pipeline.step(time.monotonic(), clock=time.monotonic)
        except StepFailed as e:
            self._backend_errors += 1
            self._last_error = str(e)
            self.get_logger().error(f'scene reasoning failed, frame skipped; next try in '
                                    f'{e.retry_in_s:.0f} s: {e}')
            return
        if step is None:
            return
        result = step.reasoning
        if pipeline.reinforces:
            self._pubs['refined'].publish(conv.detection_array_msg(result.refined))
        self._pubs['description'].publish(conv.scene_description_msg(result.description))
        self._describe_stats.add(step.elapsed_ms)
        self._age_stats.add((self.get_clock().now().nanoseconds - step.frame.stamp_ns) / 1e6)
        self._publish_alerts(result.alerts)

    def _publish_alerts(self, alerts) -> None:
        pub = self._pubs.get('alerts')
        for a in alerts:
            self.get_logger().warning(f'alert [{a.severity.name}] {a.rule}: {a.message}')
            if pub is not None:
                pub.publish(conv.alert_msg(a))

    # ----------------------------------------------------------------------- VQA
    async def _on_ask(self, request: AskScene.Request, response: AskScene.Response):
        return await ask_service.serve(self._desk, request, response, self._vqa_stats)

    def _ask_state(self):
        """(pipeline, frames, config) for a question, or why it cannot be asked."""
        pipeline, pairs = self._pipeline, self._pairs
        if pipeline is None or pairs is None or not self._subs:
            return 'scene_node is not active'
        if not pipeline.has_mllm:
            return 'no MLLM configured (mllm.backend is none)'
        return pipeline, pairs, self._config

    def _answer_job(self, job: VqaJob) -> None:  # on the MLLM thread
        pairs = self._pairs
        answer_job(job, lambda stamp: pairs.lookup(stamp),
                   lambda *question: self._pipeline.answer(*question),
                   lambda e: self.get_logger().error(f'VQA: {e!r}'),
                   received_at=pairs.received_at if pairs is not None else None)

    # --------------------------------------------------------------- diagnostics
    def _on_diagnostics_timer(self) -> None:
        pipeline = self._pipeline
        model, warning = pipeline.model_name if pipeline is not None else '', ''
        if pipeline is not None and self._subs:
            if self._arrivals.last is None:
                # Not a stale camera but none yet (a graph started before its driver):
                # a WARN in diagnostics, not a CRITICAL alert every max_age_s.
                warning = f'no image yet on {self._subs[0].topic_name}'
            else:
                self._publish_alerts(pipeline.stale_alerts(
                    time.monotonic(), self._arrivals, self.get_namespace()))
        values = {
            'intake_rate_hz': f'{self._paired_stats.rate_hz():.2f}',
            'frames_paired': str(self._paired_stats.count),
            'description_rate_hz': f'{self._describe_stats.rate_hz(horizon_s=60.0):.3f}',
            'description_latency_ms_p50': f'{self._describe_stats.percentile(50):.0f}',
            'descriptions': str(self._describe_stats.count),
            # how old the described frame was when its description went out (stamp vs
            # this node's clock): what a reader of scene_description gets
            'description_age_ms_last': f'{self._age_stats.last():.0f}',
            'description_age_ms_p50': f'{self._age_stats.percentile(50):.0f}',
            'description_age_ms_p95': f'{self._age_stats.percentile(95):.0f}',
            'vqa_queue_depth': str(self._worker.pending()),
            'vqa_in_flight': str(self._desk.in_flight() if self._desk is not None else 0),
            'vqa_goals_rejected_busy': str(self._action.rejected
                                           if self._action is not None else 0),
            'vqa_latency_ms_p50': f'{self._vqa_stats.percentile(50):.0f}',
            'vqa_answered': str(self._vqa_stats.count),
            'backend_errors': str(self._backend_errors),
            'mllm_model': model,
        }
        if pipeline is not None:
            values.update((f'mllm_steps: {k}', str(n)) for k, n in pipeline.step_counts().items())
            values.update((f'alerts: {rule}', str(n))
                          for rule, n in pipeline.alert_counts().items())
            values.update((f'looker: {kind}', str(n))
                          for kind, n in pipeline.looker_counts().items())
        self._publish_status('scene', pipeline is not None, 'describing', model, values,
                             warning)


def main(args=None) -> int:
    return run_node(SceneNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
