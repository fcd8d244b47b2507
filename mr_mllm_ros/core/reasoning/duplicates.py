"""Duplicate boxes of one object, merged before anything is counted.

A detector's non-maximum suppression keeps two boxes of one class when they overlap less
than its IoU threshold - and a part-box (a person's legs, a torso) inside the whole box
overlaps little by IoU. Such a pair is one object when the smaller box lies mostly inside
the larger (`MIN_CONTAINMENT` of its area) and the tracker has not held them apart (not
two different confirmed track ids). Counts in descriptions, answers and the prompt's class
headers count these units; the boxes stay cited (they are all that object).
"""

from __future__ import annotations

from typing import Sequence

from ..types import DetectionSet
from .vocabulary import canonical_class

#: Share of the smaller box's area inside the larger one that makes them one object.
MIN_CONTAINMENT = 0.8


def object_units(ds: DetectionSet, indices: Sequence[int]) -> list[tuple[int, ...]]:
    """`indices` grouped into objects (each group sorted, groups in order of their first
    index): duplicate boxes of one object share a group."""
    indices = sorted(indices)
    parent = {i: i for i in indices}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k, i in enumerate(indices):
        for j in indices[k + 1:]:
            a, b = ds[i], ds[j]
            if canonical_class(a.class_name) != canonical_class(b.class_name):
                continue
            if a.track_id >= 0 and b.track_id >= 0 and a.track_id != b.track_id:
                continue  # the tracker holds them apart: two objects
            if a.box.overlap_share(b.box) >= MIN_CONTAINMENT:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in indices:
        groups.setdefault(root(i), []).append(i)
    return [tuple(g) for g in groups.values()]
