"""MLLM -> perception: the MLLM's half of the mutual reinforcement (MR-MLLM).

1. Verify: boxes in the uncertain score band get a batched one-token yes/no check (an
   image crop for backends that see images, the perception context otherwise). P(yes)
   re-scores the box; confirmed boxes are marked `verified`, rejected ones dropped.
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
import numpy as np

from .config import Config
from .detection import Detector
from .mllm import MllmBackend
from .prompts import PromptBuilder
from .types import Detection, DetectionSet, Frame, GroundedText, Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refinement:
    refined: DetectionSet
    #: detections the MLLM rejected (dropped from `refined`)
    rejected: tuple[Detection, ...] = ()
    #: index in the input set -> P(yes) of every box that was checked
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


class Reinforcer:
    def __init__(self, config: Config, backend: MllmBackend, prompts: PromptBuilder,
                 redetector: Detector | None = None):
        self.config = config
        self.backend = backend
        self.prompts = prompts
        self.redetector = redetector

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
        return dict(zip(band, self.backend.yes_probability(requests)))

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
