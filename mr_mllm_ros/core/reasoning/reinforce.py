"""MLLM -> perception: the MLLM's half of the mutual reinforcement (MR-MLLM).

1. Verify: boxes in the uncertain score band get a batched one-token yes/no check (an
   image crop for backends that see images, the perception context otherwise). P(yes)
   re-scores the box; confirmed boxes are marked `verified`, rejected ones dropped. With
   a fusion adapter loaded, its re-scoring head's P(right) is blended in
   (reinforce.fusion_weight).
2. Label: boxes with an "unknown" label (or below label_max_score) get an
   open-vocabulary name from the MLLM (class_id -1, the detector's label kept as
   original_class_name).
3. Re-detect: objects the description names without citing a box are searched by an
   open-vocabulary detector (YOLO-World / YOLOE `set_classes`) when one is configured;
   found boxes are added with source=mllm.
Every change is visible in the output (source, verified, original class/score).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..config import Config
from ..detection import Detector
from ..mllm import MllmBackend
from ..types import Detection, DetectionSet, Frame, GroundedText, Source
from .prompts import PromptBuilder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refinement:
    refined: DetectionSet
    #: detections the MLLM rejected (dropped from `refined`)
    rejected: tuple[Detection, ...] = ()
    #: index in the input set -> P(right) of every box that was checked: the MLLM's P(yes),
    #: blended with the fusion adapter's re-scoring head when one is loaded
    checked: dict[int, float] = field(default_factory=dict)
    #: indices in `refined` of boxes that got an open-vocabulary label
    relabeled: tuple[int, ...] = ()


def crop_around(image: np.ndarray, det: Detection, margin: float = 0.15) -> np.ndarray:
    """The box plus a margin of context, for verification by a VLM."""
    h, w = image.shape[:2]
    b = det.box
    mx, my = b.width * margin, b.height * margin
    x1, y1 = int(max(0, b.x1 - mx)), int(max(0, b.y1 - my))
    x2, y2 = int(min(w, b.x2 + mx)), int(min(h, b.y2 + my))
    if x2 <= x1 or y2 <= y1:
        return image
    return np.ascontiguousarray(image[y1:y2, x1:x2])


_LABEL_RE = re.compile(r"[A-Za-z][A-Za-z \-']{0,40}")


def clean_label(text: str) -> str:
    """First one or two words of a free-text answer, lower case ('A forklift.' ->
    'forklift'); '' when nothing usable."""
    m = _LABEL_RE.search(text)
    if not m:
        return ''
    words = [w for w in m.group(0).lower().split() if w not in ('a', 'an', 'the', 'it', 'is')]
    return ' '.join(words[:2])


#: (frame, detections) -> {detection index: P(the box is right)}
Rescorer = Callable[[Frame, DetectionSet], dict[int, float]]


class Reinforcer:
    def __init__(self, config: Config, backend: MllmBackend, prompts: PromptBuilder,
                 redetector: Detector | None = None, rescorer: Rescorer | None = None):
        self.config = config
        self.backend = backend
        self.prompts = prompts
        self.redetector = redetector
        #: the fusion adapter's re-scoring head (SceneReasoner.rescore) when one is loaded:
        #: its P(right) is blended into the check of uncertain boxes (fusion_weight)
        self.rescorer = rescorer

    def _image_for(self, frame: Frame | None, det: Detection) -> np.ndarray | None:
        if frame is None or not self.backend.sees_images:
            return None
        return crop_around(frame.image, det)

    def refine(self, frame: Frame | None, ds: DetectionSet) -> Refinement:
        """Verification of uncertain boxes and labels for unknown ones (before the
        description, so it cites the refined set)."""
        rc = self.config.reinforce
        checked = self._verify(frame, ds)
        keep: list[Detection] = []
        rejected: list[Detection] = []
        relabeled: list[int] = []
        for i, d in enumerate(ds):
            if i in checked:
                p = checked[i]
                if p < rc.reject_probability:
                    rejected.append(d)
                    continue
                d = d.replace(score=(1 - rc.mllm_weight) * d.score + rc.mllm_weight * p,
                              verified=p >= rc.accept_probability, original_score=d.score)
            if d.class_name in rc.unknown_labels or d.score < rc.label_max_score:
                label = clean_label(self.backend.generate(
                    self.prompts.label(ds, i, self._image_for(frame, d))).text)
                if label and label != d.class_name:
                    d = d.replace(class_id=-1, class_name=label,
                                  original_class_name=d.class_name)
                    relabeled.append(len(keep))
            keep.append(d)
        return Refinement(ds.with_detections(keep), tuple(rejected), checked,
                          tuple(relabeled))

    def _verify(self, frame: Frame | None, ds: DetectionSet) -> dict[int, float]:
        """Index -> P(yes) for the boxes in the uncertain band, in one batched call."""
        rc = self.config.reinforce
        band = [i for i, d in enumerate(ds) if d.source == Source.DETECTOR
                and not d.verified and rc.verify_min_score <= d.score < rc.verify_max_score]
        band = sorted(band, key=lambda i: -ds[i].score)[:rc.max_checks]
        if not band:
            return {}
        requests = [self.prompts.verify(ds, i, self._image_for(frame, ds[i])) for i in band]
        checked = dict(zip(band, self.backend.yes_probability(requests)))
        w = rc.fusion_weight
        if self.rescorer is None or frame is None or w <= 0:
            return checked
        # Mutual reinforcement, both halves: the adapter's head has seen the box's pixels
        # (and the scene) through the same queries that make the soft tokens.
        head = self.rescorer(frame, ds)
        return {i: (1 - w) * p + w * head[i] if i in head else p for i, p in checked.items()}

    def redetect(self, frame: Frame | None, ds: DetectionSet,
                 description: GroundedText | None) -> list[Detection]:
        """Boxes for objects the description names without citing one, from the
        open-vocabulary detector (after the description)."""
        if self.redetector is None or frame is None or description is None \
                or not self.redetector.supports_text_classes():
            return []
        names = unresolved_names(description)
        if not names:
            return []
        self.redetector.set_text_classes(names)
        added = []
        for d in self.redetector.detect(frame):
            if any(d.box.iou(c.box) > 0.5 for c in ds):
                continue  # the detector already has it
            added.append(d.replace(source=Source.MLLM, class_id=-1))
        return added


def unresolved_names(description: GroundedText) -> list[str]:
    """Phrases the MLLM wrote as objects but could not cite (no box for them)."""
    names = []
    for problem in description.problems:
        m = re.match(r"phrase '(.+)' (has no <objects> list|cites no existing object)",
                     problem)
        if m:
            label = clean_label(m.group(1))
            if label and label not in names:
                names.append(label)
    return names
