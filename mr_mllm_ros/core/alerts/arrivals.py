"""When a camera's frames arrived: what the camera_stale rule needs to tell a stream that
stopped from a source that never streamed.

A camera is *streaming* when its last `min_frames` frames arrived within one staleness
limit (max_age_s) of each other, i.e. at a rate a camera streams at. Only a streaming
camera can go stale. A camera that has sent nothing yet (a graph started before its
driver: a diagnostics warning, not an alert) or a one-shot source (a single photo, photos
sent one at a time, each waiting for its description, as `mr-mllm demo` does) is not.
"""

from __future__ import annotations

from collections import deque

#: arrivals kept; bounds the rule's min_stream_frames
KEEP = 100


class FrameArrivals:
    """Arrival times (seconds, one monotonic clock) of a camera's most recent frames.
    `note` runs on the image callback, the stale check on a timer: a deque append and a
    copy are atomic under the GIL, so no lock is needed."""

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=KEEP)

    def note(self, t_s: float) -> None:
        self._times.append(t_s)

    def clear(self) -> None:
        self._times.clear()

    @property
    def last(self) -> float | None:
        times = list(self._times)
        return times[-1] if times else None

    def streaming(self, min_frames: int, window_s: float) -> bool:
        """The last `min_frames` frames arrived within `window_s` of each other."""
        times = list(self._times)
        return len(times) >= min_frames and times[-1] - times[-min_frames] <= window_s
