"""`mr-mllm eval looker`: the looker's reinforcement gain on labelled photos. Each
detector box is judged against the ground truth before and after the reasoning step
(core.pipeline, the nodes' code path): which wrong boxes the looker fixed, which right
boxes it broke, and what it named that no COCO class covers.

A detector box is
  right        IoU >= 0.5 with a ground-truth box of its class;
  wrong_class  not right, IoU >= 0.5 with a ground-truth box of another class (the fix:
               relabel it to that class);
  false        neither (the fix: reject it);
  dont_care    on a crowd / do-not-care region (left out).
After the step the box is verified, kept, relabelled (to which class), rejected, or
rejected and named by the looker (its box stays under the looker's name).
  fixed:       a wrong_class box relabelled to its true class (a false positive becomes a
               true one), a wrong box rejected or named outside COCO (a false positive
               less; a wrong_class box is often a second class the detector put on an
               object another box already has right);
  broken:      a right box relabelled or rejected;
  still wrong: a wrong box relabelled to another wrong class, or left (verified = the
               looker agreed with a wrong box).
Objects the looker adds (the frame's label no box explains, source looker) are listed
with the photo's labels: a COCO class is a recovered miss when an unmatched ground-truth
box of that class is in the photo; other names are shown beside the photo's `non_coco`
labels (labels.json beside the ground truth, if any) to be judged by reading.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..core.config import Config, with_changes
from ..core.pipeline import Pipeline
from ..core.types import Detection, DetectionSet, Frame, Source
from . import datasets
from .metrics import Obj, canonical_class, iou

log = logging.getLogger(__name__)

TRUTHS = ('right', 'wrong_class', 'false', 'dont_care')


def box_truth(box: Sequence[float], cls: str, gts: Sequence[Obj]) -> tuple[str, str]:
    """(truth, the true class for wrong_class else '') of a detector box (see module
    docstring); `gts` are the photo's ground-truth objects."""
    best_other, best_iou = '', 0.0
    for g in gts:
        if g.ignore:
            continue
        o = iou(box, g.box)
        if o < 0.5:
            continue
        if g.class_name == cls:
            return 'right', ''
        if o > best_iou:
            best_other, best_iou = g.class_name, o
    if best_other:
        return 'wrong_class', best_other
    for g in gts:
        if g.ignore:
            ix = max(0.0, min(box[2], g.box[2]) - max(box[0], g.box[0]))
            iy = max(0.0, min(box[3], g.box[3]) - max(box[1], g.box[1]))
            area = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
            if area > 0 and ix * iy / area >= 0.5:
                return 'dont_care', ''
    return 'false', ''


def _corners(d: Detection) -> tuple[float, float, float, float]:
    return (d.box.x1, d.box.y1, d.box.x2, d.box.y2)


def what_happened(raw: Detection, refined: DetectionSet) -> tuple[str, str]:
    """(action, class after) of a detector box in the refined set: verified, kept,
    relabelled, named (rejected, back under the looker's name) or rejected."""
    for d in refined:  # the same box with the same detector class (two may share a box)
        if _corners(d) != _corners(raw) or (d.original_class_name or d.class_name) \
                != raw.class_name:
            continue
        if d.source == Source.LOOKER:
            return 'named', d.class_name
        if d.source == Source.DETECTOR:
            if canonical_class(d.class_name) != canonical_class(raw.class_name):
                return 'relabelled', canonical_class(d.class_name)
            return ('verified' if d.verified else 'kept'), canonical_class(d.class_name)
    return 'rejected', ''


def outcome(truth: str, true_class: str, action: str, after: str) -> str:
    """fixed | broken | still_wrong | confirmed (right, verified) | right_kept |
    dont_care."""
    if truth == 'dont_care':
        return 'dont_care'
    if truth == 'right':
        if action in ('relabelled', 'rejected', 'named'):
            return 'broken'
        return 'confirmed' if action == 'verified' else 'right_kept'
    if truth == 'wrong_class' and action == 'relabelled' and after == true_class:
        return 'fixed'
    if truth in ('wrong_class', 'false') and action in ('rejected', 'named'):
        return 'fixed'
    return 'still_wrong'


@dataclass(frozen=True)
class BoxResult:
    image: str
    detector_class: str
    score: float
    truth: str
    true_class: str
    action: str
    after: str
    outcome: str


def _labels_json(gt_path: Path) -> dict:
    path = gt_path.parent / 'labels.json'
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return {}


def run(config: Config, *, gt: str, images: str | None, limit: int | None):
    """(result, markdown, plots) of `mr-mllm eval looker`: per-box outcomes and the
    looker's added objects over a COCO set; every photo its own scene (one reasoning step
    each), with the looker's time per step."""
    data = datasets.load_coco(gt, limit=limit)
    root = images or data.path.parent
    labels = _labels_json(data.path)
    pipeline = Pipeline(with_changes(config, {'scene.describe_every_frame': True}))
    if pipeline.scene.looker is None or pipeline.scene.reinforcer is None:
        raise ValueError('the looker gain needs looker.enabled, reinforce.enabled and an '
                         'MLLM backend (template is enough)')
    boxes: list[BoxResult] = []
    added: list[dict] = []
    looker_ms: list[float] = []
    try:
        for im in data.images:
            rgb = datasets.load_image(im.file_name, root)
            gts = [o for o in data.objects if o.image == im.id]
            pipeline.reset()
            r = pipeline.process(Frame(rgb, 0, 'camera'))
            refined = r.refined if r.refined is not None else r.detections
            looker_ms.append(refined.timings_ms.get('looker_total', 0.0))
            for d in r.detections:
                cls = canonical_class(d.class_name)
                truth, true_class = box_truth(_corners(d), cls, gts)
                action, after = what_happened(d, refined)
                boxes.append(BoxResult(im.file_name, cls, round(d.score, 3), truth,
                                       true_class, action, after,
                                       outcome(truth, true_class, action, after)))
            matched = {i for i, g in enumerate(gts) if any(
                box_truth(_corners(d), canonical_class(d.class_name), [g])[0] == 'right'
                for d in r.detections)}
            for d in refined:
                if d.source != Source.LOOKER or any(_corners(d) == _corners(x)
                                                    for x in r.detections):
                    continue
                missed = [g.class_name for i, g in enumerate(gts)
                          if i not in matched and not g.ignore and g.class_name == d.class_name]
                info = labels.get(im.file_name, {})
                added.append({'image': im.file_name, 'name': d.class_name,
                              'probability': round(d.score, 3),
                              'recovered_miss': bool(missed),
                              'labels': info.get('classes', []),
                              'non_coco': info.get('non_coco', [])})
            for d in refined:  # rejected boxes named by the looker, with the photo's labels
                if d.source == Source.LOOKER and any(_corners(d) == _corners(x)
                                                     for x in r.detections):
                    info = labels.get(im.file_name, {})
                    added.append({'image': im.file_name, 'name': d.class_name,
                                  'probability': round(d.score, 3), 'box_named': True,
                                  'labels': info.get('classes', []),
                                  'non_coco': info.get('non_coco', [])})
    finally:
        pipeline.close()
    result = summarize(boxes, added, data.path, len(data.images))
    result['timing'] = {'looker': _percentiles(looker_ms)}
    return result, markdown(result), []


def _percentiles(values: Sequence[float]) -> dict:
    s = sorted(values) or [float('nan')]
    return {'p50': round(s[len(s) // 2], 1), 'p95': round(s[min(len(s) - 1,
                                                                round(0.95 * (len(s) - 1)))], 1)}


def summarize(boxes: Sequence[BoxResult], added: Sequence[dict], gt_path: Path,
              n_images: int) -> dict:
    wrong = [b for b in boxes if b.truth in ('wrong_class', 'false')]
    right = [b for b in boxes if b.truth == 'right']
    return {
        'ground_truth': str(gt_path), 'images': n_images, 'boxes': len(boxes),
        'right_boxes': len(right), 'wrong_boxes': len(wrong),
        'wrong_fixed': sum(b.outcome == 'fixed' for b in wrong),
        'wrong_still_wrong': sum(b.outcome == 'still_wrong' for b in wrong),
        'wrong_verified': sum(b.action == 'verified' for b in wrong),
        'right_broken': sum(b.outcome == 'broken' for b in right),
        'right_verified': sum(b.outcome == 'confirmed' for b in right),
        'actions': dict(Counter(b.action for b in boxes)),
        'added': list(added),
        'boxes_detail': [b.__dict__ for b in boxes],
    }


def markdown(result: dict) -> str:
    r = result
    lines = [f'Looker reinforcement gain on {r["images"]} photos ({r["ground_truth"]}), '
             f'{r["boxes"]} detector boxes', '',
             '| | boxes | fixed | still wrong | verified by the looker | broken |',
             '|---|---|---|---|---|---|',
             f'| wrong (wrong class or false) | {r["wrong_boxes"]} | {r["wrong_fixed"]} | '
             f'{r["wrong_still_wrong"]} | {r["wrong_verified"]} | - |',
             f'| right | {r["right_boxes"]} | - | - | {r["right_verified"]} | '
             f'{r["right_broken"]} |', '']
    changed = [b for b in r['boxes_detail'] if b['truth'] != 'dont_care' and (
        b['action'] not in ('kept', 'verified') or b['truth'] != 'right'
        and b['action'] == 'verified')]
    if changed:
        lines += ['| photo | detector | truth | looker | after | outcome |',
                  '|---|---|---|---|---|---|']
        lines += [f'| {b["image"][:48]} | {b["detector_class"]} {b["score"]:.2f} | '
                  f'{b["truth"]}{" (" + b["true_class"] + ")" if b["true_class"] else ""} | '
                  f'{b["action"]} | {b["after"]} | {b["outcome"]} |' for b in changed]
        lines.append('')
    if r['added']:
        lines += ['Named by the looker (objects it added for the frame, or boxes it named):',
                  '', '| photo | name | P | recovered miss | photo labels (COCO; other) |',
                  '|---|---|---|---|---|']
        lines += [f'| {a["image"][:48]} | {a["name"]} | {a["probability"]:.2f} | '
                  f'{"yes" if a.get("recovered_miss") else "-"} | '
                  f'{", ".join(a["labels"]) or "-"}; {", ".join(a["non_coco"]) or "-"} |'
                  for a in r['added']]
    return '\n'.join(lines)
