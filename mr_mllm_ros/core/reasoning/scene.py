"""Scene reasoning on one frame: grounded description, visual question answering and the
MLLM judgement (every MLLM prompt of a reasoning step is built here or in core.reasoning.reinforce).

The same object serves scene_node, `mr-mllm describe`, the demo and replay: prompt from
detections (core.reasoning.prompts) -> grounding plan worded by the backend, or the backend's free
answer -> grounding parser (core.reasoning.grounding) -> finishing checks
(core.reasoning.grounding_plan), so every published phrase names the objects it cites.

With `fusion.adapter_path` set, a trained shared-query fusion adapter (core.fusion) turns
the frame and the prompt's detections into K soft tokens for every description and
answer; outputs then name the adapter (SceneDescription.fusion_adapter, Answer.mllm_model).
The adapter's prompt template (one with a {soft_tokens} field, recorded in adapter.json)
is used unless mllm.prompt_template has that field itself. Unset = prompt-only, exactly
as without fusion."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

from ..config import Config
from ..mllm import MllmBackend, create_backend
from ..mllm.streaming import TokenStream
from ..types import Answer, DetectionSet, Frame, GroundedText, SceneDescription
from . import grounding_plan as plan
from . import looks_answers
from .grounding import parse_grounded
from .prompts import PromptBuilder, PromptTemplate, load_template
from .vocabulary import load_vocabulary

log = logging.getLogger(__name__)

NO_OBJECTS_TEXT = 'No objects detected.'


def takes_soft_tokens(template: PromptTemplate) -> bool:
    """True when the describe and answer tasks have a {soft_tokens} field."""
    return all('{soft_tokens}' in template.tasks[t].user for t in ('describe', 'answer'))


def resolve_adapter_path(config: Config) -> Path:
    """fusion.adapter_path as given (absolute, or relative to the working directory) when
    it exists, else relative to models_dir."""
    given = Path(os.path.expanduser(config.fusion.adapter_path))
    return given if given.is_absolute() or given.exists() \
        else config.resolve_model_path(config.fusion.adapter_path)


class SceneReasoner:
    def __init__(self, config: Config, backend: MllmBackend | None = None):
        self.config = config
        self.backend = backend if backend is not None else create_backend(config)
        if self.backend is None:
            raise ValueError('SceneReasoner needs an MLLM backend (mllm.backend is none)')
        template = load_template(config.mllm.prompt_template)
        #: the loaded adapter (core.fusion.FusionRuntime) or None: prompt-only
        self.fusion = None
        if config.fusion.adapter_path:
            from ..fusion import FusionRuntime
            self.fusion = FusionRuntime(resolve_adapter_path(config), self.backend)
            if not takes_soft_tokens(template):
                log.info('fusion adapter %s: prompt template %s (the one it was trained with; '
                         '%s has no {soft_tokens} field)', config.fusion.adapter_path,
                         self.fusion.config.prompt_template, config.mllm.prompt_template)
                template = load_template(self.fusion.config.prompt_template)
        self.prompts = PromptBuilder(template, config.mllm, self.backend.count_tokens,
                                     self.backend.sees_images)
        self.vocabulary = load_vocabulary()
        #: what outputs say about the adapter ('' = prompt-only)
        self.fusion_adapter = config.fusion.adapter_path if self.fusion is not None else ''

    @property
    def model_name(self) -> str:
        return self.backend.name

    def soft_tokens(self, frame: Frame | None, detections: DetectionSet,
                    question: str = ''):
        """(tokens, hidden) fusion soft tokens for the frame, the detections the prompt lists
        and the objects the question names; None (no adapter, or no image to look at)."""
        if self.fusion is None or frame is None:
            return None
        from ..fusion import mentioned_objects
        return self.fusion.soft_tokens(frame.image, detections,
                                       self.prompts.select_objects(detections),
                                       mentioned_objects(question))

    def rescore(self, frame: Frame, detections: DetectionSet) -> dict[int, float]:
        """Detection index -> P(right) from the adapter's re-scoring head (the perception
        side of the mutual reinforcement); {} without an adapter."""
        if self.fusion is None:
            return {}
        return self.fusion.rescore(frame.image, detections,
                                   self.prompts.select_objects(detections))

    def describe(self, frame: Frame | None, detections: DetectionSet) -> SceneDescription:
        t0 = time.perf_counter()
        image = frame.image if frame is not None else None
        if self.fusion is not None and frame is not None and (
                self.backend.sees_images or self.prompts.select_objects(detections)):
            soft = self.soft_tokens(frame, detections)
        else:
            soft = None
        t_fusion = time.perf_counter()
        request = self.prompts.describe(detections, image, soft_tokens=soft)
        if not request.extra['object_indices'] and not self.backend.sees_images:
            # A text-only model given no objects has nothing to describe: anything it
            # wrote would be invented. Say so instead of calling it.
            return SceneDescription(GroundedText(NO_OBJECTS_TEXT, NO_OBJECTS_TEXT),
                                    detections, detections.model_name,
                                    f'none ({self.model_name} not called: no detections)')
        chosen = request.extra['object_indices']
        if chosen:
            raw, gens = plan.word_plan(self.backend, request,
                                       plan.plan_mentions(detections, chosen, self.vocabulary),
                                       detections, self.vocabulary,
                                       self.config.mllm.connector_max_tokens)
            gen = plan.merge_generations(gens)
        else:  # a VLM with no detections: its own words, nothing to cite
            gen = self.backend.generate(request)
            raw = gen.text
        grounded = self._finish(raw, chosen, detections, planned=bool(chosen))
        timings = dict(gen.timings_ms)
        if soft is not None:
            timings['fusion'] = (t_fusion - t0) * 1e3
        timings['describe_total'] = (time.perf_counter() - t0) * 1e3
        return SceneDescription(grounded, detections, detections.model_name, self.model_name,
                                self.fusion_adapter if soft is not None else '',
                                gen.prompt_tokens, gen.generated_tokens, timings)

    def answer(self, frame: Frame | None, detections: DetectionSet, question: str,
               stream: TokenStream | None = None) -> Answer:
        """Count and presence questions are answered from the detections (the plan cites
        them, the model words the rest); other questions get the model's free answer,
        finished so it is one grounded sentence (the template describes the objects the
        question names, else all). `stream`: the answer's raw text as it is written (in
        the grounding grammar; core.reasoning.vqa makes it readable), stage 'thinking'
        when the MLLM is called, and cancel (GenerationCancelled)."""
        t0 = time.perf_counter()
        far = plan.distance_question(question, detections, self.vocabulary)
        if far is not None:  # 'how far ...?': from the numbers (depth), grounded to the boxes
            grounded = plan.distance_answer(far, detections, self.vocabulary)
            if stream is not None:
                stream.emit(grounded.raw_text)
            return Answer(question, grounded, detections, f'none ({self.model_name} not '
                          'called: distances from depth)', time.perf_counter() - t0)
        looks = None if self.backend.sees_images else \
            looks_answers.appearance_question(question, detections, self.vocabulary)
        if looks is not None and (not looks.indices or any(detections[i].looks_like
                                                           for i in looks.indices)):
            # 'what is the person holding?': the looker's words
            grounded = looks_answers.appearance_answer(looks, detections, self.vocabulary)
            if stream is not None:
                stream.emit(grounded.raw_text)
            return Answer(question, grounded, detections, f'none ({self.model_name} not '
                          'called: the looker\'s labels)', time.perf_counter() - t0)
        soft = self.soft_tokens(frame, detections, question)
        request = self.prompts.answer(detections, question,
                                      frame.image if frame is not None else None,
                                      soft_tokens=soft)
        if stream is not None:
            stream.check()
            stream.stage('thinking')
        chosen = request.extra['object_indices']
        counted = plan.count_question(question, detections, self.vocabulary)
        if counted is not None and not counted.indices:
            text = plan.no_objects_sentence(counted)
            grounded = GroundedText(text, text)
            if stream is not None:
                stream.emit(text)
        elif counted is not None or not getattr(self.backend, 'writes_text', True):
            if counted is None:
                named = self.vocabulary.mentioned_classes(
                    question, sorted({detections[i].class_name for i in chosen}))
                indices = [i for i in chosen if detections[i].class_name in named] or chosen
            else:
                indices = counted.indices
            mentions = plan.plan_mentions(detections, indices, self.vocabulary,
                                          counted=counted is not None
                                          and counted.kind == 'count')
            lead = 'Yes, ' if counted is not None and counted.kind == 'presence' else ''
            raw, _ = plan.word_plan(self.backend, request, mentions, detections,
                                    self.vocabulary, self.config.mllm.connector_max_tokens,
                                    lead, stream)
            grounded = self._finish(raw, indices, detections, planned=True)
        else:
            if stream is not None:
                stream.emit(request.answer_prefix)  # backends stream only what follows it
                request = dataclasses.replace(request, stream=stream)
            grounded = self._finish(self.backend.generate(request).text, chosen, detections)
        model = self.model_name if soft is None \
            else f'{self.model_name} + fusion adapter {self.fusion_adapter}'
        return Answer(question, grounded, detections, model, time.perf_counter() - t0)

    def _finish(self, raw: str, allowed, detections: DetectionSet,
                planned: bool = False) -> GroundedText:
        """`planned`: raw is the grounding plan's (never cut, core.reasoning.grounding_plan
        .finish), else the model's own reply."""
        grounded = parse_grounded(raw, allowed, [d.class_name for d in detections])
        return plan.finish(grounded, detections, self.vocabulary, planned)

    def judge(self, frame: Frame, detections: DetectionSet,
              min_probability: float) -> tuple[float, str]:
        """The "anything unusual or hazardous?" judgement: (P(yes), the model's short
        reason). The reason is generated only when P(yes) >= min_probability, the only
        case where it can be shown."""
        image = frame.image if self.backend.sees_images else None
        request = self.prompts.judge(detections, image)
        p_yes = self.backend.yes_probability([request])[0]
        reason = self.backend.generate(request).text.strip() if p_yes >= min_probability \
            else ''
        return p_yes, reason

    def close(self) -> None:
        self.backend.close()
