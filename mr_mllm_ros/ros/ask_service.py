"""scene_node's `ask_scene` service: check the request (core.reasoning.schedule.validate_question),
queue it for the node's MLLM thread (bounded: full -> an immediate `busy`) and await the
answer without holding the executor, then fill the response.

The service callback is a coroutine: the MLLM thread (or a timeout timer) completes an
rclpy Future, which wakes the executor; meanwhile the executor keeps taking images,
timers and other requests.
"""

from __future__ import annotations

import time

from rclpy.task import Future

from ..core.config import Config
from ..core.pipeline import ScenePipeline
from ..core.reasoning.schedule import VqaJob, validate_question
from ..core.runtime.inference_worker import InferenceWorker
from ..core.runtime.stats import RollingStats
from . import conversions as conv


async def serve(node, worker: InferenceWorker, pipeline: ScenePipeline | None,
                config: Config, request, response, stats: RollingStats):
    """One AskScene call; `pipeline` None: the node is not active. Answered questions add
    their latency (ms) to `stats`."""
    received = time.monotonic()
    response.mllm_model = pipeline.model_name if pipeline is not None else ''

    def fail(reason: str):
        response.success, response.error = False, reason
        response.latency_s = time.monotonic() - received
        return response

    if pipeline is None:
        return fail('scene_node is not active')
    if not pipeline.has_mllm:
        return fail('no MLLM configured (mllm.backend is none)')
    reason = validate_question(request.question, float(request.timeout_s),
                               config.scene.max_question_chars)
    if reason:
        return fail(reason)
    timeout = min(float(request.timeout_s), config.scene.vqa_max_timeout_s)
    job = VqaJob(request.question, conv.stamp_to_ns(request.stamp), received + timeout,
                 received)
    if not await answered(node, worker, job, timeout, config.scene.vqa_queue_size):
        return fail('busy' if not job.done.is_set() and not job.cancelled
                    else f'timeout after {timeout:.1f} s')
    if job.answer is None:
        return fail(job.error or 'no answer')
    fill_answer(response, job)
    stats.add(response.latency_s * 1e3)
    return response


async def answered(node, worker: InferenceWorker, job: VqaJob, timeout: float,
                   queue_size: int) -> bool:
    """Queue `job` and await it, for at most `timeout` s, without holding the executor:
    True when the MLLM thread finished it (answer or error), False when the queue was full
    (job not done, not cancelled) or the time ran out (cancelled)."""
    # set_result wakes the executor only through a done callback (rclpy schedules it as a
    # task): hence the no-op callback. Either side may finish first.
    finished: Future = Future(executor=node.executor)
    finished.add_done_callback(lambda _: None)

    def finish() -> None:
        if not finished.done():
            finished.set_result(None)
    job.on_done = finish
    if not worker.submit(job, queue_size):
        return False
    timer = node.create_timer(timeout, finish)
    try:
        await finished
    finally:
        node.destroy_timer(timer)
    if not job.done.is_set():
        job.cancelled = True
        return False
    return True


def fill_answer(response, job: VqaJob):
    """The AskScene response of a job the MLLM thread answered."""
    a = job.answer
    response.success = True
    response.answer, response.raw_answer = a.grounded_text.text, a.grounded_text.raw_text
    response.grounding = conv.phrases_to_msg(a.grounded_text.phrases)
    response.detections = [conv.detection_to_msg(d) for d in a.detections]
    response.image_stamp = conv.ns_to_stamp(a.detections.stamp_ns)
    response.mllm_model = a.mllm_model
    response.latency_s = time.monotonic() - job.received
    return response


def refuse_queued(worker: InferenceWorker) -> None:
    """Answer whoever is still waiting in the queue: the node is going down."""
    for job in worker.drain():
        job.error = 'node is shutting down'
        job.finish()
