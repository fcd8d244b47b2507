"""Positioned detections -> foxglove.SceneUpdate (Foxglove's 3D panel): the mapping shared
by the replay's MCAP and the live viewer, the Foxglove twin of ros.marker_mapping's RViz
markers. Per frame: delete what the previous frame showed, then one entity per detection
with a position, in the image's optical frame: a sphere at the position (diameter twice
the depth spread, 0.1-1 m) and a text label "obj2 person 2.3 m" facing the viewer."""

from __future__ import annotations

from foxglove.messages import (Color, Duration, Pose, Quaternion, SceneEntity,
                               SceneEntityDeletion, SceneEntityDeletionType, SceneUpdate,
                               SpherePrimitive, TextPrimitive, Vector3)

from ..core.images import class_color
from ..core.types import DetectionSet
from ..ros.marker_mapping import LIFETIME_S, TEXT_HEIGHT_M, marker_label

NS = 1_000_000_000
IDENTITY = Quaternion(x=0.0, y=0.0, z=0.0, w=1.0)


def _timestamp(ns: int):
    from .foxglove_messages import timestamp
    return timestamp(ns)


def scene_update(ds: DetectionSet, stamp_ns: int | None = None) -> SceneUpdate:
    stamp = _timestamp(ds.stamp_ns if stamp_ns is None else stamp_ns)
    entities = []
    for i, d in enumerate(ds.detections):
        if d.position is None:
            continue
        x, y, z = (float(c) for c in d.position)
        r, g, b = (c / 255.0 for c in class_color(d.class_name))
        size = min(1.0, max(0.1, 2.0 * d.position_spread))
        entities.append(SceneEntity(
            timestamp=stamp, frame_id=ds.frame_id, id=f'obj{i}',
            lifetime=Duration(sec=int(LIFETIME_S), nsec=int(LIFETIME_S % 1 * NS)),
            spheres=[SpherePrimitive(pose=Pose(position=Vector3(x=x, y=y, z=z),
                                               orientation=IDENTITY),
                                     size=Vector3(x=size, y=size, z=size),
                                     color=Color(r=r, g=g, b=b, a=0.8))],
            texts=[TextPrimitive(pose=Pose(position=Vector3(x=x, y=y - size / 2 - TEXT_HEIGHT_M,
                                                            z=z), orientation=IDENTITY),
                                 billboard=True, font_size=TEXT_HEIGHT_M,
                                 scale_invariant=False,
                                 color=Color(r=1.0, g=1.0, b=1.0, a=1.0),
                                 text=marker_label(i, d))]))
    return SceneUpdate(deletions=[SceneEntityDeletion(timestamp=stamp,
                                                      type=SceneEntityDeletionType.All)],
                       entities=entities)
