"""Evaluation outputs: JSON, markdown tables and a precision/recall PNG (matplotlib Agg).

Tables hold only numbers a rerun reproduces (metrics, counts, message-time latency);
wall-clock timings stay in the JSON under `timing`, because they depend on the machine.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

NA = '–'


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers with `digits` decimals, None as '–' (undefined), ints as they are."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return NA if math.isnan(value) else f'{value:.{digits}f}'
    return str(value).replace('|', '\\|').replace('\n', ' ')


def fmt_delta(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return NA
    d = b - a
    return f'{d:+.3f}' if abs(d) >= 5e-4 else '0'


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ['| ' + ' | '.join(header) + ' |',
             '|' + '|'.join('---' if i == 0 else '---:' for i in range(len(header))) + '|']
    lines += ['| ' + ' | '.join(fmt(v) for v in row) + ' |' for row in rows]
    return '\n'.join(lines)


def write_json(path: str | os.PathLike, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=1, sort_keys=False) + '\n',
                          encoding='utf-8')


# ------------------------------------------------------------------------ detections

_NO_COUNTS = {'gt': 0, 'tp': 0, 'fp': 0, 'fn': 0, 'precision': None, 'recall': None}


def detections_markdown(result: Mapping[str, Any]) -> str:
    """Summary (detector vs + MLLM, side by side) and the per-class table."""
    det, ref = result['detector'], result.get('with_mllm')
    rows = []
    for label, key, sub in (
            ('mean precision over predicted classes (IoU 0.5)', 'mean_precision', 'pr'),
            ('mean recall over ground-truth classes (IoU 0.5)', 'mean_recall', 'pr'),
            ('micro precision (IoU 0.5)', 'micro_precision', 'pr'),
            ('micro recall (IoU 0.5)', 'micro_recall', 'pr'),
            ('TP / FP / FN (IoU 0.5)', None, 'pr'),
            ('mAP@[.5:.95] (pycocotools)', 'map', 'coco'),
            ('AP50 (pycocotools)', 'ap50', 'coco')):
        if key is None:
            counts = [f'{r["pr"]["tp"]} / {r["pr"]["fp"]} / {r["pr"]["fn"]}' if r else NA
                      for r in (det, ref)]
            rows.append([label, counts[0], counts[1], NA])
            continue
        a = det[sub][key]
        b = ref[sub][key] if ref else None
        rows.append([label, a, b, fmt_delta(a, b)])
    image_level = [r.get('image_level') if r else None for r in (det, ref)]
    if image_level[0] is not None:
        a, b = (il['class_recall'] if il else None for il in image_level)
        rows.append(['image-level class recall (classes named per image)', a, b,
                     fmt_delta(a, b)])
        fa, fb = (il['false_classes'] if il else None for il in image_level)
        rows.append(['false classes (image, class pairs)', fa, NA if fb is None else fb,
                     NA if fb is None else fb - fa])
    summary = table(['metric', 'detector alone', 'with MLLM reinforcement', 'MLLM gain'], rows)
    classes = sorted({c for r in (det, ref) if r for c in r['pr']['per_class']}
                     | {c for r in (det, ref) if r
                        for c, ap in r['coco']['per_class'].items() if ap is not None})
    per_class = []
    for c in classes:
        row: list[Any] = [c]
        for r in (det, ref):
            if r is None:
                row += [NA] * 4
                continue
            k = r['pr']['per_class'].get(c, _NO_COUNTS)
            if r is det:
                row.insert(1, k['gt'])
            row += [f'{k["tp"]}/{k["fp"]}/{k["fn"]}', k['precision'], k['recall'],
                    r['coco']['per_class'].get(c)]
        per_class.append(row)
    per_class_table = table(['class', 'GT', 'det TP/FP/FN', 'det P', 'det R', 'det AP',
                             '+MLLM TP/FP/FN', '+MLLM P', '+MLLM R', '+MLLM AP'], per_class)
    notes = [f'{result["images"]} images, {result["gt_objects"]} ground-truth objects, '
             f'models: {_models(result)}.']
    if ref is None:
        notes.append('MLLM reinforcement not run (--no-mllm or mllm.backend none).')
    notes.append('AP `–`: class not among the ground-truth categories (COCOeval cannot '
                 'score it) or no ground truth; P `–`: class never predicted.')
    # long names (crop:/compose: recipes) as their 1-based position in the set
    position = {e['image']: k for k, e in enumerate(result.get('per_image', ()), 1)}

    def pairs(items) -> str:
        return ', '.join(f'{c} ({img if len(img) <= 40 else f"image {position.get(img)}"})'
                         for img, c in items) or 'none'

    lists = ''.join(
        f'\n{label}, {what}: {pairs(il[key])}\n'
        for label, il in (('Detector alone', image_level[0]),
                          ('With MLLM reinforcement', image_level[1])) if il
        for key, what in (('missed', 'classes missed'), ('false', 'false classes')))
    lists += ''.join(
        f'\n{label}, named outside the labelled vocabulary (not scored): '
        f'{pairs(r["outside_vocabulary"])}\n'
        for label, r in (('Detector alone', det), ('With MLLM reinforcement', ref))
        if r and r.get('outside_vocabulary'))
    return (summary + '\n\nPer class:\n\n' + per_class_table + '\n\n' + ' '.join(notes)
            + '\n' + lists)


def _models(result: Mapping[str, Any]) -> str:
    return ', '.join(f'{k} {v}' for k, v in result.get('models', {}).items()) or 'unknown'


def plot_precision_recall(result: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Grouped bars of precision and recall per class, detector alone vs with the MLLM;
    an undefined value is marked 'n/a' instead of a bar."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    runs = [('detector', result['detector'])]
    if result.get('with_mllm'):
        runs.append(('+ MLLM', result['with_mllm']))
    classes = sorted({c for _, r in runs for c in r['pr']['per_class']})
    series = []
    for name, r in runs:
        for metric in ('precision', 'recall'):
            series.append((f'{name} {metric}',
                           [r['pr']['per_class'].get(c, {}).get(metric) for c in classes]))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(classes) + 3.5), 4.0), dpi=100)
    colours = ['#1f77b4', '#aec7e8', '#d62728', '#ff9896']
    for k, (label, values) in enumerate(series):
        pos = x - 0.4 + width * (k + 0.5)
        heights = [v if v is not None else 0.0 for v in values]
        ax.bar(pos, heights, width, label=label, color=colours[k % len(colours)])
        for p, v in zip(pos, values):
            if v is None or v == 0:  # no bar to see: say why
                ax.text(p, 0.01, 'n/a' if v is None else '0', rotation=90, ha='center',
                        va='bottom', fontsize=7)
    ax.set_xticks(x, classes, rotation=30, ha='right')
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f'at IoU {result["detector"]["pr"]["iou_threshold"]}')
    ax.set_title(f'Per-class precision / recall ({result["images"]} images)')
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------ grounding

def grounding_markdown(result: Mapping[str, Any]) -> str:
    out = []
    ref = result.get('referring')
    if ref is not None:
        s = ref['scores']
        out.append(table(['referring expressions', 'value'], [
            ['expressions', s['n']],
            [f'accuracy (first cited box IoU >= {s["iou_threshold"]})', s['accuracy']],
            ['accuracy when a box is cited', s['accuracy_when_cited']],
            ['no citation', s['no_citation_share']],
            ['oracle: some detection has IoU >= 0.5 (upper bound)', s['oracle_accuracy']],
            ['accuracy when the oracle is reachable', s['accuracy_when_reachable']]]))
        out.append('Per expression:\n\n' + table(
            ['image', 'expression', 'cited', 'IoU', 'correct', 'best detection IoU'],
            [[r['image'], r['expression'],
              r['cited_class'] if r['cited_index'] is not None else NA,
              r['iou'], r['correct'], r['best_candidate_iou']] for r in ref['samples']]))
    desc, floor = result.get('descriptions'), result.get('descriptions_template')
    if desc is not None or floor is not None:
        # The MLLM's grounded descriptions beside the template baseline's (no model) of
        # the same detections: the floor any model has to beat.
        cols = ([('MLLM', desc)] if desc is not None else []) \
            + ([(floor['model'], floor)] if floor is not None else [])
        out.append(table(['grounded descriptions', *[c for c, _ in cols]], [
            ['images described', *[d['images'] for _, d in cols]],
            ['descriptions that follow the grammar', *[d.get('grounded', d['images'])
                                                       for _, d in cols]],
            ['cited objects', *[d['agreement']['citations'] for _, d in cols]],
            ['cited objects whose class the phrase names',
             *[d['agreement']['share'] for _, d in cols]]]))
        for name, d in cols:
            if d['agreement']['mismatches']:
                out.append(f'Mismatches ({name}): ' + '; '.join(
                    f'"{m["phrase"]}" -> {m["class"]}' for m in d['agreement']['mismatches'])
                    + '.')
        if desc is not None and desc.get('texts'):
            out.append('Descriptions:\n\n' + '\n'.join(
                f'- {t["image"]}: `{t["raw"]}`' for t in desc['texts']))
    out.append(f'Models: {_models(result)}; protocol: {result.get("protocol", NA)}.')
    return '\n\n'.join(out) + '\n'


# ---------------------------------------------------------------------------- alerts

def _lat(v: Mapping[str, Any], digits: int = 2) -> str:
    if v['mean'] is None:
        return NA
    return f'{v["mean"]:.{digits}f} / {v["max"]:.{digits}f}'


def alerts_markdown(result: Mapping[str, Any]) -> str:
    s = result['scores']
    rows = [[rule, v['events'], v['tp'], v['fp'], v['fn'], v['precision'], v['recall'],
             _lat(v['latency_frames'], 1), _lat(v['latency_s'])]
            for rule, v in s['per_rule'].items()]
    o = s['overall']
    rows.append(['**overall**', o['events'], o['tp'], o['fp'], o['fn'], o['precision'],
                 o['recall'], _lat(o['latency_frames'], 1), _lat(o['latency_s'])])
    text = table(['rule', 'events', 'TP', 'FP', 'FN', 'precision', 'recall',
                  'latency frames (mean / max)', 'latency s (mean / max)'], rows)
    notes = [f'{result["frames"]} frames in {result["clips"]} clip(s) from {result["source"]}, '
             f'models: {_models(result)}.']
    if result.get('not_evaluated'):
        notes.append('Not evaluated: ' + ', '.join(
            f'{k} ({v})' for k, v in result['not_evaluated'].items()) + '.')
    return text + '\n\n' + ' '.join(notes) + '\n'
