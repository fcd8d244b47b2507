"""Evaluation metrics as pure functions: no ROS, no models, no files.

Boxes are (x1, y1, x2, y2) in pixels. Every function returns plain dicts/lists/numbers
(JSON-ready); a ratio whose denominator is 0 is None ("undefined"), never 0 or 1.

Detection (ChatRex protocol, plus COCO mAP):
  A prediction is a true positive when it is the highest-scoring unmatched prediction of
  its class whose IoU with a ground-truth box of that class is >= 0.5 (greedy in score
  order, as COCO matches); every other prediction is a false positive, every unmatched
  ground-truth box a false negative. Ground-truth boxes marked `ignore` (COCO `iscrowd`)
  are never missed, and a prediction covering one (intersection / prediction area >= 0.5,
  COCO's crowd rule) counts neither way.
  Per class c: P_c = TP_c / (TP_c + FP_c), R_c = TP_c / (TP_c + FN_c).
  mean precision = mean of P_c over the classes that were predicted (P_c is defined);
  mean recall    = mean of R_c over the classes that have ground truth (R_c is defined).
  So a class the model never predicts costs recall, not precision, and a class it
  hallucinates costs precision, not recall. micro P/R pool the counts of all classes.
  mAP@[.5:.95] is pycocotools' COCOeval over the ground-truth categories (predictions of
  other categories cannot be scored by it and are dropped from mAP only).

Class names are compared after `canonical_class`: lower case, '_' as space, and the
Darknet/VOC spellings of the offline detector mapped to COCO's (DARKNET_TO_COCO).
"""

from __future__ import annotations

import contextlib
import io
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Hashable, Iterable, Mapping, Sequence

from ..core.reasoning import vocabulary
from ..core.types import box_iou as iou

IOU_THRESHOLD = 0.5

Box = tuple[float, float, float, float]


def canonical_class(name: str, class_map: Mapping[str, str] | None = None) -> str:
    """'MotorBike' -> 'motorcycle', 'dining_table' -> 'dining table'; then `class_map`
    (e.g. a dataset's own names -> COCO's, or everything -> 'object')."""
    n = vocabulary.canonical_class(name)
    if class_map:
        n = class_map.get(n, class_map.get('*', n))
    return n


def _area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _crowd_overlap(pred: Box, region: Box) -> float:
    """COCO's IoU with an iscrowd region: intersection over the prediction's area."""
    ix = max(0.0, min(pred[2], region[2]) - max(pred[0], region[0]))
    iy = max(0.0, min(pred[3], region[3]) - max(pred[1], region[1]))
    a = _area(pred)
    return ix * iy / a if a > 0 else 0.0


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


# ------------------------------------------------------------------------ detection

@dataclass(frozen=True)
class Obj:
    """A ground-truth or predicted box of one image. `image` is any hashable key;
    `ignore` (ground truth only) marks a COCO iscrowd / do-not-care region."""

    image: Hashable
    class_name: str
    box: Box
    score: float = 1.0
    ignore: bool = False


def match_image(gts: Sequence[Obj], preds: Sequence[Obj],
                iou_threshold: float = IOU_THRESHOLD) -> tuple[list[str], list[bool]]:
    """Match the predictions of ONE image to its ground truth, class by class.

    Returns (status of each prediction: 'tp' | 'fp' | 'ignored', and for each ground-truth
    box whether a prediction matched it)."""
    status = ['fp'] * len(preds)
    matched = [False] * len(gts)
    for i in sorted(range(len(preds)), key=lambda k: -preds[k].score):
        p = preds[i]
        best, best_iou = None, iou_threshold
        for j, g in enumerate(gts):
            if matched[j] or g.ignore or g.class_name != p.class_name:
                continue
            v = iou(p.box, g.box)
            if v >= best_iou:
                best, best_iou = j, v
        if best is not None:
            matched[best] = True
            status[i] = 'tp'
        elif any(g.ignore and g.class_name == p.class_name
                 and _crowd_overlap(p.box, g.box) >= iou_threshold for g in gts):
            status[i] = 'ignored'
    return status, matched


def precision_recall(gts: Sequence[Obj], preds: Sequence[Obj],
                     iou_threshold: float = IOU_THRESHOLD) -> dict:
    """Per-class and class-averaged precision/recall at one IoU threshold (see module
    docstring). Objects of all images together; `image` keys group them."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {'tp': 0, 'fp': 0, 'fn': 0})
    by_image_gt: dict[Hashable, list[Obj]] = defaultdict(list)
    by_image_pred: dict[Hashable, list[Obj]] = defaultdict(list)
    for g in gts:
        by_image_gt[g.image].append(g)
    for p in preds:
        by_image_pred[p.image].append(p)
    for image in set(by_image_gt) | set(by_image_pred):
        ig, ip = by_image_gt.get(image, []), by_image_pred.get(image, [])
        status, matched = match_image(ig, ip, iou_threshold)
        for p, s in zip(ip, status):
            if s != 'ignored':
                counts[p.class_name][s] += 1
        for g, m in zip(ig, matched):
            if not m and not g.ignore:
                counts[g.class_name]['fn'] += 1
    per_class = {}
    for c in sorted(counts):
        k = counts[c]
        per_class[c] = {'gt': k['tp'] + k['fn'], 'pred': k['tp'] + k['fp'], **k,
                        'precision': _ratio(k['tp'], k['tp'] + k['fp']),
                        'recall': _ratio(k['tp'], k['tp'] + k['fn'])}
    tp = sum(k['tp'] for k in counts.values())
    fp = sum(k['fp'] for k in counts.values())
    fn = sum(k['fn'] for k in counts.values())
    return {
        'iou_threshold': iou_threshold,
        'per_class': per_class,
        'mean_precision': _mean(v['precision'] for v in per_class.values()),
        'mean_recall': _mean(v['recall'] for v in per_class.values()),
        'micro_precision': _ratio(tp, tp + fp), 'micro_recall': _ratio(tp, tp + fn),
        'tp': tp, 'fp': fp, 'fn': fn,
        'classes_with_gt': sum(1 for v in per_class.values() if v['gt']),
        'classes_predicted': sum(1 for v in per_class.values() if v['pred']),
    }


def coco_map(images: Sequence[Hashable], gts: Sequence[Obj], preds: Sequence[Obj],
             categories: Sequence[str] | None = None, max_dets: int = 100) -> dict:
    """COCO box AP with pycocotools: mAP@[.5:.95], AP50, AP75 and AP per category.

    `categories`: the categories evaluated (default: those of the ground truth);
    predictions of other classes are dropped (COCOeval cannot score them) and counted in
    `dropped_predictions`. A category without ground truth has AP None."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cats = list(dict.fromkeys(categories)) if categories is not None \
        else sorted({g.class_name for g in gts})
    cat_id = {c: i + 1 for i, c in enumerate(cats)}
    img_id = {k: i + 1 for i, k in enumerate(dict.fromkeys(images))}
    for o in list(gts) + list(preds):
        if o.image not in img_id:
            raise ValueError(f'object on image {o.image!r} that is not in the image list')
    anns = []
    for g in gts:
        if g.class_name not in cat_id:
            raise ValueError(f'ground-truth class {g.class_name!r} is not among the '
                             f'evaluated categories {cats}')
        x1, y1, x2, y2 = g.box
        anns.append({'id': len(anns) + 1, 'image_id': img_id[g.image],
                     'category_id': cat_id[g.class_name],
                     'bbox': [x1, y1, x2 - x1, y2 - y1], 'area': _area(g.box),
                     'iscrowd': int(g.ignore)})
    dets = [{'image_id': img_id[p.image], 'category_id': cat_id[p.class_name],
             'bbox': [p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]],
             'score': float(p.score)} for p in preds if p.class_name in cat_id]
    out = {'map': None, 'ap50': None, 'ap75': None,
           'per_class': {c: None for c in cats},
           'dropped_predictions': len(preds) - len(dets)}
    has_gt = {c for c in cats if any(g.class_name == c and not g.ignore for g in gts)}
    if not has_gt:
        return out
    if not dets:  # nothing to score: AP is 0 wherever there is ground truth
        return {**out, 'map': 0.0, 'ap50': 0.0, 'ap75': 0.0,
                'per_class': {c: (0.0 if c in has_gt else None) for c in cats}}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = {'images': [{'id': i} for i in img_id.values()],
                           'annotations': anns,
                           'categories': [{'id': i, 'name': c} for c, i in cat_id.items()]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, 'bbox')
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # precision: [T iou thresholds, R recall points, K categories, A areas, M maxDets]
    precision = ev.eval['precision']
    per_class = {}
    for k, c in enumerate(cats):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[c] = float(p.mean()) if p.size else None
    t50 = [i for i, t in enumerate(ev.params.iouThrs) if math.isclose(t, 0.5)][0]
    t75 = [i for i, t in enumerate(ev.params.iouThrs) if math.isclose(t, 0.75)][0]

    def ap_at(t: int | None) -> float | None:
        p = precision[:, :, :, 0, -1] if t is None else precision[t, :, :, 0, -1]
        p = p[p > -1]
        return float(p.mean()) if p.size else None

    return {**out, 'map': ap_at(None), 'ap50': ap_at(t50), 'ap75': ap_at(t75),
            'per_class': per_class}


def image_classes(present: Mapping[Hashable, set[str]], dont_care: Mapping[Hashable, set[str]],
                  predicted: Mapping[Hashable, set[str]]) -> dict:
    """Image-level class recall: does the output name what is in each image, whatever
    the boxes? Per image, a class in `present` is found when some prediction has it; a
    predicted class that is neither present nor don't-care (`dont_care`: crowd regions,
    "maybe" labels) is a false class. Pairs (image, class) are counted."""
    found, missed, false = [], [], []
    for image in present.keys() | predicted.keys():
        have, said = present.get(image, set()), predicted.get(image, set())
        found += [(image, c) for c in sorted(have & said)]
        missed += [(image, c) for c in sorted(have - said)]
        false += [(image, c) for c in sorted(said - have - dont_care.get(image, set()))]
    key = lambda pair: (str(pair[0]), pair[1])  # noqa: E731
    return {'present': len(found) + len(missed), 'found': len(found),
            'class_recall': _ratio(len(found), len(found) + len(missed)),
            'false_classes': len(false),
            'missed': [list(p) for p in sorted(missed, key=key)],
            'false': [list(p) for p in sorted(false, key=key)]}


# ------------------------------------------------------------------------ grounding

@dataclass(frozen=True)
class ReferringOutcome:
    """One referring expression: the true box, the boxes the model cited (in its order;
    empty = no citation) and every box it could have cited (the detections)."""

    gt_box: Box
    cited_boxes: tuple[Box, ...]
    candidate_boxes: tuple[Box, ...]


def referring_scores(outcomes: Sequence[ReferringOutcome],
                     iou_threshold: float = IOU_THRESHOLD) -> dict:
    """RefCOCO-style accuracy: correct when the FIRST cited box has IoU >= 0.5 with the
    true box; no citation is wrong. Also: the share with no citation, accuracy among the
    cited ones, the oracle upper bound (some candidate box has IoU >= 0.5: the best any
    choice among the detections could do) and accuracy where the oracle is reachable."""
    n = len(outcomes)
    cited = [bool(o.cited_boxes) for o in outcomes]
    correct = [c and iou(o.cited_boxes[0], o.gt_box) >= iou_threshold
               for o, c in zip(outcomes, cited)]
    reachable = [any(iou(b, o.gt_box) >= iou_threshold for b in o.candidate_boxes)
                 for o in outcomes]
    return {
        'iou_threshold': iou_threshold, 'n': n, 'cited': sum(cited),
        'correct': sum(correct), 'reachable': sum(reachable),
        'accuracy': _ratio(sum(correct), n),
        'no_citation_share': _ratio(n - sum(cited), n),
        'accuracy_when_cited': _ratio(sum(correct), sum(cited)),
        'oracle_accuracy': _ratio(sum(reachable), n),
        'accuracy_when_reachable': _ratio(
            sum(c and r for c, r in zip(correct, reachable)), sum(reachable)),
    }


def class_in_phrase(class_name: str, phrase: str) -> bool:
    """Whether the phrase names the class, by the one vocabulary (config/vocabulary.yaml):
    'A motorbike' names motorcycle, 'two ties' names tie, 'a bicycle' does not name
    motorcycle. Whole words only."""
    return vocabulary.load_vocabulary().names(phrase, class_name)


def phrase_class_agreement(citations: Iterable[tuple[str, str]]) -> dict:
    """(phrase text, class name of a cited object) pairs -> share of cited objects whose
    class the phrase names (`class_in_phrase`); the mismatches are listed."""
    pairs = list(citations)
    mismatches = [{'phrase': p, 'class': c} for p, c in pairs if not class_in_phrase(c, p)]
    return {'citations': len(pairs), 'matched': len(pairs) - len(mismatches),
            'share': _ratio(len(pairs) - len(mismatches), len(pairs)),
            'mismatches': mismatches}


# ---------------------------------------------------------------------------- alerts

@dataclass(frozen=True)
class AlertFrame:
    """One frame of an evaluated sequence: which rules the labels expect to alert, which
    rules raised an alert. Frames are given in sequence order; `clip` separates
    recordings (an event never spans two clips); `stamp_s` is the message time."""

    clip: str
    stamp_s: float
    expected: frozenset[str]
    raised: frozenset[str]


def alert_events(frames: Sequence[AlertFrame], rule: str) -> list[tuple[int, int]]:
    """(first, last) frame positions of each event of `rule`: a maximal run of
    consecutive frames of one clip labelled with it."""
    events: list[tuple[int, int]] = []
    start = None
    for i, f in enumerate(frames):
        on = rule in f.expected
        if start is not None and (not on or f.clip != frames[start].clip):
            events.append((start, i - 1))
            start = None
        if on and start is None:
            start = i
    if start is not None:
        events.append((start, len(frames) - 1))
    return events


def _summary(values: Sequence[float]) -> dict:
    if not values:
        return {'mean': None, 'median': None, 'max': None}
    return {'mean': statistics.fmean(values), 'median': statistics.median(values),
            'max': max(values)}


def alert_scores(frames: Sequence[AlertFrame], rules: Sequence[str] | None = None,
                 tolerance_frames: int = 0) -> dict:
    """Event-based alert precision/recall and latency, per rule and overall.

    An event (see alert_events) is detected (TP) when its rule raised an alert on one of
    its frames or up to `tolerance_frames` after it (same clip); otherwise it is missed
    (FN). An alert frame of a rule outside every window of its events is a false alert
    (FP); further alerts inside an event (cooldown reminders) count neither way.
    P = TP / (TP + FP), R = TP / (TP + FN). Latency of a detected event: frames and
    seconds (message time) from its first frame to its first alert."""
    if rules is None:
        rules = sorted({r for f in frames for r in f.expected | f.raised})
    per_rule = {}
    all_frames: list[float] = []
    all_seconds: list[float] = []
    for rule in rules:
        events = alert_events(frames, rule)
        covered: set[int] = set()
        tp = 0
        lat_frames: list[float] = []
        lat_seconds: list[float] = []
        for start, end in events:
            last = end
            while (last + 1 < len(frames) and last + 1 - end <= tolerance_frames
                   and frames[last + 1].clip == frames[start].clip):
                last += 1
            window = range(start, last + 1)
            covered.update(window)
            first = next((i for i in window if rule in frames[i].raised), None)
            if first is not None:
                tp += 1
                lat_frames.append(first - start)
                lat_seconds.append(frames[first].stamp_s - frames[start].stamp_s)
        fp = sum(1 for i, f in enumerate(frames) if rule in f.raised and i not in covered)
        fn = len(events) - tp
        per_rule[rule] = {
            'events': len(events), 'tp': tp, 'fp': fp, 'fn': fn,
            'alert_frames': sum(1 for f in frames if rule in f.raised),
            'precision': _ratio(tp, tp + fp), 'recall': _ratio(tp, tp + fn),
            'latency_frames': _summary(lat_frames), 'latency_s': _summary(lat_seconds)}
        all_frames += lat_frames
        all_seconds += lat_seconds
    tp = sum(v['tp'] for v in per_rule.values())
    fp = sum(v['fp'] for v in per_rule.values())
    fn = sum(v['fn'] for v in per_rule.values())
    return {'per_rule': per_rule, 'tolerance_frames': tolerance_frames,
            'overall': {'events': tp + fn, 'tp': tp, 'fp': fp, 'fn': fn,
                        'precision': _ratio(tp, tp + fp), 'recall': _ratio(tp, tp + fn),
                        'latency_frames': _summary(all_frames),
                        'latency_s': _summary(all_seconds)}}
