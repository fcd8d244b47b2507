"""Multi-object tracking metrics (pure functions): ID switches (CLEAR MOT) and IDF1
(Ristani et al. 2016), on per-frame lists of (id, (x1, y1, x2, y2)).

A ground-truth and a predicted box of one frame correspond when the Hungarian matching
of the frame on IoU pairs them with IoU >= `iou_threshold`.
- ID switch: a ground-truth object matched in two successive matched frames to different
  predicted ids.
- IDF1 = 2 IDTP / (ground-truth boxes + predicted boxes), where IDTP is the number of
  frame-level correspondences kept by the best one-to-one mapping between ground-truth
  ids and predicted ids over the whole sequence.
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..core.types import box_iou

Track = tuple[Hashable, Sequence[float]]  # (id, (x1, y1, x2, y2))


def _frame_matches(gt: Sequence[Track], pred: Sequence[Track],
                   iou_threshold: float) -> list[tuple[Hashable, Hashable]]:
    if not gt or not pred:
        return []
    iou = np.array([[box_iou(g[1], p[1]) for p in pred] for g in gt])
    rows, cols = linear_sum_assignment(-iou)
    return [(gt[r][0], pred[c][0]) for r, c in zip(rows, cols) if iou[r, c] >= iou_threshold]


def tracking_scores(gt_frames: Sequence[Sequence[Track]],
                    pred_frames: Sequence[Sequence[Track]],
                    iou_threshold: float = 0.5) -> dict:
    """{'id_switches', 'idf1', 'idtp', 'gt_boxes', 'pred_boxes', 'matched'} of a sequence
    (the two lists hold one entry per frame, in order)."""
    if len(gt_frames) != len(pred_frames):
        raise ValueError(f'{len(gt_frames)} ground-truth frames but {len(pred_frames)} '
                         'predicted frames')
    last: dict[Hashable, Hashable] = {}
    switches, matched = 0, 0
    pairs: Counter = Counter()
    for gt, pred in zip(gt_frames, pred_frames):
        for g, p in _frame_matches(gt, pred, iou_threshold):
            matched += 1
            pairs[(g, p)] += 1
            if g in last and last[g] != p:
                switches += 1
            last[g] = p
    gt_ids = sorted({g for g, _ in pairs}, key=str)
    pred_ids = sorted({p for _, p in pairs}, key=str)
    idtp = 0
    if pairs:
        counts = np.array([[pairs.get((g, p), 0) for p in pred_ids] for g in gt_ids])
        rows, cols = linear_sum_assignment(-counts)
        idtp = int(counts[rows, cols].sum())
    n_gt = sum(len(f) for f in gt_frames)
    n_pred = sum(len(f) for f in pred_frames)
    idf1 = 2 * idtp / (n_gt + n_pred) if n_gt + n_pred else None
    return {'id_switches': switches, 'idf1': idf1, 'idtp': idtp, 'gt_boxes': n_gt,
            'pred_boxes': n_pred, 'matched': matched}
