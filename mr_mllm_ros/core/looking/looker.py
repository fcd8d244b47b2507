"""The looker: pixels for the MLLM side. In the reasoning step (never per frame), one call
looks at the box crops (largest first, at most max_crops) and the whole frame with the
classifier, and at the person crops with the posture model; every detection it looked at
gets `looks_like` (its top ImageNet labels) and, for people, `posture`; the DetectionSet
gets `looks_like` of the whole frame. The probabilities stay in `Looks` for the
reinforcement's votes (core.looking.votes).

A crop that takes in another detected object may be about that object: the dining
table's crop is the whole photo of an espresso cup. Its `looks_like` leaves out the labels
of the other objects' classes (unless they are of its own class too), so nothing says "a
dining table is an espresso"; the votes read the full probabilities."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from ..config import Config, LookerConfig
from ..reasoning.vocabulary import canonical_class
from ..types import DetectionSet, Frame
from .classifier import ImageClassifier, square_crop
from .imagenet_coco import ImagenetCoco, load_mapping
from .posture import Posture, PostureEstimator, PostureSettings

log = logging.getLogger(__name__)

PERSON = 'person'
#: a crop may be about another detected object when their intersection is this share of
#: the smaller of the two boxes
OVERLAP_SHARE = 0.5


def shown_by_others(i: int, ds: DetectionSet) -> set[str]:
    """Classes of other detections the crop of detection i may be about."""
    return {canonical_class(other.class_name) for j, other in enumerate(ds)
            if j != i and other.box.overlap_share(ds[i].box) >= OVERLAP_SHARE}


@dataclass(frozen=True)
class Looks:
    """What the looker saw in one frame."""

    detections: DetectionSet                 # looks_like / posture filled in
    #: detection index -> (n_labels,) probabilities of its crop
    crop_probs: dict[int, np.ndarray] = field(default_factory=dict)
    frame_probs: np.ndarray | None = None    # of the whole frame
    postures: dict[int, Posture] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)


class Looker:
    def __init__(self, config: Config):
        lc = config.looker
        self.settings = lc
        self.classifier = ImageClassifier(config.resolve_model_path(lc.model),
                                          config.resolve_model_path(lc.labels), lc.threads)
        self.mapping: ImagenetCoco = load_mapping(self.classifier.labels, lc.mapping or None)
        self.posture = PostureEstimator(
            config.resolve_model_path(lc.posture_model), posture_settings(lc), lc.threads) \
            if lc.posture else None
        self.name = f'{config.looker.model} (LiteRT)'

    def look(self, frame: Frame, ds: DetectionSet) -> Looks:
        """Classify the crops (and the frame), estimate people's posture; the detections
        come back with what they look like."""
        lc = self.settings
        t0 = time.perf_counter()
        chosen = [i for i in sorted(range(len(ds)), key=lambda i: -ds[i].box.area)
                  if min(ds[i].box.width, ds[i].box.height) >= lc.min_crop_side][:lc.max_crops]
        squares = [square_crop(frame.image, ds[i].box, lc.crop_margin) for i in chosen]
        if lc.look_at_frame:
            squares.append(square_crop(frame.image, None, 0.0))
        t1 = time.perf_counter()
        probs = self.classifier.classify(squares) if squares else np.zeros((0, 0))
        t2 = time.perf_counter()
        crop_probs = {i: probs[k] for k, i in enumerate(chosen)}
        frame_probs = probs[-1] if lc.look_at_frame else None
        postures: dict[int, Posture] = {}
        if self.posture is not None:
            for k, i in enumerate(chosen):
                d = ds[i]
                if d.class_name == PERSON:
                    postures[i] = self.posture.estimate(
                        squares[k], d.box.width / max(d.box.height, 1e-6))
        t3 = time.perf_counter()
        dets = list(ds.detections)
        for i, p in crop_probs.items():
            dets[i] = dets[i].replace(looks_like=self._top(self._own_view(p, i, ds)))
        for i, p in postures.items():
            if p.label:
                dets[i] = dets[i].replace(posture=p.label, posture_score=round(p.score, 3))
        frame_looks = self._top(frame_probs) if frame_probs is not None else ()
        timings = {'looker_crop': (t1 - t0) * 1e3, 'looker_classify': (t2 - t1) * 1e3,
                   'looker_posture': (t3 - t2) * 1e3,
                   'looker_total': (time.perf_counter() - t0) * 1e3}
        looked = ds.with_detections(dets, looks_like=frame_looks)
        return Looks(looked, crop_probs, frame_probs, postures, timings)

    def _own_view(self, probs: np.ndarray, i: int, ds: DetectionSet) -> np.ndarray:
        """Detection i's crop probabilities with the labels of the other objects it shows
        set to 0, except labels of its own class (is or seen_with)."""
        members = self.mapping.seen_members
        drop = [members[c] for c in shown_by_others(i, ds) if c in members]
        if not drop:
            return probs
        own = members.get(canonical_class(ds[i].class_name))
        drop_at = np.concatenate(drop)
        if own is not None:
            drop_at = np.setdiff1d(drop_at, own)
        view = probs.copy()
        view[drop_at] = 0.0
        return view

    def _top(self, probs: np.ndarray) -> tuple[tuple[str, float], ...]:
        """The top_k labels at min_probability or above."""
        return tuple((n, p) for n, p in self.classifier.top(probs, self.settings.top_k)
                     if p >= self.settings.min_probability)


def posture_settings(lc: LookerConfig) -> PostureSettings:
    return PostureSettings(lc.posture_min_keypoint_score, lc.person_pose_min,
                           lc.lying_min_angle, lc.sitting_min_thigh_angle,
                           lc.posture_turn_min_aspect)
