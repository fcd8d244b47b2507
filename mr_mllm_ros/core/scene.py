"""Scene reasoning on one frame: grounded description and visual question answering.

The same object serves scene_node, `mr-mllm describe`, the demo and replay: prompt from
detections (core.prompts) -> backend -> grounding parser (core.grounding)."""

from __future__ import annotations

import time

from .config import Config
from .grounding import parse_grounded
from .mllm import MllmBackend, create_backend
from .prompts import PromptBuilder, load_template
from .types import Answer, DetectionSet, Frame, GroundedText, SceneDescription

NO_OBJECTS_TEXT = 'No objects detected.'


class SceneReasoner:
    def __init__(self, config: Config, backend: MllmBackend | None = None):
        self.config = config
        self.backend = backend if backend is not None else create_backend(config)
        if self.backend is None:
            raise ValueError('SceneReasoner needs an MLLM backend (mllm.backend is none)')
        self.prompts = PromptBuilder(load_template(config.mllm.prompt_template), config.mllm,
                                     self.backend.count_tokens, self.backend.sees_images)
        self.fusion_adapter = ''

    @property
    def model_name(self) -> str:
        return self.backend.name

    def describe(self, frame: Frame | None, detections: DetectionSet) -> SceneDescription:
        t0 = time.perf_counter()
        request = self.prompts.describe(detections, frame.image if frame is not None else None)
        if not request.extra['object_indices'] and not self.backend.sees_images:
            # A text-only model given no objects has nothing to describe: anything it
            # wrote would be invented. Say so instead of calling it.
            return SceneDescription(GroundedText(NO_OBJECTS_TEXT, NO_OBJECTS_TEXT),
                                    detections, detections.model_name,
                                    f'none ({self.model_name} not called: no detections)')
        gen = self.backend.generate(request)
        grounded = parse_grounded(gen.text, request.extra['object_indices'],
                                  [d.class_name for d in detections])
        timings = dict(gen.timings_ms)
        timings['describe_total'] = (time.perf_counter() - t0) * 1e3
        return SceneDescription(grounded, detections, detections.model_name, self.model_name,
                                self.fusion_adapter, gen.prompt_tokens, gen.generated_tokens,
                                timings)

    def answer(self, frame: Frame | None, detections: DetectionSet, question: str) -> Answer:
        t0 = time.perf_counter()
        request = self.prompts.answer(detections, question,
                                      frame.image if frame is not None else None)
        gen = self.backend.generate(request)
        grounded = parse_grounded(gen.text, request.extra['object_indices'],
                                  [d.class_name for d in detections])
        return Answer(question, grounded, detections, self.model_name,
                      time.perf_counter() - t0)

    def close(self) -> None:
        self.backend.close()
