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
0. Look (before 1-2, when the looker ran: core.looking): the looker's votes on every box
   it looked at - verify, relabel to another COCO class, reject (a box that shows
   something else; it comes back under the looker's name when that is sure), name
   unknown-labelled boxes - and an object for what the whole frame shows that no box
   explains (core.looking.votes says how each is decided).
Every change is visible in the output (source, verified, original class/score).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..alerts.conditions import LOOKER_REJECTS, MLLM_REJECTS
from ..config import Config
from ..detection import Detector
from ..looking.votes import VOTE_KINDS, Vote, coco_class_id, frame_object, vote_box
from ..mllm import MllmBackend
from ..types import Detection, DetectionSet, Frame, GroundedText, Source
from .prompts import PromptBuilder

if TYPE_CHECKING:
    from ..looking.looker import Looker, Looks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refinement:
    refined: DetectionSet
    #: detections the MLLM rejected (dropped from `refined`)
    rejected: tuple[Detection, ...] = ()
    #: who rejected each of `rejected`: 'the looker' (its pixels) or 'MLLM verification'
    rejected_by: tuple[str, ...] = ()
    #: index in the input set -> P(right) of every box that was checked: the MLLM's P(yes),
    #: blended with the fusion adapter's re-scoring head when one is loaded
    checked: dict[int, float] = field(default_factory=dict)
    #: indices in `refined` of boxes that got an open-vocabulary label
    relabeled: tuple[int, ...] = ()
    #: the looker's votes: index in the input set -> Vote (the boxes it judged)
    votes: dict[int, Vote] = field(default_factory=dict)
    #: objects the looker added: what the frame shows and no box explains
    looker_added: tuple[Detection, ...] = ()

    def looker_counts(self) -> dict[str, int]:
        """Boxes the looker verified, relabelled, rejected, named (unknown labels) or was
        unsure of, and objects it added for the frame ('added')."""
        counts = {k: 0 for k in VOTE_KINDS}
        for v in self.votes.values():
            counts[v.kind] += 1
        counts['added'] = len(self.looker_added)
        return counts


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
                 redetector: Detector | None = None, rescorer: Rescorer | None = None,
                 looker: 'Looker | None' = None):
        self.config = config
        #: the looker (core.looking.Looker) whose Looks `refine` may get: its mapping and
        #: thresholds decide the votes
        self.looker = looker
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

    def refine(self, frame: Frame | None, ds: DetectionSet,
               looks: 'Looks | None' = None) -> Refinement:
        """The looker's votes (with `looks`, what the looker saw in this frame), then
        verification of uncertain boxes and labels for unknown ones (before the
        description, so it cites the refined set)."""
        rc = self.config.reinforce
        votes, ds, dropped, renamed = self._looker_votes(ds, looks)
        checked = self._verify(frame, ds, skip=dropped)
        keep: list[Detection] = []
        rejected: list[Detection] = []
        rejected_by: list[str] = []
        relabeled: list[int] = []
        for i, d in enumerate(ds):
            if i in dropped:
                rejected.append(dropped[i])
                rejected_by.append(LOOKER_REJECTS)
                if i in renamed:
                    keep.append(renamed[i])
                continue
            if i in checked:
                p = checked[i]
                if p < rc.reject_probability:
                    rejected.append(d)
                    rejected_by.append(MLLM_REJECTS)
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
        refined, added = self._with_frame_object(ds.with_detections(keep), looks)
        return Refinement(refined, tuple(rejected), tuple(rejected_by), checked,
                          tuple(relabeled), votes, added)

    def apply_looks(self, looks: 'Looks') -> DetectionSet:
        """The looker's votes alone, no MLLM call (questions take them on their frame)."""
        _, ds, dropped, renamed = self._looker_votes(looks.detections, looks)
        keep = [renamed[i] if i in dropped else d for i, d in enumerate(ds)
                if i not in dropped or i in renamed]
        return self._with_frame_object(ds.with_detections(keep), looks)[0]

    def _with_frame_object(self, refined: DetectionSet, looks: 'Looks | None'):
        """(the set + the object for what the whole frame shows that no box explains, the
        objects added)."""
        if looks is None or self.looker is None:
            return refined, ()
        extra = frame_object(looks, refined, self.looker.mapping, self.config.looker)
        if extra is None:
            return refined, ()
        return refined.with_detections(refined.detections + (extra,)), (extra,)

    def _looker_votes(self, ds: DetectionSet, looks: 'Looks | None'):
        """(votes, the set with verified / relabelled / named boxes changed in place,
        index -> rejected detection, index -> its looker-named replacement). `ds` is the
        set the looker saw (looks.detections, perhaps with more timings)."""
        if looks is None or self.looker is None:
            return {}, ds, {}, {}
        lc, mapping = self.config.looker, self.looker.mapping
        votes: dict[int, Vote] = {}
        changed = list(ds.detections)
        dropped: dict[int, Detection] = {}
        renamed: dict[int, Detection] = {}
        for i, d in enumerate(ds):
            vote = vote_box(i, ds, looks, mapping, lc, self.config.reinforce.unknown_labels)
            if vote is None:
                continue
            votes[i] = vote
            if vote.kind == 'verified':
                changed[i] = d.replace(verified=True)
            elif vote.kind in ('relabelled', 'named'):
                changed[i] = d.replace(class_name=vote.label,
                                       class_id=coco_class_id(vote.label, d),
                                       original_class_name=d.class_name)
            elif vote.kind == 'rejected':
                dropped[i] = d
                if vote.duplicate_of < 0 and vote.probability >= lc.name_min_probability:
                    renamed[i] = d.replace(class_id=-1, class_name=vote.label,
                                           score=round(vote.probability, 4),
                                           source=Source.LOOKER, verified=False,
                                           original_class_name=d.class_name,
                                           original_score=d.score)
        return votes, ds.with_detections(changed), dropped, renamed

    def _verify(self, frame: Frame | None, ds: DetectionSet,
                skip: 'dict[int, Detection] | None' = None) -> dict[int, float]:
        """Index -> P(yes) for the boxes in the uncertain band, in one batched call."""
        rc = self.config.reinforce
        # A model that sees neither the image nor the adapter's soft tokens (the rescorer
        # comes with the adapter) answers from the box's words: no evidence about the box.
        if not (self.backend.sees_images or self.rescorer is not None or rc.verify_blind):
            return {}
        band = [i for i, d in enumerate(ds) if d.source == Source.DETECTOR
                and not d.verified and rc.verify_min_score <= d.score < rc.verify_max_score
                and not (skip and i in skip)]
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
