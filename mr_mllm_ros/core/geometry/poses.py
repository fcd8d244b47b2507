"""Rigid transforms for a memory of places: a robot pose from odometry, the camera's
mounting on the robot, and positions carried from the camera's optical frame into the
odometry frame (world = odom_T_base * base_T_camera * p_camera).

Quaternions are (x, y, z, w), as in geometry_msgs. PoseBuffer keeps the recent poses of a
pose source (bounded) and gives the pose at an image's stamp, interpolated between the
two nearest (linear + slerp), never extrapolated beyond `max_gap_ns`.
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigError


def _qmul(a, b):
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz)


def _rotate(q, p):
    x, y, z, w = q
    # v' = v + 2w (u x v) + 2 u x (u x v), u = (x, y, z): no 3x3 matrix needed
    tx, ty, tz = 2 * (y * p[2] - z * p[1]), 2 * (z * p[0] - x * p[2]), 2 * (x * p[1] - y * p[0])
    return (p[0] + w * tx + y * tz - z * ty, p[1] + w * ty + z * tx - x * tz,
            p[2] + w * tz + x * ty - y * tx)


def _normalised(q) -> tuple[float, float, float, float]:
    n = math.sqrt(sum(c * c for c in q))
    if not math.isfinite(n) or n < 1e-9:
        raise ValueError(f'quaternion {tuple(q)} has no direction (norm {n:g})')
    return tuple(c / n for c in q)


@dataclass(frozen=True)
class Pose:
    """The transform parent_T_child: maps points of the child frame into the parent."""

    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)

    @classmethod
    def of(cls, translation: Sequence[float], rotation: Sequence[float]) -> 'Pose':
        return cls(tuple(float(c) for c in translation), _normalised([float(c) for c in rotation]))

    def apply(self, point: Sequence[float]) -> tuple[float, float, float]:
        r = _rotate(self.rotation, point)
        return (r[0] + self.translation[0], r[1] + self.translation[1],
                r[2] + self.translation[2])

    def compose(self, other: 'Pose') -> 'Pose':
        """self * other: first `other`, then `self` (a_T_b * b_T_c = a_T_c)."""
        return Pose(self.apply(other.translation), _qmul(self.rotation, other.rotation))

    def inverse(self) -> 'Pose':
        x, y, z, w = self.rotation
        inv = (-x, -y, -z, w)
        t = _rotate(inv, self.translation)
        return Pose((-t[0], -t[1], -t[2]), inv)


def mount_from_list(values: Sequence[float], key: str = 'memory.camera_mount') -> Pose:
    """The camera mounting parameter [x, y, z, qx, qy, qz, qw] (base -> camera optical
    frame) as a Pose; raises ConfigError naming the key."""
    if len(values) != 7:
        raise ConfigError(f'config key {key!r} = {list(values)!r}: expected 7 numbers '
                          '[x, y, z, qx, qy, qz, qw] (base to the camera optical frame)')
    try:
        return Pose.of(values[:3], values[3:])
    except ValueError as e:
        raise ConfigError(f'config key {key!r}: {e}') from None


def interpolate(a: Pose, b: Pose, t: float) -> Pose:
    """The pose a fraction t (0..1) of the way from a to b (linear, slerp)."""
    tr = tuple(p + (q - p) * t for p, q in zip(a.translation, b.translation))
    qa, qb = a.rotation, b.rotation
    dot = sum(x * y for x, y in zip(qa, qb))
    if dot < 0:  # the shorter way round
        qb, dot = tuple(-c for c in qb), -dot
    if dot > 0.9995:
        q = tuple(x + (y - x) * t for x, y in zip(qa, qb))
    else:
        theta = math.acos(dot)
        sa, sb = math.sin((1 - t) * theta), math.sin(t * theta)
        q = tuple((x * sa + y * sb) / math.sin(theta) for x, y in zip(qa, qb))
    return Pose(tr, _normalised(q))


class PoseBuffer:
    """Recent stamped poses of one source (bounded, thread-safe), looked up by stamp."""

    def __init__(self, capacity: int = 2000, max_gap_ns: int = 200_000_000):
        self.capacity = capacity
        self.max_gap_ns = max_gap_ns
        self.frame_id = ''
        self._stamps: list[int] = []
        self._poses: list[Pose] = []
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, pose: Pose, frame_id: str = '') -> None:
        with self._lock:
            if frame_id:
                self.frame_id = frame_id
            if self._stamps and stamp_ns < self._stamps[-1]:
                if stamp_ns < self._stamps[0]:  # clock jumped back (bag loop): start over
                    self._stamps.clear()
                    self._poses.clear()
            i = bisect.bisect_right(self._stamps, stamp_ns)
            self._stamps.insert(i, stamp_ns)
            self._poses.insert(i, pose)
            if len(self._stamps) > self.capacity:
                del self._stamps[0], self._poses[0]

    def __len__(self) -> int:
        return len(self._stamps)

    def at(self, stamp_ns: int) -> Pose | None:
        """The pose at `stamp_ns`: interpolated between its neighbours when they are at
        most max_gap_ns apart, the nearest one when it is within max_gap_ns, else None."""
        with self._lock:
            s = self._stamps
            i = bisect.bisect_left(s, stamp_ns)
            if i < len(s) and s[i] == stamp_ns:
                return self._poses[i]
            if 0 < i < len(s) and s[i] - s[i - 1] <= self.max_gap_ns:
                t = (stamp_ns - s[i - 1]) / (s[i] - s[i - 1])
                return interpolate(self._poses[i - 1], self._poses[i], t)
            near = [j for j in (i - 1, i) if 0 <= j < len(s)
                    and abs(s[j] - stamp_ns) <= self.max_gap_ns]
            if not near:
                return None
            return self._poses[min(near, key=lambda j: abs(s[j] - stamp_ns))]
