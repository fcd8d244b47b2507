"""Track ids for every detector backend: ultralytics' ByteTrack / BoT-SORT / OC-SORT run
on the boxes any backend returns (ultralytics.trackers takes plain numpy detections).

What this module adds around the library (each measured in benchmarks/bench_tracking.py):
- Time in seconds, from the frames' stamps: a lost track is kept `lost_keep_s` (turned
  into the library's frame count at the stream's measured frame interval, so a node that
  skips frames keeps tracks as long as a replay of every frame), and a new track gets an id
  once it has been seen for `confirm_s` (flicker never gets an id; the library's own
  2-frame confirmation still applies). Tracks present in a camera's first frame count as
  confirmed at once, as in the library.
- Low-score association (ByteTrack's second stage): the detector returns boxes down to
  `tracker.low_score` (PerceptionPipeline lowers its threshold); boxes below
  `detector.conf` only continue a confirmed track (an occluded person stays counted) and
  are published only then, with the track's id.
- Buffered IoU (C-BIoU, Yang et al. 2023): each box is enlarged by `match_buffer` of its
  size on every side before association, so small, fast or jittery boxes (a pedestrian
  20 px wide moving 5 px per frame, its box jumping between torso and legs) still overlap
  their track. Only association sees the enlarged boxes; published boxes are the
  detector's.
- Per-class parameters: `class_overrides` entries ("car, truck, bus: lost_keep_s=30")
  give the listed classes their own tracker and values; classes listed together share
  one tracker, so a van the detector calls car in one frame and truck in the next keeps
  its id. Every other class is tracked alone with the defaults, so a person walking past
  a parked car never takes over the car's track.

Ids are ours, not the library's: one counter per camera, numbered from `first_id` when a
track is first published, so a replay can give each work unit its own id range and stay
deterministic under a fan-out. Detections no confirmed track holds keep track id -1.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass, fields, replace
from types import SimpleNamespace
from typing import Sequence

import numpy as np

from ..config import TrackerConfig
from ..errors import ConfigError
from ..types import Detection, DetectionSet, Frame

KINDS = ('bytetrack', 'botsort', 'ocsort')
#: ultralytics' own defaults (cfg/trackers/*.yaml of ultralytics 8.4) for what we do not
#: configure; BoT-SORT runs without ReID (no extra model).
_LIBRARY = {
    'bytetrack': dict(tracker_type='bytetrack', match_thresh=0.8, fuse_score=False),
    'botsort': dict(tracker_type='botsort', match_thresh=0.8, fuse_score=False,
                    gmc_method='sparseOptFlow', proximity_thresh=0.5, appearance_thresh=0.8,
                    with_reid=False, model='auto'),
    'ocsort': dict(tracker_type='ocsort', match_thresh=0.8, fuse_score=False, delta_t=3,
                   inertia=0.2, use_byte=True),
}
#: Frame interval assumed until a camera's stamps have advanced (a stream of stills).
DEFAULT_INTERVAL_S = 0.1
_INTERVALS_KEPT = 30


@dataclass(frozen=True)
class TrackParams:
    """The per-class tunable part of TrackerConfig."""

    lost_keep_s: float
    confirm_s: float
    new_track_score: float
    match_buffer: float


_PARAM_LIMITS = {'lost_keep_s': (0.0, 3600.0), 'confirm_s': (0.0, 60.0),
                 'new_track_score': (0.0, 1.0), 'match_buffer': (0.0, 5.0)}


def parse_class_overrides(entries: Sequence[str], base: TrackParams
                          ) -> list[tuple[frozenset[str], TrackParams]]:
    """`["car, truck, bus: lost_keep_s=30", "person: match_buffer=0.75"]` -> the class
    groups with their parameters. Raises ConfigError naming the entry and key."""
    groups, seen = [], set()
    for entry in entries:
        where = f'tracker.class_overrides entry {entry!r}'
        classes, sep, settings = entry.partition(':')
        names = frozenset(c.strip() for c in classes.split(',') if c.strip())
        if not sep or not names:
            raise ConfigError(f'{where}: write "class[, class...]: key=value[, key=value]"')
        if names & seen:
            raise ConfigError(f'{where}: class {sorted(names & seen)[0]!r} is already in an '
                              'earlier entry')
        seen |= names
        values = {}
        for item in filter(None, (s.strip() for s in settings.split(','))):
            key, eq, value = (p.strip() for p in item.partition('='))
            if key not in _PARAM_LIMITS or not eq:
                raise ConfigError(f'{where}: {item!r} is not key=value with a key of '
                                  f'{", ".join(_PARAM_LIMITS)}')
            try:
                number = float(value)
            except ValueError:
                raise ConfigError(f'{where}: {key} = {value!r} is not a number') from None
            low, high = _PARAM_LIMITS[key]
            if not (math.isfinite(number) and low <= number <= high):
                raise ConfigError(f'{where}: {key} = {value} is out of range; allowed: '
                                  f'{low} <= value <= {high}')
            values[key] = number
        groups.append((names, replace(base, **values)))
    return groups


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

    @property
    def xyxy(self) -> np.ndarray:  # BoT-SORT's motion compensation masks these out
        return np.concatenate([self.xywh[:, :2] - self.xywh[:, 2:] / 2,
                               self.xywh[:, :2] + self.xywh[:, 2:] / 2], axis=1)


class _Group:
    """One library tracker for one camera and one class group, and what we keep beside it:
    when each library track was first seen, and the ids we published."""

    def __init__(self, library_cls, args: SimpleNamespace, params: TrackParams):
        self.lib = library_cls(args)
        self.params = params
        self.first_seen_ns: dict[int, int] = {}
        self.published: dict[int, int] = {}   # library id -> our id


class _Camera:
    def __init__(self, next_id: int):
        self.groups: dict[int, _Group] = {}
        self.next_id = next_id
        self.last_stamp_ns: int | None = None
        self.frames = 0
        self.intervals: deque[float] = deque(maxlen=_INTERVALS_KEPT)

    def interval_s(self) -> float:
        return float(np.median(self.intervals)) if self.intervals else DEFAULT_INTERVAL_S


def _import_library():
    """ultralytics' trackers, imported offline, without its process-wide thread settings:
    importing ultralytics sets OMP_NUM_THREADS=1 (when unset) and cv2.setNumThreads(0),
    which would silently make an OpenCV DNN detector in the same process single-threaded.
    Thread budgets are set per node instead."""
    import cv2

    from ..runtime.offline import apply_offline_env
    apply_offline_env()
    omp_unset = 'OMP_NUM_THREADS' not in os.environ
    cv_threads = cv2.getNumThreads()
    import torch  # noqa: F401  (first, so torch sizes its pool before ultralytics sets OMP)
    from ultralytics.trackers import BOTSORT, BYTETracker
    from ultralytics.trackers.oc_sort import OCSORT
    if omp_unset:
        os.environ.pop('OMP_NUM_THREADS', None)
    cv2.setNumThreads(cv_threads)
    return {'bytetrack': BYTETracker, 'botsort': BOTSORT, 'ocsort': OCSORT}


class Tracker:
    """Multi-object tracking over DetectionSets, one state per camera (ids per camera)."""

    def __init__(self, config: TrackerConfig, publish_conf: float, first_id: int = 1):
        if config.kind not in KINDS:
            raise ConfigError(f'tracker.kind {config.kind!r}: use one of {", ".join(KINDS)}')
        self.config = config
        self.kind = config.kind
        self.base = TrackParams(**{f.name: getattr(config, f.name)
                                   for f in fields(TrackParams)})
        self.class_groups = parse_class_overrides(config.class_overrides, self.base)
        self.publish_conf = publish_conf
        self._library = _import_library()[config.kind]
        self._cameras: dict[str, _Camera] = {}
        self._first_id = first_id
        self._group_keys: dict[str, int] = {}  # class name -> group key
        #: counters since the last reset: tracks published, re-activations of lost tracks
        self.stats = {'tracks': 0, 'reactivated': 0}

    def detector_conf(self, conf: float) -> float:
        """The confidence threshold the detector must use so the low-score boxes reach
        the second association stage."""
        return min(conf, self.config.low_score)

    def reset(self, first_id: int = 1) -> None:
        """Forget every track; new tracks are numbered from `first_id`."""
        self._cameras.clear()
        self._first_id = first_id
        self.stats = {'tracks': 0, 'reactivated': 0}

    # ----------------------------------------------------------------- groups
    def _group_key(self, class_name: str) -> int:
        """Index of the class's override group, or a key of its own (-1 - n)."""
        key = self._group_keys.get(class_name)
        if key is None:
            key = next((i for i, (names, _) in enumerate(self.class_groups)
                        if class_name in names), None)
            if key is None:
                key = -1 - len(self._group_keys)
            self._group_keys[class_name] = key
        return key

    def _params(self, key: int) -> TrackParams:
        return self.class_groups[key][1] if key >= 0 else self.base

    def _new_group(self, params: TrackParams) -> _Group:
        # The library keeps scores strictly above track_low_thresh; the thresholds that
        # follow detector.conf and the frame count of lost_keep_s are set per update.
        args = SimpleNamespace(**_LIBRARY[self.kind], track_high_thresh=self.publish_conf,
                               track_low_thresh=max(0.0, self.config.low_score - 1e-6),
                               new_track_thresh=1.0, track_buffer=1)
        return _Group(self._library, args, params)

    # ----------------------------------------------------------------- update
    def update(self, ds: DetectionSet, frame: Frame | None = None) -> DetectionSet:
        """`ds` with track ids: boxes at or above the publishing threshold, with the id of
        the confirmed track holding them (-1 when none does), and lower-scoring boxes only
        where they continue a confirmed track."""
        camera_name = frame.camera if frame is not None else ds.frame_id
        cam = self._cameras.get(camera_name)
        if cam is None:
            cam = self._cameras[camera_name] = _Camera(self._first_id)
        if cam.last_stamp_ns is not None and ds.stamp_ns > cam.last_stamp_ns:
            cam.intervals.append((ds.stamp_ns - cam.last_stamp_ns) / 1e9)
        cam.last_stamp_ns = ds.stamp_ns
        cam.frames += 1
        interval = cam.interval_s()
        by_group: dict[int, list[int]] = {}
        for i, d in enumerate(ds):
            by_group.setdefault(self._group_key(d.class_name), []).append(i)
        ids = np.full(len(ds), -1, np.int64)
        # BoT-SORT's motion compensation reads the frame (BGR, as ultralytics expects).
        img = np.ascontiguousarray(frame.image[..., ::-1]) \
            if frame is not None and self.kind == 'botsort' else None
        # Every group of the camera is updated, those with no box too (their tracks age).
        for key in set(by_group) | set(cam.groups):
            group = cam.groups.get(key)
            if group is None:
                group = cam.groups[key] = self._new_group(self._params(key))
                # The library confirms every track of its first frame at once: only the
                # camera's first frame is one (a class first seen later waits as any).
                group.lib.frame_id = cam.frames - 1
            rows = by_group.get(key, [])
            for row, track_id in self._update_group(cam, group, ds, rows, interval, img):
                ids[row] = track_id
        keep = [d.replace(track_id=int(t)) for d, t in zip(ds, ids)
                if t >= 0 or d.score >= self.publish_conf]
        return ds.with_detections(keep)

    def _update_group(self, cam: _Camera, group: _Group, ds: DetectionSet,
                      rows: list[int], interval_s: float, img) -> list[tuple[int, int]]:
        p = group.params
        lib = group.lib
        # Time constants in seconds -> the library's frames at this stream's frame rate.
        lib.max_frames_lost = max(1, math.ceil(p.lost_keep_s / interval_s))
        # detector.conf may change at run time (a parameter set): first-stage boxes.
        lib.args.track_high_thresh = self.publish_conf
        lib.args.new_track_thresh = max(self.publish_conf, p.new_track_score)
        dets: list[Detection] = [ds[r] for r in rows]
        n = len(dets)
        xyxy = np.array([d.box.corners() for d in dets], np.float64).reshape(n, 4)
        wh = xyxy[:, 2:] - xyxy[:, :2]
        boxes = _Boxes(np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2,
                                       wh * (1.0 + 2.0 * p.match_buffer)], axis=1),
                       np.array([d.score for d in dets], np.float32),
                       np.array([d.class_id for d in dets], np.float32))
        lost_before = {t.track_id for t in lib.lost_stracks}
        out = lib.update(boxes, img)  # (M, 8): x1 y1 x2 y2 track_id score cls idx
        found = []
        for r in out:
            lib_id, idx = int(r[4]), int(r[7])
            first = group.first_seen_ns.setdefault(lib_id, ds.stamp_ns)
            ours = group.published.get(lib_id)
            if ours is None:
                born_first = cam.frames == 1
                if not born_first and (ds.stamp_ns - first) / 1e9 < p.confirm_s:
                    continue
                ours = group.published[lib_id] = cam.next_id
                cam.next_id += 1
                self.stats['tracks'] += 1
            elif lib_id in lost_before:
                self.stats['reactivated'] += 1
            found.append((rows[idx], ours))
        # Forget what the library removed, so these maps stay as small as its own lists.
        live = {t.track_id for t in (*lib.tracked_stracks, *lib.lost_stracks)}
        for gone in [i for i in group.first_seen_ns if i not in live]:
            group.first_seen_ns.pop(gone, None)
            group.published.pop(gone, None)
        return found


def create_tracker(config: TrackerConfig, publish_conf: float) -> Tracker | None:
    """The configured tracker (tracker.kind), None for `none`."""
    return None if config.kind == 'none' else Tracker(config, publish_conf)
