"""`mr-mllm describe IMAGE`: detection + MLLM on one image, printed with its grounding.

Every image is its own scene: the pipeline reasons on each (scene.describe_every_frame)."""

from __future__ import annotations

import json
from pathlib import Path

from ..core.config import load_config, with_changes
from ..core.images import draw_detections, write_rgb
from ..core.pipeline import FrameResult, Pipeline
from ..core.reasoning.prompts import looks_like_words
from ..core.types import Detection, Frame, Source
from .image_sources import iter_images


def format_result(name: str, result: FrameResult, model_names: dict[str, str]) -> str:
    ds = result.detections
    lines = [f'{name} ({result.frame.width}x{result.frame.height})',
             f'  detector: {model_names["detector"]}']
    for i, d in enumerate(ds):
        lines.append(f'    <obj{i}> {d.class_name} {d.score:.2f} '
                     f'[{d.box.x1:.0f},{d.box.y1:.0f},{d.box.x2:.0f},{d.box.y2:.0f}]')
    if not len(ds):
        lines.append('    (nothing detected)')
    sd = result.description
    if sd is not None:
        ds = sd.detections  # the reasoning step's set (looker, reinforcement): <objN> cite it
        if ds.detections != result.detections.detections or ds.looks_like:
            lines.append('  after the reasoning step (looker, reinforcement):')
            lines += [f'    <obj{i}> {_refined_line(d)}' for i, d in enumerate(ds)]
            if ds.looks_like:
                lines.append(f'    the whole image {looks_like_words(ds.looks_like)}')
        gt = sd.grounded_text
        lines.append(f'  description ({sd.mllm_model}'
                     f'{", adapter " + sd.fusion_adapter if sd.fusion_adapter else ""}):')
        lines.append(f'    {gt.text}')
        for p in gt.phrases:
            refs = ', '.join(f'<obj{i}> {ds[i].class_name}' for i in p.indices)
            lines.append(f'      "{p.text}" -> {refs}')
        if not gt.grounded:
            lines.append(f'    (ungrounded: {"; ".join(gt.problems)})')
    return '\n'.join(lines)


def _refined_line(d: Detection) -> str:
    """'cup 0.95 verified; looks like: espresso 82%' (+ what changed, the posture)."""
    line = f'{d.class_name} {d.score:.2f}'
    if d.original_class_name is not None:
        line += f' (detector: {d.original_class_name})'
    if d.source != Source.DETECTOR:
        line += f' [{d.source.value}]'
    if d.verified:
        line += ' verified'
    if d.looks_like:
        line += f'; {looks_like_words(d.looks_like)}'
    if d.posture:
        line += f'; {d.posture}'
    return line


def result_json(name: str, result: FrameResult, model_names: dict[str, str]) -> dict:
    ds = result.detections
    out = {'image': name, 'models': model_names,
           'detections': [{'index': i, 'class': d.class_name, 'score': round(d.score, 4),
                           'box_xyxy': [round(v, 1) for v in (d.box.x1, d.box.y1,
                                                               d.box.x2, d.box.y2)]}
                          for i, d in enumerate(ds)]}
    if result.description is not None:
        from ..replay.outputs import detection_set_json  # the results.jsonl form
        out['refined'] = detection_set_json(result.description.detections)
        gt = result.description.grounded_text
        out['description'] = {'text': gt.text, 'raw': gt.raw_text, 'grounded': gt.grounded,
                              'problems': list(gt.problems),
                              'phrases': [{'text': p.text, 'span': [p.start, p.end],
                                           'objects': list(p.indices)} for p in gt.phrases],
                              'model': result.description.mllm_model}
    return out


def add_arguments(p) -> None:
    p.add_argument('images', nargs='+',
                   help='image files, folders, sample:<name> or samples (all photos)')
    p.add_argument('--config', help='config YAML merged over the packaged defaults')
    p.add_argument('--json', help='also write the results as JSON here')
    p.add_argument('--out', help='folder for annotated images')


def run(args) -> int:
    config = load_config(args.config) if args.config else load_config()
    pipeline = Pipeline(with_changes(config, {'scene.describe_every_frame': True}))
    results = []
    try:
        for name, rgb in iter_images(args.images):
            result = pipeline.process(Frame(rgb, 0, name))
            results.append(result_json(name, result, pipeline.model_names))
            print(format_result(name, result, pipeline.model_names), flush=True)
            if args.out:
                out = Path(args.out)
                out.mkdir(parents=True, exist_ok=True)
                shown = result.refined if result.refined is not None else result.detections
                write_rgb(out / f'{name}.jpg', draw_detections(rgb, shown))
    finally:
        pipeline.close()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0
