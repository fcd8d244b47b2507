"""Track ids for every detector backend: ultralytics' ByteTrack / BoT-SORT run on the
boxes any backend returns (ultralytics.trackers takes plain numpy detections).

One tracker per camera (track ids are per camera). Ids are ours, not the library's: a
tracker numbers its tracks from `first_id` on, so a replay can give each work unit its
own id range and stay deterministic under a fan-out. Detections the tracker has not
confirmed (a new object seen once, after the first frame) keep track id -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np

from ..types import DetectionSet, Frame

#: ultralytics' own defaults (cfg/trackers/*.yaml of ultralytics 8.4), kept here so the
#: YAML key detector.tracker stays one word; BoT-SORT runs without ReID (no extra model).
_BYTETRACK = dict(tracker_type='bytetrack', track_high_thresh=0.25, track_low_thresh=0.1,
                  new_track_thresh=0.25, match_thresh=0.8, fuse_score=True)
_BOTSORT = dict(_BYTETRACK, tracker_type='botsort', gmc_method='sparseOptFlow',
                proximity_thresh=0.5, appearance_thresh=0.8, with_reid=False, model='auto')


@dataclass
class _Boxes:
    """The Results-like view ultralytics' trackers read: conf, cls, xywh, boolean rows."""

    xywh: np.ndarray  # (N, 4) centre x, centre y, width, height in pixels
    conf: np.ndarray  # (N,)
    cls: np.ndarray   # (N,)

    def __len__(self) -> int:
        return len(self.conf)

    def __getitem__(self, rows) -> '_Boxes':
        return _Boxes(self.xywh[rows], self.conf[rows], self.cls[rows])


class Tracker:
    """ByteTrack or BoT-SORT over DetectionSets, one state per camera."""

    def __init__(self, kind: str, track_buffer: int, first_id: int = 1):
        if kind not in ('bytetrack', 'botsort'):
            raise ValueError(f'unknown tracker {kind!r}; use bytetrack or botsort')
        from ..runtime.offline import apply_offline_env
        apply_offline_env()  # ultralytics must not look for the network on import
        from ultralytics.trackers import BOTSORT, BYTETracker
        self.kind = kind
        self._cls = BYTETracker if kind == 'bytetrack' else BOTSORT
        self._args = SimpleNamespace(**(_BYTETRACK if kind == 'bytetrack' else _BOTSORT),
                                     track_buffer=track_buffer)
        self._trackers: dict[str, object] = {}
        self._first_id = first_id

    def reset(self, first_id: int = 1) -> None:
        """Forget every track; new tracks are numbered from `first_id`."""
        self._trackers.clear()
        self._first_id = first_id

    def update(self, ds: DetectionSet, frame: Frame | None = None) -> DetectionSet:
        """`ds` with track ids (-1 for detections no confirmed track holds)."""
        camera = frame.camera if frame is not None else ds.frame_id
        tracker = self._trackers.get(camera)
        if tracker is None:
            tracker = self._trackers[camera] = self._cls(self._args)
        n = len(ds)
        xyxy = np.array([d.box.corners() for d in ds], np.float32).reshape(n, 4)
        boxes = _Boxes(np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2,
                                       xyxy[:, 2:] - xyxy[:, :2]], axis=1),
                       np.array([d.score for d in ds], np.float32),
                       np.array([d.class_id for d in ds], np.float32))
        # BoT-SORT's motion compensation reads the frame (BGR, as ultralytics expects).
        img = np.ascontiguousarray(frame.image[..., ::-1]) \
            if frame is not None and self.kind == 'botsort' else None
        rows = tracker.update(boxes, img)  # (M, 8): x1 y1 x2 y2 track_id score cls idx
        ids = np.full(n, -1, np.int64)
        for row in rows:
            ids[int(row[-1])] = int(row[4]) + self._first_id - 1
        return ds.with_detections(d.replace(track_id=int(t)) for d, t in zip(ds, ids))


def create_tracker(kind: str, track_buffer: int) -> Tracker | None:
    """The configured tracker (detector.tracker), None for `none`."""
    return None if kind == 'none' else Tracker(kind, track_buffer)
