"""Posture of a person from a box crop: MoveNet Lightning (17 COCO keypoints, int8 TFLite,
192x192) -> upright / sitting / lying.

MoveNet is trained on people who stand, walk and sit; on a person lying across the image
it finds few keypoints (on a photo turned by 90 degrees the hip scores fall from ~0.6 to
~0.1). So a box wider than tall is also looked at turned by +-90 degrees, the view with
the surest torso wins, and its keypoints are turned back before the torso angle is
measured: the lying person is then found as upright in the turned view, which is lying
in the camera's.

How much the crop looks like a person to the pose model is the mean score of its five
best keypoints (`person_score`): on the labelled photos people score 0.35-0.85, other
things boxed as a person (a tripod, a rocket, a building, animals) 0.08-0.38. Below
min_person_score there is no posture.

Rules on the keypoints (those scoring >= min_keypoint_score; y grows downwards):
- torso = mid-shoulder -> mid-hip; no visible shoulder or hip: no posture ('');
- lying: the torso leans more than lying_min_angle from vertical, or points up;
- sitting: torso upright and both thighs (hip -> knee) lean more than
  sitting_min_thigh_angle from vertical (knees forward, as on a chair or the floor; one
  raised thigh is a stride or a kick);
- upright: torso upright, legs straight or not visible (a portrait is upright).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .classifier import resize_to
from .tflite import TfliteModel

POSTURES = ('upright', 'sitting', 'lying')
KEYPOINTS = ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
             'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist',
             'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle')
_SHOULDERS, _HIPS, _KNEES = (5, 6), (11, 12), (13, 14)


@dataclass(frozen=True)
class PostureSettings:
    """The looker.* posture keys (core.looking.looker.posture_settings); their defaults
    live in config/mr_mllm.yaml only."""

    min_keypoint_score: float
    min_person_score: float         # mean of the 5 best keypoint scores
    lying_min_angle: float          # degrees of the torso from vertical
    sitting_min_thigh_angle: float  # degrees of a thigh from vertical
    turn_min_aspect: float          # boxes wider than tall x this are also turned


@dataclass(frozen=True)
class Posture:
    label: str        # one of POSTURES, '' = not enough keypoints
    score: float      # the weakest keypoint score the label rests on
    torso_angle: float  # degrees from vertical (0 = upright, 90 = horizontal); nan = none
    person_score: float  # mean of the 5 best keypoint scores: how much it is a person
    #: (17, 3) rows (y, x, score), normalised to the square crop, camera orientation
    keypoints: np.ndarray


def _turn_back(kp: np.ndarray, k: int) -> np.ndarray:
    """Keypoints found in np.rot90(square, k) -> the square's own orientation."""
    y, x, s = kp[:, 0], kp[:, 1], kp[:, 2]
    if k == 1:    # counter-clockwise: rotated (y', x') = (1 - x, y)
        return np.stack([x, 1.0 - y, s], axis=1)
    if k == -1:   # clockwise: rotated (y', x') = (x, 1 - y)
        return np.stack([1.0 - x, y, s], axis=1)
    return kp


def _mean_point(kp: np.ndarray, idx: Sequence[int], min_score: float):
    seen = [i for i in idx if kp[i, 2] >= min_score]
    if not seen:
        return None, 0.0
    return kp[seen, :2].mean(axis=0), float(kp[seen, 2].min())


def _angle_from_vertical(dy: float, dx: float) -> float:
    """Degrees between (dy, dx) and straight down: 0 down, 90 sideways, 180 up."""
    return math.degrees(math.atan2(abs(dx), dy))


def classify_keypoints(kp: np.ndarray, s: PostureSettings) -> Posture:
    """(17, 3) keypoints (y, x, score) in an undistorted square -> Posture."""
    person = float(np.sort(kp[:, 2])[-5:].mean())
    shoulder, s_score = _mean_point(kp, _SHOULDERS, s.min_keypoint_score)
    hip, h_score = _mean_point(kp, _HIPS, s.min_keypoint_score)
    if shoulder is None or hip is None or person < s.min_person_score:
        return Posture('', 0.0, math.nan, person, kp)
    dy, dx = hip - shoulder
    torso = _angle_from_vertical(float(dy), float(dx))
    score = min(s_score, h_score)
    if torso > s.lying_min_angle:
        return Posture('lying', score, torso, person, kp)
    thighs = [(_angle_from_vertical(float(kp[k, 0] - kp[h, 0]), float(kp[k, 1] - kp[h, 1])),
               float(kp[k, 2])) for h, k in zip(_HIPS, _KNEES)
              if kp[k, 2] >= s.min_keypoint_score and kp[h, 2] >= s.min_keypoint_score]
    if len(thighs) == 2 and all(a > s.sitting_min_thigh_angle for a, _ in thighs):
        return Posture('sitting', min(score, *(sc for _, sc in thighs)), torso, person, kp)
    return Posture('upright', score, torso, person, kp)


class PostureEstimator:
    """MoveNet Lightning on square person crops."""

    def __init__(self, model_path: str | Path, settings: PostureSettings, threads: int = 0):
        self.model = TfliteModel(model_path, threads)
        self.settings = settings

    def keypoints(self, square: np.ndarray) -> np.ndarray:
        """(17, 3) (y, x, score) for a square uint8 RGB crop."""
        (out,) = self.model.run(resize_to(square, self.model.input_size))
        return out.reshape(len(KEYPOINTS), 3)

    def estimate(self, square: np.ndarray, box_aspect: float) -> Posture:
        """Posture of the person in `square` (the padded crop of a box whose width /
        height is `box_aspect`)."""
        turns = (0, 1, -1) if box_aspect > self.settings.turn_min_aspect else (0,)
        best, best_conf = None, -1.0
        for k in turns:
            view = np.ascontiguousarray(np.rot90(square, k)) if k else square
            kp = _turn_back(self.keypoints(view), k)
            # the surest torso: mean score of shoulders and hips
            conf = float(kp[[*_SHOULDERS, *_HIPS], 2].mean())
            if conf > best_conf:
                best, best_conf = kp, conf
        return classify_keypoints(best, self.settings)
