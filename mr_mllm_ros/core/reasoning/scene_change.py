"""What counts as a scene change: a change a person would name, not detector or tracker
noise. The schedule (core.reasoning.schedule) describes at once on such a change.

Per frame, `SceneChanges.update` compares the scene's *settled* state with the one it
last reported:
- a class appears or leaves: the class has been present (or absent) in most frames of the
  last `scene.change_hold_s` seconds;
- the count of a class changes and stays changed: one count holds most frames of the last
  `change_hold_s` and differs from the count last reported;
- a confirmed track enters or leaves while its class's count stays the same (one person
  walks off, another arrives): a track id seen for `scene.change_track_min_age_s`
  (entered), or such a track unseen for as long (left). Younger tracks - id churn, a box
  that flickers for a moment - change nothing, and a count change already names the
  tracks that made it (they are not reported again).
"Most frames" is `SETTLED_SHARE` of them, so one missed or extra box does not undo a
change that holds. The first frame is always a change (there is nothing described yet).
Times are the caller's clock (message time in a replay, monotonic in a node).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from ..config import SceneConfig
from ..types import DetectionSet

#: Share of the frames in the hold window that must agree for a state to be settled.
SETTLED_SHARE = 0.75


@dataclass(frozen=True)
class _Track:
    class_name: str
    first_s: float
    last_s: float


class SceneChanges:
    """Not thread-safe: one frame thread calls `update`."""

    def __init__(self, scene: SceneConfig):
        self._scene = scene
        self.hold_s = scene.change_hold_s
        self.min_age_s = scene.change_track_min_age_s
        self._window: deque[tuple[float, Counter]] = deque()  # (time, class counts)
        self._counts: dict[str, int] | None = None  # the settled counts last reported
        self._tracks: dict[int, _Track] = {}
        self._entered: set[int] = set()             # reported as entered, not yet left
        self._quiet: set[int] = set()               # gone in a reported count change
        self._announced: set[int] = set()           # came in a reported count change
        #: why the newest change was one ('' before any)
        self.last_reason = ''

    def reset(self) -> None:
        self.__init__(self._scene)

    def update(self, ds: DetectionSet, now_s: float) -> str:
        """The reason this frame settles a change ('person count 5 -> 6', 'car appeared',
        'person track 12 entered'), or '' when it does not."""
        counts = Counter(d.class_name for d in ds)
        self._window.append((now_s, counts))
        # The frame exactly `hold_s` ago stays in (a hair of tolerance): on a camera's
        # regular frame grid, float noise alone would otherwise decide whether it counts,
        # and so on which frame a change settles (a frame early or late against the rate).
        while self._window and self._window[0][0] < now_s - self.hold_s - 1e-6:
            self._window.popleft()
        if self._counts is None:
            self._counts = dict(counts)
            self._track_changes(ds, now_s, known=set(counts))
            reasons = ['first frame']
        else:
            reasons, changed = self._count_changes()
            reasons += self._track_changes(ds, now_s, known=changed)
        reason = '; '.join(reasons)
        if reason:
            self.last_reason = reason
        return reason

    # ----------------------------------------------------------------- classes
    def _count_changes(self) -> tuple[list[str], set[str]]:
        """(reasons, the classes whose settled count changed)."""
        n = len(self._window)
        reasons, changed = [], set()
        classes = set(self._counts) | {c for _, counts in self._window for c in counts}
        for cls in sorted(classes):
            tally = Counter(counts.get(cls, 0) for _, counts in self._window)
            value, frames = tally.most_common(1)[0]
            before = self._counts.get(cls, 0)
            if value == before or frames < SETTLED_SHARE * n or not self._held():
                continue
            changed.add(cls)
            if before == 0:
                reasons.append(f'{cls} appeared')
            elif value == 0:
                reasons.append(f'{cls} left')
            else:
                reasons.append(f'{cls} count {before} -> {value}')
            if value:
                self._counts[cls] = value
            else:
                self._counts.pop(cls, None)
        return reasons, changed

    def _held(self) -> bool:
        """The window spans the hold time (a change cannot settle on a single frame)."""
        return self._window[-1][0] - self._window[0][0] >= self.hold_s * SETTLED_SHARE

    # ----------------------------------------------------------------- tracks
    def _track_changes(self, ds: DetectionSet, now_s: float, known: set[str]) -> list[str]:
        """Tracks that entered or left. Tracks of the `known` classes (whose count change
        is reported now, or the first frame's) are named by that: their entering and
        leaving are taken in silently."""
        reasons = []
        for d in ds:
            if d.track_id < 0:
                continue
            t = self._tracks.get(d.track_id)
            first = t.first_s if t is not None else now_s
            self._tracks[d.track_id] = _Track(d.class_name, first, now_s)
            if d.class_name in known:
                self._announced.add(d.track_id)
            # (a hair of tolerance: entering and leaving 2 s after a swap share a frame)
            if d.track_id not in self._entered and now_s - first >= self.min_age_s - 1e-6:
                self._entered.add(d.track_id)
                if d.track_id not in self._announced:
                    reasons.append(f'{d.class_name} track {d.track_id} entered')
        for track_id, t in list(self._tracks.items()):
            if t.last_s == now_s:
                self._quiet.discard(track_id)  # still here after all
            elif t.class_name in known:
                self._quiet.add(track_id)      # its leaving is in the count change
            if now_s - t.last_s > self.min_age_s + 1e-6:
                del self._tracks[track_id]
                if track_id in self._entered and track_id not in self._quiet:
                    reasons.append(f'{t.class_name} track {track_id} left')
                for kept in (self._entered, self._quiet, self._announced):
                    kept.discard(track_id)
        return reasons
