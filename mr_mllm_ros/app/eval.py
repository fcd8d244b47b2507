"""`mr-mllm eval detections|grounding|alerts`: measure the configured models on labelled data.

Every task runs the models through core.pipeline.Pipeline (the code path of the nodes), so
the numbers describe what a robot with this config would publish. Formats and metric
definitions: mr_mllm_ros/eval/datasets.py and metrics.py; results: docs/EVALUATION.md.
Prints a markdown table; --out DIR also writes <name>.json, <name>.md (and a PNG plot).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import statistics
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import yaml

from ..core.config import Config, load_config
from ..core.errors import ConfigError
from ..core.pipeline import FrameResult, Pipeline
from ..core.types import DetectionSet, Frame, Source
from ..eval import datasets, grounding_floor, metrics, report

log = logging.getLogger(__name__)

#: Rule types left out of the alert evaluation unless --exclude says otherwise: whether
#: the MLLM disagrees with the detector depends on the detector (no model-independent
#: label exists), and camera_stale is raised by a timer, never on a frame.
DEFAULT_EXCLUDED = ('detector_mllm_disagreement', 'camera_stale')
PROGRESS_EVERY = 50


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest='eval_task', required=True, metavar='TASK')

    d = sub.add_parser('detections', help='per-class P/R at IoU 0.5 and COCO mAP, detector '
                       'alone and with MLLM reinforcement')
    d.add_argument('--gt', required=True, help='COCO instances json')
    d.add_argument('--images', help='folder of the images named by file_name (default: the '
                   "json's folder; sample names resolve to the packaged photos)")
    d.add_argument('--class-map', help='YAML/JSON {dataset name: name} applied to ground '
                   'truth and predictions after the COCO synonyms')
    d.add_argument('--class-agnostic', action='store_true',
                   help='every class is "object" (CODA-style corner-case recall)')
    d.add_argument('--iou', type=float, default=metrics.IOU_THRESHOLD,
                   help='IoU threshold of the P/R matching (default 0.5)')

    g = sub.add_parser('grounding', help='referring-expression accuracy and phrase/class '
                       'agreement of grounded descriptions')
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument('--data', help='referring-expression JSONL')
    src.add_argument('--refer', help="refer toolkit refs(umd).p (RefCOCO/+/g); needs "
                     '--instances and --split')
    g.add_argument('--instances', help='instances.json of the refer toolkit dataset')
    g.add_argument('--split', default='val', help='refer split (default val)')
    g.add_argument('--images', help='folder relative image references resolve against '
                   '(default: the data file\'s folder)')
    g.add_argument('--protocol', choices=('retrieval', 'question'), default='retrieval',
                   help='retrieval: the reply is forced to start <ground>EXPRESSION</ground>'
                   '<objects><obj and the model only picks the index (ChatRex); question: '
                   'the answer task is asked "Which object is EXPRESSION?" and the first '
                   'cited object counts (for servers that cannot continue a prefix)')

    a = sub.add_parser('alerts', help='alert precision/recall per rule and latency over an '
                       'image sequence or a bag')
    a.add_argument('--labels', required=True, help='alert labels JSONL')
    a.add_argument('--bag', help='rosbag2 folder or file; labels then index its images')
    a.add_argument('--images', help='folder relative image references of the labels resolve '
                   'against (image sequences; default: the labels file\'s folder)')
    a.add_argument('--topic', help='image topic of the bag (default: its only one)')
    a.add_argument('--rules', help='alert rules YAML (default: the config\'s, i.e. the '
                   'packaged config/alert_rules.yaml)')
    a.add_argument('--rate', type=float, default=10.0,
                   help='frame rate of an image sequence, Hz (default 10)')
    a.add_argument('--tolerance-frames', type=int, default=0,
                   help='an alert up to this many frames after an event still detects it')
    a.add_argument('--exclude', default=','.join(DEFAULT_EXCLUDED),
                   help='rule names or types not evaluated (comma-separated; default: '
                   '%(default)s)')

    for s in (d, g, a):
        s.add_argument('--config', help='config YAML merged over the packaged defaults')
        s.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                       help='override one config key, e.g. --set detector.conf=0.05')
        s.add_argument('--no-mllm', action='store_true',
                       help='detector only (mllm.backend none): fast, no MLLM columns')
        s.add_argument('--limit', type=int, help='only the first N images / expressions')
        s.add_argument('--out', help='folder for <name>.json, <name>.md (and plots)')
        s.add_argument('--name', help='file name stem in --out (default: the task)')


def run(args) -> int:
    config = build_config(args)
    task = {'detections': run_detections, 'grounding': run_grounding,
            'alerts': run_alerts}[args.eval_task]
    t0 = time.perf_counter()
    result, markdown, plots = task(args, config)
    result['timing']['total_s'] = round(time.perf_counter() - t0, 2)
    print(markdown)
    print(f'(wall time on this machine: {result["timing"]["total_s"]} s; per frame '
          f'{_timing_line(result["timing"])})')
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        name = args.name or args.eval_task
        report.write_json(out / f'{name}.json', result)
        (out / f'{name}.md').write_text(markdown, encoding='utf-8')
        for suffix, draw in plots:
            draw(out / f'{name}{suffix}')
        print(f'wrote {out / name}.json, .md' + ''.join(f', {name}{s}' for s, _ in plots))
    return 0


def build_config(args) -> Config:
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition('=')
        if not sep or not key.strip():
            raise ConfigError(f'--set {item!r}: expected KEY=VALUE, e.g. detector.conf=0.05')
        overrides[key.strip()] = yaml.safe_load(value)
    if getattr(args, 'rules', None):
        overrides['alerts.rules_file'] = str(Path(args.rules).resolve())
    return load_config(args.config, overrides=overrides)


def _timing_line(timing: dict) -> str:
    parts = [f'{k} p50 {v["p50"]:.0f} ms / p95 {v["p95"]:.0f} ms'
             for k, v in timing.items() if isinstance(v, dict)]
    return ', '.join(parts) or 'n/a'


def _percentiles(values: Sequence[float]) -> dict:
    if not values:
        return {'p50': float('nan'), 'p95': float('nan')}
    s = sorted(values)
    return {'p50': round(statistics.median(s), 1),
            'p95': round(s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))], 1)}


def _timing(results: Iterable[FrameResult]) -> dict:
    rs = list(results)
    return {k: _percentiles([r.timings_ms.get(k, 0.0) for r in rs])
            for k in ('perception', 'scene')}


def _open(config: Config, args) -> Pipeline:
    pipeline = Pipeline(config, with_mllm=not args.no_mllm)
    log.info('models: %s', pipeline.model_names)
    return pipeline


def _progress(i: int, n: int, what: str) -> None:
    if i and i % PROGRESS_EVERY == 0:
        log.info('%d / %d %s', i, n, what)


# ------------------------------------------------------------------------ detections

def _objs(image: Any, ds: DetectionSet, class_map: dict | None) -> list[metrics.Obj]:
    return [metrics.Obj(image, metrics.canonical_class(d.class_name, class_map),
                        (d.box.x1, d.box.y1, d.box.x2, d.box.y2), d.score) for d in ds]


def _det_json(ds: DetectionSet) -> list[dict]:
    out = []
    for d in ds:
        item = {'class': d.class_name, 'score': round(d.score, 4),
                'box_xyxy': [round(v, 1) for v in (d.box.x1, d.box.y1, d.box.x2, d.box.y2)]}
        if d.source != Source.DETECTOR:
            item['source'] = d.source.value
        if d.verified:
            item['verified'] = True
        if d.original_score is not None:
            item['detector_score'] = round(d.original_score, 4)
        if d.original_class_name is not None:
            item['detector_class'] = d.original_class_name
        out.append(item)
    return out


def mllm_changes(raw: DetectionSet, refined: DetectionSet) -> list[str]:
    """What the MLLM reinforcement did to a frame's detections, in words."""
    changes = []
    kept = {(d.box.x1, d.box.y1, d.box.x2, d.box.y2) for d in refined}
    for d in raw:
        if (d.box.x1, d.box.y1, d.box.x2, d.box.y2) not in kept:
            changes.append(f'rejected {d.class_name} {d.score:.2f}')
    for d in refined:
        if d.source == Source.MLLM:
            changes.append(f'added {d.class_name} {d.score:.2f}')
            continue
        if d.original_class_name is not None:
            changes.append(f'relabelled {d.original_class_name} -> {d.class_name}')
        if d.original_score is not None:
            changes.append(f'{"verified" if d.verified else "re-scored"} {d.class_name} '
                           f'{d.original_score:.2f} -> {d.score:.2f}')
    return changes


def _class_map(args) -> dict | None:
    if args.class_agnostic:
        return {'*': 'object'}
    if not args.class_map:
        return None
    try:
        data = yaml.safe_load(Path(args.class_map).read_text(encoding='utf-8'))
    except OSError as e:
        raise ConfigError(f'cannot read --class-map {args.class_map}: {e.strerror}') from e
    if not isinstance(data, dict):
        raise ConfigError(f'--class-map {args.class_map}: expected a mapping of names')
    return {metrics.canonical_class(k): metrics.canonical_class(v) for k, v in data.items()}


def run_detections(args, config: Config):
    class_map = _class_map(args)
    data = datasets.load_coco(args.gt, class_map, limit=args.limit)
    root = args.images or data.path.parent
    pipeline = _open(config, args)
    with_mllm = pipeline.scene.reasoner is not None
    raw_preds: list[metrics.Obj] = []
    refined_preds: list[metrics.Obj] = []
    per_image, results = [], []
    try:
        for k, im in enumerate(data.images):
            _progress(k, len(data.images), 'images')
            rgb = datasets.load_image(im.file_name, root)
            if (rgb.shape[1], rgb.shape[0]) != (im.width, im.height):
                raise ConfigError(f'{args.gt}: image {im.file_name!r} is {rgb.shape[1]}x'
                                  f'{rgb.shape[0]} but the ground truth says {im.width}x'
                                  f'{im.height}')
            # One process() per image: `detections` is the detector alone, `refined`
            # the same boxes after the MLLM's verification / labels / re-detection.
            result = pipeline.process(Frame(rgb, k * 1_000_000_000, im.file_name),
                                      now_s=float(k))
            results.append(result)
            refined = result.refined if result.refined is not None else result.detections
            raw_preds += _objs(im.id, result.detections, class_map)
            refined_preds += _objs(im.id, refined, class_map)
            entry = {'image': im.file_name, 'detector': _det_json(result.detections)}
            if with_mllm:
                entry['with_mllm'] = _det_json(refined)
                entry['mllm_changes'] = mllm_changes(result.detections, refined)
            per_image.append(entry)
        models = pipeline.model_names
    finally:
        pipeline.close()
    ids = [im.id for im in data.images]

    def score(preds):
        return {'pr': metrics.precision_recall(data.objects, preds, args.iou),
                'coco': metrics.coco_map(ids, data.objects, preds, data.categories)}

    result = {'task': 'detections', 'gt': str(args.gt), 'images': len(ids),
              'gt_objects': sum(1 for o in data.objects if not o.ignore),
              'ignored_regions': sum(1 for o in data.objects if o.ignore),
              'models': models, 'config_overrides': args.set,
              'class_map': class_map, 'detector': score(raw_preds),
              'with_mllm': score(refined_preds) if with_mllm else None,
              'per_image': per_image, 'timing': _timing(results)}
    return result, report.detections_markdown(result), [
        ('_pr.png', lambda path: report.plot_precision_recall(result, path))]


# ------------------------------------------------------------------------ grounding

_CITED_RE = re.compile(r'<obj(\d+)>')


def refer(pipeline: Pipeline, frame: Frame, ds: DetectionSet, expression: str,
          protocol: str = 'retrieval') -> list[int]:
    """Indices of `ds` the MLLM cites for a referring expression, in its order.

    retrieval (ChatRex): the answer task's prompt, with the reply forced to begin
    `<ground>EXPRESSION</ground><objects><obj`, so the model's only choice is which index
    (constrained decoding allows only listed objects). question: "Which object is
    EXPRESSION?" through SceneReasoner.answer; the cited objects of its reply."""
    from ..core.prompts import sanitize_user_text
    reasoner = pipeline.scene.reasoner
    expression = sanitize_user_text(expression, 500)
    image = frame.image if reasoner.backend.sees_images else None
    if protocol == 'question':
        answer = reasoner.answer(frame, ds, f'Which object is {expression}?')
        return list(dict.fromkeys(i for p in answer.grounded_text.phrases for i in p.indices))
    request = reasoner.prompts.answer(ds, f'Which object is {expression}?', image)
    allowed = set(request.extra['object_indices'])
    if not allowed:
        return []
    prefix = f'<ground>{expression}</ground><objects><obj'
    request = dataclasses.replace(request, answer_prefix=prefix, max_new_tokens=8,
                                  stop=('</objects>',))
    text = reasoner.backend.generate(request).text
    # The reply continues the forced '<obj': put it back to read the references.
    tail = text[len(prefix) - len('<obj'):] if text.startswith(prefix) else text
    tail = tail.split('</objects>')[0]
    return list(dict.fromkeys(int(n) for n in _CITED_RE.findall(tail) if int(n) in allowed))


def _group_by_image(samples: Sequence[datasets.ReferringSample]) -> Iterator[tuple[str, list]]:
    groups: dict[str, list] = {}
    for s in samples:
        groups.setdefault(s.image, []).append(s)
    yield from groups.items()


def run_grounding(args, config: Config):
    if args.refer:
        if not args.instances:
            raise ConfigError('--refer needs --instances (the dataset\'s instances.json)')
        samples = datasets.load_refer_pickle(args.refer, args.instances, args.split)
        root = args.images or Path(args.refer).parent
    else:
        samples = datasets.load_referring_jsonl(args.data)
        root = args.images or Path(args.data).parent
    if args.limit:
        samples = samples[:args.limit]
    images = list(_group_by_image(samples))
    pipeline = _open(config, args)
    with_mllm = pipeline.scene.reasoner is not None
    outcomes, rows, citations, results, texts, described_sets = [], [], [], [], [], []
    described = grounded = 0
    try:
        for k, (image, group) in enumerate(images):
            _progress(k, len(images), 'images')
            frame = Frame(datasets.load_image(image, root), k * 1_000_000_000,
                          Path(image).name)
            result = pipeline.process(frame, now_s=float(k))
            results.append(result)
            ds = result.refined if result.refined is not None else result.detections
            sd = result.description
            described_sets.append(sd.detections if sd is not None else ds)
            if sd is not None and not sd.mllm_model.startswith('none'):
                described += 1
                grounded += int(sd.grounded_text.grounded)
                texts.append({'image': image, 'text': sd.text,
                              'raw': sd.grounded_text.raw_text})
                citations += [(p.text, sd.detections[i].class_name)
                              for p in sd.grounded_text.phrases for i in p.indices]
            boxes = tuple((d.box.x1, d.box.y1, d.box.x2, d.box.y2) for d in ds)
            for s in group:
                cited = refer(pipeline, frame, ds, s.expression, args.protocol) \
                    if with_mllm else []
                outcome = metrics.ReferringOutcome(s.box, tuple(boxes[i] for i in cited),
                                                   boxes)
                outcomes.append(outcome)
                first = cited[0] if cited else None
                v = metrics.iou(boxes[first], s.box) if first is not None else None
                rows.append({'id': s.id, 'image': image, 'expression': s.expression,
                             'gt_box_xyxy': list(s.box), 'cited_index': first,
                             'cited_class': ds[first].class_name if first is not None else None,
                             'cited': cited, 'iou': v,
                             'correct': v is not None and v >= metrics.IOU_THRESHOLD,
                             'best_candidate_iou': max(
                                 (metrics.iou(b, s.box) for b in boxes), default=0.0)})
        models = pipeline.model_names
    finally:
        pipeline.close()
    scores = metrics.referring_scores(outcomes)
    if not with_mllm:  # detector only: just the oracle bound is measured
        for key in ('accuracy', 'no_citation_share', 'accuracy_when_cited',
                    'accuracy_when_reachable'):
            scores[key] = None
    result = {'task': 'grounding', 'data': str(args.data or args.refer),
              'protocol': args.protocol if with_mllm else 'none (--no-mllm: oracle only)',
              'models': models, 'config_overrides': args.set,
              'referring': {'scores': scores, 'samples': rows},
              'descriptions': {'images': described, 'grounded': grounded,
                               'agreement': metrics.phrase_class_agreement(citations),
                               'texts': texts}
              if with_mllm else None,
              'descriptions_template': grounding_floor.template_descriptions(config,
                                                                             described_sets),
              'timing': _timing(results)}
    return result, report.grounding_markdown(result), []


# ---------------------------------------------------------------------------- alerts

@dataclasses.dataclass(frozen=True)
class _SeqFrame:
    clip: str
    stamp_ns: int
    expected: frozenset[str]
    rgb: Any


def _sequence_frames(args) -> tuple[list[_SeqFrame] | Iterator[_SeqFrame], str]:
    if args.bag:
        labels = datasets.load_bag_alert_labels(args.labels)

        def from_bag():
            count = 0
            for im in datasets.iter_bag_images(args.bag, args.topic):
                count += 1
                yield _SeqFrame('bag', im.stamp_ns, labels.get(im.index, frozenset()), im.rgb)
            beyond = sorted(i for i in labels if i >= count)
            if beyond and not args.limit:
                log.warning('%s labels frames %d..%d but the bag has %d images on the topic: '
                            'those labels were not evaluated', args.labels, beyond[0],
                            beyond[-1], count)
        return from_bag(), f'bag {args.bag}'
    if not args.rate > 0:
        raise ConfigError(f'--rate {args.rate}: expected a frame rate > 0 Hz')
    seq = datasets.load_alert_sequence(args.labels)
    root = args.images or Path(args.labels).parent
    cache: dict[tuple[str, str], Any] = {}
    frames = []
    for i, f in enumerate(seq):
        key = (f.image, f.transform)
        if key not in cache:
            cache[key] = datasets.apply_transform(datasets.load_image(f.image, root),
                                                  f.transform)
        # Message time starts at 1 s, so no clock reads as "never".
        frames.append(_SeqFrame(f.clip, 1_000_000_000 + round(i * 1e9 / args.rate),
                                f.expected, cache[key]))
    return frames, f'image sequence {args.labels} at {args.rate:g} Hz'


def run_alerts(args, config: Config):
    if not config.alerts.enabled:
        raise ConfigError('alerts.enabled is false in the config: nothing to evaluate')
    pipeline = _open(config, args)
    engine = pipeline.scene.alerts
    excluded = {x.strip() for x in args.exclude.split(',') if x.strip()}
    names = [r.name for r in engine.rules]
    evaluated = [r.name for r in engine.rules if r.enabled and r.name not in excluded
                 and r.type not in excluded]
    not_evaluated = {r.name: 'disabled' if not r.enabled else 'excluded by --exclude'
                     for r in engine.rules if r.name not in evaluated}
    frames_in, source = _sequence_frames(args)
    records: list[metrics.AlertFrame] = []
    per_frame, results = [], []
    clips: list[str] = []
    try:
        for i, f in enumerate(frames_in):
            if args.limit and i >= args.limit:
                break
            unknown = f.expected - set(names)
            if unknown:
                raise ConfigError(f'{args.labels}: frame {i} expects rule(s) '
                                  f'{", ".join(sorted(unknown))} that the rules file does '
                                  f'not have; its rules: {", ".join(names)}')
            if not clips or f.clip != clips[-1]:
                if clips:
                    engine.reset()  # a new recording: no debounce/cooldown carries over
                clips.append(f.clip)
            now_s = f.stamp_ns / 1e9
            result = pipeline.process(Frame(f.rgb, f.stamp_ns, 'camera'), now_s=now_s,
                                      describe=pipeline.scene.reasoner is not None)
            results.append(result)
            raised = frozenset(a.rule for a in result.alerts)
            records.append(metrics.AlertFrame(f.clip, now_s, f.expected & set(evaluated),
                                              raised & set(evaluated)))
            per_frame.append({'index': i, 'clip': f.clip, 'stamp_s': round(now_s, 6),
                              'expected': sorted(f.expected), 'raised': sorted(raised),
                              'messages': [f'{a.rule}: {a.message}' for a in result.alerts]})
        models = pipeline.model_names
    finally:
        pipeline.close()
    scores = metrics.alert_scores(records, [r for r in evaluated if any(
        r in f.expected or r in f.raised for f in records)], args.tolerance_frames)
    judged = config.alerts.mllm_judgement and pipeline.scene.reasoner is not None
    for r in engine.rules:
        if r.name in evaluated and r.name not in scores['per_rule']:
            not_evaluated[r.name] = 'never asked (alerts.mllm_judgement off or no MLLM)' \
                if r.type == 'mllm_judgement' and not judged else 'no labelled event, no alert'
    result = {'task': 'alerts', 'labels': str(args.labels), 'source': source,
              'frames': len(records), 'clips': len(clips), 'models': models,
              'config_overrides': args.set, 'rules_file': config.alerts.rules_file or
              'packaged config/alert_rules.yaml', 'scores': scores,
              'not_evaluated': not_evaluated, 'per_frame': per_frame,
              'timing': _timing(results)}
    return result, report.alerts_markdown(result), []
