"""The deterministic baseline, `mllm.backend: template`: no model at all. Descriptions
and answers are the grounding plan's template sentences (core.reasoning.grounding_plan): the
detections grouped by class, counted, and placed by region words ("Two ties are at the
center bottom."). It is the floor any model must beat in `mr-mllm eval grounding`, and
serves robots that have no MLLM.

It has no opinion on anything else: yes/no checks return 0.5 and judgements/labels are
empty, so run it with reinforce.enabled false (a P(yes) of 0.5 would move uncertain scores
towards 0.5) and without alerts.mllm_judgement."""

from __future__ import annotations

from typing import Sequence

from ..config import Config
from ..types import Generation
from . import streaming
from .backend import MllmRequest


class TemplateBackend:
    name = 'template (no model)'
    sees_images = False
    #: the grounding plan writes every word itself (no model calls)
    writes_text = False

    def __init__(self, config: Config | None = None):
        self.config = config

    def generate(self, request: MllmRequest) -> Generation:
        streaming.check(request.stream)  # nothing to stream: the plan writes the words
        return Generation(text=request.answer_prefix)

    def yes_probability(self, requests: Sequence[MllmRequest]) -> list[float]:
        return [0.5] * len(requests)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        """Nothing to free."""
