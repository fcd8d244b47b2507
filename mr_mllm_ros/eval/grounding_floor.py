"""The floor of `mr-mllm eval grounding`: the template backend (no model) describes the
same detections the MLLM described, so the MLLM's grounded-description scores sit beside
those of a baseline that has no model at all."""

from __future__ import annotations

from typing import Iterable

from ..core.config import Config, with_changes
from ..core.mllm.template_backend import TemplateBackend
from ..core.reasoning.scene import SceneReasoner
from ..core.types import DetectionSet
from . import metrics


def template_descriptions(config: Config, detection_sets: Iterable[DetectionSet]) -> dict:
    """Agreement (metrics.phrase_class_agreement) and texts of the template's
    descriptions of each detection set that has objects."""
    config = with_changes(config, {'mllm.backend': 'template', 'fusion.adapter_path': ''})
    reasoner = SceneReasoner(config, TemplateBackend(config))
    citations, texts = [], []
    for ds in detection_sets:
        if not len(ds):
            continue
        sd = reasoner.describe(None, ds)
        texts.append(sd.text)
        citations += [(p.text, ds[i].class_name)
                      for p in sd.grounded_text.phrases for i in p.indices]
    return {'model': TemplateBackend.name, 'images': len(texts),
            'agreement': metrics.phrase_class_agreement(citations), 'texts': texts}
