"""scene_node's `ask_scene` service: one request through the node's AskDesk
(ros/ask_flow.py: the checks, a fresh frame, the bounded queue, the MLLM thread; the
`ask_scene` action shares all of it), then the response filled from how it ended.

The service callback is a coroutine: it awaits the answer without holding the executor,
which meanwhile keeps taking images, timers, other requests and goals. A timeout also
stops the generation (within one decoding step), so the MLLM is free for the next one.
"""

from __future__ import annotations

from ..core.runtime.stats import RollingStats
from . import conversions as conv
from .ask_flow import AskDesk, Question, fill_answer


async def serve(desk: AskDesk, request, response, stats: RollingStats):
    """One AskScene call. Answered questions add their latency (ms) to `stats`."""
    out = await desk.ask(Question(request.question, float(request.timeout_s),
                                  conv.stamp_to_ns(request.stamp), float(request.max_age_s)))
    fill_answer(response, out)
    if out.success:
        stats.add(out.latency_s * 1e3)
    return response
