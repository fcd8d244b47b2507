"""The looker's votes on the detector's boxes (its half of the reinforcement,
core.reasoning.reinforce applies them):

- verified:   the crop shows the box's class, or what that class is seen with (clothes on
              a person), with P >= verify_min_support; for a person, the pose model's
              person score counts too when it reaches person_pose_min (ImageNet has no
              person class: a man behind a camera on a tripod is a "tripod" to the
              classifier, a person to MoveNet);
- relabelled: the crop IS another COCO class with P >= relabel_min_probability and its own
              class scores below contradict_max_support;
- rejected:   the crop's top label (no COCO class) has P >= reject_min_probability and the
              box's class scores below contradict_max_support: the camera boxed as a
              person. Its label names the box instead (source looker), if sure enough;
              or, for a COCO animal class, the crop puts P >= reject_animal_min_mass on
              other animals (ImageNet's animal block): the quokka boxed as a dog, named
              after its top label or "animal";
- rejected as a duplicate: the detector put two classes on one object (boxes with IoU
              >= 0.8: "apple" and "vase" on the same apple); the looker sees the other
              one, verified, and its own class scores below contradict_max_support;
- named:      a box with an unknown label (reinforce.unknown_labels) gets the crop's name;
- unsure:     none of these; nothing changes.
A crop that overlaps another detected object (a table's crop shows the cup on it, a
spoon's crop the cup beside it) may be about that object: a vote for that object's class
counts as unsure, never as a relabel or reject. Labels the mapping calls not_objects
("web site", "seashore") never name anything. And the whole frame: its top label (or a
COCO class its labels add up to) at P >= frame_name_min_probability that no box explains
becomes an object covering the frame ("fox squirrel")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..config import LookerConfig
from ..detection.labels import COCO_CLASSES
from ..reasoning.vocabulary import canonical_class
from ..types import Box, Detection, DetectionSet, Source
from .imagenet_coco import ImagenetCoco
from .looker import PERSON, Looks, shown_by_others

VOTE_KINDS = ('verified', 'relabelled', 'rejected', 'named', 'unsure')
#: COCO's animal classes, and the name of an animal the looker cannot name better
ANIMALS = frozenset({'bird', 'cat', 'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear',
                     'zebra', 'giraffe'})
ANIMAL = 'animal'
#: two boxes this alike (IoU) are one object
_SAME_OBJECT_IOU = 0.8


@dataclass(frozen=True)
class Vote:
    kind: str            # one of VOTE_KINDS
    label: str = ''      # relabelled: the COCO class; rejected / named: the looker's name
    probability: float = 0.0  # of `label` (relabelled, rejected, named)
    support: float = 0.0      # P(the box's own class or what it is seen with)
    duplicate_of: int = -1    # rejected as a second class of detection N's object


def vote_box(i: int, ds: DetectionSet, looks: Looks, mapping: ImagenetCoco,
             s: LookerConfig, unknown_labels: Sequence[str]) -> Vote | None:
    """The looker's vote on detection i; None when it did not look at it or cannot judge
    its class (a class outside COCO-80)."""
    probs = looks.crop_probs.get(i)
    if probs is None:
        return None
    d = ds[i]
    top = int(np.argmax(probs))
    p_top, top_name = float(probs[top]), mapping.names[top]
    if d.class_name in unknown_labels:
        if p_top >= s.name_min_probability and mapping.names_object(top):
            return Vote('named', mapping.coco_of[top] or top_name, p_top)
        return Vote('unsure')
    cls = canonical_class(d.class_name)
    if not mapping.knows(cls):
        return None
    support = mapping.support(probs, cls)
    posture = looks.postures.get(i)
    if cls == PERSON and posture is not None and posture.person_score >= s.person_pose_min:
        support = max(support, posture.person_score)
    if support >= s.verify_min_support:
        return Vote('verified', support=support)
    if support >= s.contradict_max_support:
        return Vote('unsure', support=support)
    shown = shown_by_others(i, ds)
    strengths = {c: p for c, p in mapping.strengths(probs).items() if c != cls}
    if strengths:
        other, p_other = max(strengths.items(), key=lambda kv: kv[1])
        twin = _verified_twin(i, other, ds, looks, mapping, s)
        if twin >= 0:
            return Vote('rejected', other, p_other, support, duplicate_of=twin)
        # the crop may be about the other object only if the looker sees that object
        if other in shown and p_other >= s.contradict_max_support:
            return Vote('unsure', support=support)
        if p_other >= s.relabel_min_probability:
            return Vote('relabelled', other, p_other, support)
    # ImageNet has no person class: a person's crop always "is" something else (what they
    # wear or hold), so only a near-certain other label rejects a person box.
    reject_min = s.reject_person_min_probability if cls == PERSON else s.reject_min_probability
    if p_top >= reject_min and mapping.coco_of[top] is None \
            and mapping.names_object(top):
        return Vote('rejected', top_name, p_top, support)
    # An animal class ImageNet covers (dog: 120 breeds) that gets no support while the crop
    # is mostly some other animal: a quokka boxed as a dog, a raccoon as a cat. No single
    # label may be sure of it ("wombat" 0.27, "wallaby" 0.09, ...): named "animal" then.
    if cls in ANIMALS and mapping.is_members[cls].size:
        mass = mapping.other_animal_mass(probs, cls)
        if mass >= s.reject_animal_min_mass:
            if p_top >= s.name_min_probability and mapping.coco_of[top] is None:
                return Vote('rejected', top_name, p_top, support)
            return Vote('rejected', ANIMAL, mass, support)
    return Vote('unsure', support=support)


def _verified_twin(i: int, cls: str, ds: DetectionSet, looks: Looks, mapping: ImagenetCoco,
                   s: LookerConfig) -> int:
    """Index of another detection of class `cls` on the same object as detection i whose
    own crop the looker verifies, else -1."""
    for j, other in enumerate(ds):
        probs = looks.crop_probs.get(j)
        if j != i and probs is not None and canonical_class(other.class_name) == cls \
                and other.box.iou(ds[i].box) >= _SAME_OBJECT_IOU \
                and mapping.support(probs, cls) >= s.verify_min_support:
            return j
    return -1


def coco_class_id(name: str, like: Detection) -> int:
    """The class id of a COCO class in the detector's numbering when the detector numbers
    COCO-80 in order (the opencv backends, ultralytics COCO models); -1 otherwise."""
    cls = canonical_class(like.class_name)
    if cls in COCO_CLASSES and like.class_id == COCO_CLASSES.index(cls) \
            and name in COCO_CLASSES:
        return COCO_CLASSES.index(name)
    return -1


def frame_candidate(looks: Looks, mapping: ImagenetCoco) -> tuple[str, float, int] | None:
    """What the whole frame shows most: (name, P, label index of its best label); a COCO
    class whose labels add up beats a single label."""
    probs = looks.frame_probs
    if probs is None:
        return None
    top = int(np.argmax(probs))
    best = (mapping.coco_of[top] or mapping.names[top], float(probs[top]), top) \
        if mapping.names_object(top) else ('', 0.0, top)
    for cls, p in mapping.strengths(probs).items():
        if p > best[1]:
            members = mapping.is_members[cls]
            best = (cls, p, int(members[np.argmax(probs[members])]))
    return best


def explained(name: str, label: int, ds: DetectionSet, mapping: ImagenetCoco) -> bool:
    """Whether a box accounts for what the frame shows: a box of that class, a box of a
    class it is seen with, or a box whose crop looks like it."""
    short = mapping.names[label]
    for d in ds:
        cls = canonical_class(d.class_name)
        if cls == name or d.class_name == name:
            return True
        members = mapping.seen_members.get(cls)
        if members is not None and label in members:
            return True
        if any(n == short for n, _ in d.looks_like):
            return True
    return False


def frame_object(looks: Looks, ds: DetectionSet, mapping: ImagenetCoco,
                 s: LookerConfig) -> Detection | None:
    """The object to add for a confident frame-level label no box explains, else None."""
    cand = frame_candidate(looks, mapping)
    if cand is None:
        return None
    name, p, label = cand
    if not name or p < s.frame_name_min_probability or explained(name, label, ds, mapping):
        return None
    class_id = COCO_CLASSES.index(name) if name in COCO_CLASSES else -1
    return Detection(class_id=class_id, class_name=name, score=round(p, 4),
                     box=Box(0.0, 0.0, float(ds.image_width), float(ds.image_height)),
                     source=Source.LOOKER, looks_like=looks.detections.looks_like)
