"""Tracking sequences made of real photos, with ground truth: people cut from the packaged
sample photos (core.assets.sample_images) walk over a real background photo, cross each
other (the nearer one, lower in the image, hides the other), pass behind a pillar and
enter or leave the view. Ground truth is each person's pasted rectangle in every frame
where at least `min_visible` of it shows.

The sequences are built in code from photos the installed packages ship, so the tests and
benchmarks/bench_tracking.py measure the same pixels on every machine. Frame stamps are
message-like nanoseconds at `fps` (optionally with frames left out, as a live node that
skips to the newest frame sees them), so time constants in seconds can be checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from ..core.assets.sample_images import load_sample
from ..core.types import Box, Detection, DetectionSet, Frame

#: Where the person is in each sample photo: (x1, y1, x2, y2) pixels, chosen by looking
#: (the cameraman with his camera, the astronaut without the helmet she holds, Grace
#: Hopper from the cap down).
PERSON_CUTS: dict[str, tuple[int, int, int, int]] = {
    'camera': (0, 64, 300, 512),
    'astronaut': (19, 13, 330, 512),
    'grace_hopper': (15, 15, 512, 600),
}
START_NS = 1_000_000_000


@dataclass(frozen=True)
class Walker:
    """One person: a cut from a sample photo walking along `path`, keyframes
    (time s, bottom-centre x, bottom y, height px), linearly interpolated; absent outside
    the keyframes' time span."""

    photo: str
    path: tuple[tuple[float, float, float, float], ...]

    def at(self, t: float) -> tuple[float, float, float] | None:
        times = [k[0] for k in self.path]
        if t < times[0] or t > times[-1]:
            return None
        return tuple(float(np.interp(t, times, [k[i] for k in self.path]))
                     for i in (1, 2, 3))


@dataclass(frozen=True)
class Scene:
    name: str
    background: str              # 'rocket' | 'motorcycle' (the right view) | 'coffee' ...
    size: tuple[int, int]        # (width, height)
    seconds: float
    walkers: tuple[Walker, ...]
    pillars: tuple[tuple[int, int, int, int], ...] = ()  # brick pillars (x1, y1, x2, y2)


@dataclass
class TrackingSequence:
    name: str
    frames: list[Frame]
    #: per frame: [(person index, (x1, y1, x2, y2))] of the people visible enough
    truth: list[list[tuple[int, tuple[float, float, float, float]]]]
    people: int
    #: per frame, per person: the visible share of its rectangle (0 = hidden or away)
    visible: list[list[float]] = field(default_factory=list)


def _background(name: str, size: tuple[int, int]) -> np.ndarray:
    import skimage.data
    img = skimage.data.stereo_motorcycle()[1] if name == 'motorcycle' \
        else getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(cv2.resize(img[..., :3], size, interpolation=cv2.INTER_AREA))


def _cut(photo: str) -> np.ndarray:
    x1, y1, x2, y2 = PERSON_CUTS[photo]
    return load_sample(photo)[y1:y2, x1:x2]


def build(scene: Scene, fps: float = 10.0, drop_every: int = 0,
          min_visible: float = 0.5) -> TrackingSequence:
    """Render `scene` at `fps`. `drop_every` k > 0 leaves out every k-th frame (stamps keep
    their true times), as a node that skips to the newest frame would see the camera."""
    w, h = scene.size
    base = _background(scene.background, scene.size)
    brick = cv2.cvtColor(_gray('brick'), cv2.COLOR_GRAY2RGB)
    for x1, y1, x2, y2 in scene.pillars:
        base[y1:y2, x1:x2] = cv2.resize(brick, (x2 - x1, y2 - y1))
    cuts = [_cut(wk.photo) for wk in scene.walkers]
    frames, truth, visible = [], [], []
    n = int(round(scene.seconds * fps))
    for k in range(n):
        if drop_every and k % drop_every == drop_every - 1:
            continue
        t = k / fps
        canvas = base.copy()
        placed = []  # (bottom y, index, box)
        for i, (wk, cut) in enumerate(zip(scene.walkers, cuts)):
            pos = wk.at(t)
            if pos is None:
                continue
            cx, bottom, height = pos
            width = height * cut.shape[1] / cut.shape[0]
            box = (cx - width / 2, bottom - height, cx + width / 2, bottom)
            placed.append((bottom, i, box))
        # Far first (higher in the image), then nearer people over them, pillars last.
        placed.sort()
        cover = np.zeros((len(scene.walkers), h, w), bool)
        for _, i, box in placed:
            x1, y1, x2, y2 = (int(round(v)) for v in box)
            patch = cv2.resize(cuts[i], (max(1, x2 - x1), max(1, y2 - y1)),
                               interpolation=cv2.INTER_AREA)
            cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
            if cx2 <= cx1 or cy2 <= cy1:
                continue
            canvas[cy1:cy2, cx1:cx2] = patch[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]
            cover[:, cy1:cy2, cx1:cx2] = False  # this person hides those behind
            cover[i, cy1:cy2, cx1:cx2] = True
        for x1, y1, x2, y2 in scene.pillars:
            canvas[y1:y2, x1:x2] = base[y1:y2, x1:x2]
            cover[:, y1:y2, x1:x2] = False
        shares = [0.0] * len(scene.walkers)
        boxes = []
        for _, i, box in placed:
            x1, y1, x2, y2 = box
            area = max(1.0, (x2 - x1) * (y2 - y1))
            shares[i] = float(cover[i].sum()) / area
            if shares[i] >= min_visible:
                clipped = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
                boxes.append((i, clipped))
        frames.append(Frame(canvas, START_NS + int(round(t * 1e9)), 'camera', 'camera'))
        truth.append(sorted(boxes))
        visible.append(shares)
    return TrackingSequence(scene.name, frames, truth, len(scene.walkers), visible)


def _gray(name: str) -> np.ndarray:
    import skimage.data
    return getattr(skimage.data, name)()


# ----------------------------------------------------------------------- the scenes

def crossing() -> Scene:
    """Two people cross in the middle (the nearer one hides the other for about 1 s), a
    third walks behind a pillar (hidden about 1 s) and comes out the other side."""
    return Scene('crossing', 'rocket', (960, 640), 8.0, (
        Walker('camera', ((0.0, 120, 620, 270), (8.0, 840, 620, 270))),
        Walker('grace_hopper', ((0.0, 830, 590, 240), (8.0, 130, 590, 240))),
        Walker('astronaut', ((0.0, 80, 330, 170), (8.0, 880, 330, 170))),
    ), pillars=((430, 100, 530, 340),))


def street() -> Scene:
    """People enter and leave at the edges, one walks towards the camera (grows), two walk
    side by side, one stops for 2 s: the moments a street scene has."""
    return Scene('street', 'motorcycle', (960, 640), 10.0, (
        Walker('grace_hopper', ((0.0, -40, 420, 180), (5.0, 500, 420, 180),
                                (7.0, 500, 420, 180), (10.0, 1000, 430, 180))),
        Walker('camera', ((1.0, 700, 330, 130), (9.0, 450, 630, 330))),
        Walker('astronaut', ((2.0, 1000, 560, 220), (9.5, -60, 560, 220))),
        Walker('astronaut', ((2.0, 1120, 600, 230), (9.5, 60, 600, 230))),
    ))


SCENES = {'crossing': crossing, 'street': street}


def noisy_detections(seq: TrackingSequence, seed: int = 0, jitter: float = 0.08,
                     miss: float = 0.1, part_score: tuple[float, float] = (0.12, 0.3)
                     ) -> list[DetectionSet]:
    """A detector's view of the ground truth without a detector (the tracker alone under
    test): every visible person's box, each corner moved by up to `jitter` of the box size,
    missed with probability `miss`, scored 0.5-0.95; people partly hidden (visible share
    0.2 .. min_visible) come as low-score boxes (`part_score`), as a real detector reports
    them, for the second association stage."""
    rng = np.random.default_rng(seed)
    out = []
    for frame, truth, shares in zip(seq.frames, seq.truth, seq.visible):
        shown = dict(truth)
        dets = []
        for i, share in enumerate(shares):
            if share <= 0.2 or rng.random() < miss:
                continue
            box = shown.get(i) or _hidden_box(seq, frame, i)
            if box is None:
                continue
            w, h = box[2] - box[0], box[3] - box[1]
            x1, y1, x2, y2 = (v + jitter * s * rng.uniform(-1, 1)
                              for v, s in zip(box, (w, h, w, h)))
            score = rng.uniform(0.5, 0.95) if i in shown else rng.uniform(*part_score)
            dets.append(Detection(0, 'person', float(score), Box(x1, y1, x2, y2)
                                  .clip(frame.width, frame.height)))
        out.append(DetectionSet(tuple(sorted(dets, key=lambda d: -d.score)), frame.width,
                                frame.height, frame.stamp_ns, frame.frame_id))
    return out


def _hidden_box(seq: TrackingSequence, frame: Frame, i: int):
    """Box of a person too hidden for the ground truth (from its walker's path)."""
    scene = SCENES[seq.name]()
    pos = scene.walkers[i].at((frame.stamp_ns - START_NS) / 1e9)
    if pos is None:
        return None
    cx, bottom, height = pos
    x1, y1, x2, y2 = PERSON_CUTS[scene.walkers[i].photo]
    width = height * (x2 - x1) / (y2 - y1)
    return (cx - width / 2, bottom - height, cx + width / 2, bottom)


def sequences(names: Sequence[str] = tuple(SCENES), fps: float = 10.0,
              drop_every: int = 0) -> list[TrackingSequence]:
    return [build(SCENES[n](), fps, drop_every) for n in names]
