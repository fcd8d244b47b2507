"""Distances and directions people understand, from a position in a camera's optical
frame (x right, y down, z forward): "2.3 m ahead, slightly left"."""

from __future__ import annotations

import math

#: (largest bearing in degrees, words) from the optical axis outwards.
BEARINGS = ((8.0, ''), (25.0, 'slightly {side}'), (60.0, 'to the {side}'))


def bearing_deg(position) -> float:
    """Horizontal angle from the optical axis, degrees; positive = to the right."""
    x, _, z = position
    return math.degrees(math.atan2(x, z))


def metres(value: float) -> str:
    """'2.3 m' (one decimal below 10 m, whole metres beyond)."""
    return f'{value:.1f} m' if value < 9.95 else f'{value:.0f} m'


def distance_words(position) -> str:
    """'2.3 m ahead', '2.3 m ahead, slightly left', '4 m ahead, to the right', '1.2 m to
    the left' (beyond 60 degrees); the distance is the straight line from the camera."""
    dist = math.sqrt(sum(c * c for c in position))
    angle = bearing_deg(position)
    side = 'right' if angle > 0 else 'left'
    for limit, words in BEARINGS:
        if abs(angle) <= limit:
            where = words.format(side=side)
            return f'{metres(dist)} ahead' + (f', {where}' if where else '')
    return f'{metres(dist)} to the {side}'
