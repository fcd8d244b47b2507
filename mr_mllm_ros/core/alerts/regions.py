"""Image-region geometry of the hazard_in_region rule (normalised coordinates, 0,0 =
top-left)."""

from __future__ import annotations

from typing import Sequence

from ..types import Box


def _on_segment(px, py, ax, ay, bx, by, eps=1e-9) -> bool:
    cross = (bx - ax) * (py - ay) - (by - ay) * (px - ax)
    return (abs(cross) <= eps and min(ax, bx) - eps <= px <= max(ax, bx) + eps
            and min(ay, by) - eps <= py <= max(ay, by) + eps)


def point_in_polygon(x: float, y: float, polygon: Sequence[tuple[float, float]]) -> bool:
    """Even-odd ray casting (works for concave polygons); points on an edge are inside, so
    an object standing exactly on a region border counts as in it."""
    inside = False
    for i, (ax, ay) in enumerate(polygon):
        bx, by = polygon[(i + 1) % len(polygon)]
        if _on_segment(x, y, ax, ay, bx, by):
            return True
        if (ay > y) != (by > y) and x < ax + (y - ay) * (bx - ax) / (by - ay):
            inside = not inside
    return inside


def _segments_cross(p, q, r, s) -> bool:
    def orient(a, b, c):
        v = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
        return 0 if abs(v) < 1e-12 else (1 if v > 0 else -1)
    o1, o2, o3, o4 = orient(p, q, r), orient(p, q, s), orient(r, s, p), orient(r, s, q)
    if o1 != o2 and o3 != o4:
        return True
    return any(o == 0 and _on_segment(*pt, *a, *b) for o, pt, a, b in
               ((o1, r, p, q), (o2, s, p, q), (o3, p, r, s), (o4, q, r, s)))


def box_overlaps_polygon(x1, y1, x2, y2, polygon: Sequence[tuple[float, float]]) -> bool:
    """Do a box and a polygon share any point (touching counts)?"""
    corners = ((x1, y1), (x2, y1), (x2, y2), (x1, y2))
    if any(point_in_polygon(cx, cy, polygon) for cx, cy in corners):
        return True
    if any(x1 <= px <= x2 and y1 <= py <= y2 for px, py in polygon):
        return True
    edges = list(zip(polygon, polygon[1:] + polygon[:1]))
    return any(_segments_cross(a, b, c, d) for a, b in edges
               for c, d in zip(corners, corners[1:] + corners[:1]))


def anchor_point(box: Box, width: int, height: int, anchor: str) -> tuple[float, float]:
    """The normalised point of a box that must lie in a region (bottom_center: where an
    upright object touches the floor, i.e. where it really is)."""
    x1, y1, x2, y2 = box.x1 / width, box.y1 / height, box.x2 / width, box.y2 / height
    return (x1 + x2) / 2, (y2 if anchor == 'bottom_center' else (y1 + y2) / 2)


def in_region(box: Box, width: int, height: int, polygon, anchor: str) -> bool:
    if anchor == 'any_overlap':
        return box_overlaps_polygon(box.x1 / width, box.y1 / height, box.x2 / width,
                                    box.y2 / height, polygon)
    return point_in_polygon(*anchor_point(box, width, height, anchor), polygon)
