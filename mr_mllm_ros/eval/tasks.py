"""The evaluation procedures behind `mr-mllm eval detections|grounding|alerts` (the command
line in app/eval.py only parses, prints and writes).

Every task runs the models through core.pipeline.Pipeline (the code path of the nodes), so
the numbers describe what a robot with this config would publish. The detection and
grounding sets are still images, each its own scene: one reasoning step per image
(scene.describe_every_frame). The alert evaluation runs image sequences and bags in
message time with the live reasoning schedule (core.reasoning.schedule), so the MLLM judgement and
feedback alerts come at the moments the live graph would raise them. Each task returns
(result dict, markdown, [(file suffix, plot function)]).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import statistics
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import yaml

from ..core.config import Config, with_changes
from ..core.detection.labels import COCO_CLASSES
from ..core.errors import ConfigError
from ..core.pipeline import FrameResult, Pipeline
from ..core.types import DetectionSet, Frame, Source
from . import datasets, grounding_floor, metrics, result_files

log = logging.getLogger(__name__)

#: Rule types left out of the alert evaluation unless --exclude says otherwise: whether
#: the MLLM disagrees with the detector depends on the detector (no model-independent
#: label exists), and camera_stale is raised by a timer, never on a frame.
DEFAULT_EXCLUDED = ('detector_mllm_disagreement', 'camera_stale')
PROGRESS_EVERY = 50


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


def _open(config: Config, with_mllm: bool, per_image: bool) -> Pipeline:
    """The Pipeline; `per_image`: every image is its own scene, reasoned on once
    (scene.describe_every_frame), else the live schedule in message time."""
    if per_image:
        config = with_changes(config, {'scene.describe_every_frame': True})
    pipeline = Pipeline(config, with_mllm=with_mllm)
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


def load_class_map(path: str | None, class_agnostic: bool = False) -> dict | None:
    """{dataset name: name} from a YAML/JSON file; class_agnostic: everything 'object'."""
    if class_agnostic:
        return {'*': 'object'}
    if not path:
        return None
    try:
        data = yaml.safe_load(Path(path).read_text(encoding='utf-8'))
    except OSError as e:
        raise ConfigError(f'cannot read --class-map {path}: {e.strerror}') from e
    if not isinstance(data, dict):
        raise ConfigError(f'--class-map {path}: expected a mapping of names')
    return {metrics.canonical_class(k): metrics.canonical_class(v) for k, v in data.items()}


def run_detections(config: Config, *, gt: str, images: str | None, class_map: dict | None,
                   iou: float, with_mllm: bool, limit: int | None, overrides: list[str],
                   image_labels: str | None = None):
    """Per-class P/R, COCO mAP and image-level class recall of the detector alone and
    with MLLM reinforcement on a COCO set; every image is its own scene (one reasoning
    step each). `image_labels`: extra image-level labels (datasets.load_image_labels)."""
    data = datasets.load_coco(gt, class_map, limit=limit)
    root = images or data.path.parent
    pipeline = _open(config, with_mllm, per_image=True)
    with_mllm = pipeline.scene.reasoner is not None
    raw_preds: list[metrics.Obj] = []
    refined_preds: list[metrics.Obj] = []
    per_image, results = [], []
    try:
        for k, im in enumerate(data.images):
            _progress(k, len(data.images), 'images')
            rgb = datasets.load_image(im.file_name, root)
            if (rgb.shape[1], rgb.shape[0]) != (im.width, im.height):
                raise ConfigError(f'{gt}: image {im.file_name!r} is {rgb.shape[1]}x'
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

    present, dont_care = _image_level_truth(data, image_labels, class_map)
    names = {im.id: im.file_name for im in data.images}

    # Names the labels cannot judge (the looker's "fox squirrel" beside COCO ground truth)
    # are listed apart, never scored: neither true nor false.
    vocabulary = set(COCO_CLASSES) | set(data.categories)

    def score(preds):
        outside = sorted({(names[p.image], p.class_name) for p in preds
                          if p.class_name not in vocabulary})
        preds = [p for p in preds if p.class_name in vocabulary]
        said: dict[str, set[str]] = {}
        for p in preds:
            said.setdefault(names[p.image], set()).add(p.class_name)
        return {'pr': metrics.precision_recall(data.objects, preds, iou),
                'coco': metrics.coco_map(ids, data.objects, preds, data.categories),
                'image_level': metrics.image_classes(present, dont_care, said),
                'outside_vocabulary': [list(pair) for pair in outside]}

    result = {'task': 'detections', 'gt': str(gt), 'images': len(ids),
              'gt_objects': sum(1 for o in data.objects if not o.ignore),
              'ignored_regions': sum(1 for o in data.objects if o.ignore),
              'models': models, 'config_overrides': overrides,
              'class_map': class_map, 'detector': score(raw_preds),
              'with_mllm': score(refined_preds) if with_mllm else None,
              'per_image': per_image, 'timing': _timing(results)}
    return result, result_files.detections_markdown(result), [
        ('_pr.png', lambda path: result_files.plot_precision_recall(result, path))]


def _image_level_truth(data: datasets.CocoSet, image_labels: str | None,
                       class_map: dict | None) -> tuple[dict, dict]:
    """Per file name: the classes in the image (a non-crowd box, or listed in the image
    labels) and the don't-care ones (only crowd regions, or `maybe`)."""
    names = {im.id: im.file_name for im in data.images}
    present: dict[str, set[str]] = {n: set() for n in names.values()}
    dont_care: dict[str, set[str]] = {n: set() for n in names.values()}
    for o in data.objects:
        (dont_care if o.ignore else present)[names[o.image]].add(o.class_name)
    if image_labels:
        for name, (classes, maybe) in datasets.load_image_labels(image_labels,
                                                                 class_map).items():
            if name in present:
                present[name] |= classes
                dont_care[name] |= maybe
    return present, dont_care


# ------------------------------------------------------------------------ grounding

_CITED_RE = re.compile(r'<obj(\d+)>')


def refer(pipeline: Pipeline, frame: Frame, ds: DetectionSet, expression: str,
          protocol: str = 'retrieval') -> list[int]:
    """Indices of `ds` the MLLM cites for a referring expression, in its order.

    retrieval (ChatRex): the answer task's prompt, with the reply forced to begin
    `<ground>EXPRESSION</ground><objects><obj`, so the model's only choice is which index
    (constrained decoding allows only listed objects). question: "Which object is
    EXPRESSION?" through SceneReasoner.answer; the cited objects of its reply."""
    from ..core.reasoning.prompts import sanitize_user_text
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


def run_grounding(config: Config, *, data: str | None, refer_file: str | None,
                  instances: str | None, split: str, images: str | None, protocol: str,
                  with_mllm: bool, limit: int | None, overrides: list[str]):
    """Referring-expression accuracy (JSONL or a refer toolkit pickle) and phrase/class
    agreement of the descriptions; every image is its own scene."""
    if refer_file:
        if not instances:
            raise ConfigError('--refer needs --instances (the dataset\'s instances.json)')
        samples = datasets.load_refer_pickle(refer_file, instances, split)
        root = images or Path(refer_file).parent
    else:
        samples = datasets.load_referring_jsonl(data)
        root = images or Path(data).parent
    if limit:
        samples = samples[:limit]
    by_image = list(_group_by_image(samples))
    pipeline = _open(config, with_mllm, per_image=True)
    with_mllm = pipeline.scene.reasoner is not None
    outcomes, rows, citations, results, texts, described_sets = [], [], [], [], [], []
    described = grounded = 0
    try:
        for k, (image, group) in enumerate(by_image):
            _progress(k, len(by_image), 'images')
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
                cited = refer(pipeline, frame, ds, s.expression, protocol) \
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
    result = {'task': 'grounding', 'data': str(data or refer_file),
              'protocol': protocol if with_mllm else 'none (--no-mllm: oracle only)',
              'models': models, 'config_overrides': overrides,
              'referring': {'scores': scores, 'samples': rows},
              'descriptions': {'images': described, 'grounded': grounded,
                               'agreement': metrics.phrase_class_agreement(citations),
                               'texts': texts}
              if with_mllm else None,
              'descriptions_template': grounding_floor.template_descriptions(config,
                                                                             described_sets),
              'timing': _timing(results)}
    return result, result_files.grounding_markdown(result), []


# ---------------------------------------------------------------------------- alerts

@dataclasses.dataclass(frozen=True)
class _SeqFrame:
    clip: str
    stamp_ns: int
    expected: frozenset[str]
    rgb: Any


def _sequence_frames(labels_file: str, bag: str | None, topic: str | None,
                     images: str | None, rate: float, limit: int | None,
                     ) -> tuple[list[_SeqFrame] | Iterator[_SeqFrame], str]:
    if bag:
        labels = datasets.load_bag_alert_labels(labels_file)

        def from_bag():
            count = 0
            for im in datasets.iter_bag_images(bag, topic):
                count += 1
                yield _SeqFrame('bag', im.stamp_ns, labels.get(im.index, frozenset()), im.rgb)
            beyond = sorted(i for i in labels if i >= count)
            if beyond and not limit:
                log.warning('%s labels frames %d..%d but the bag has %d images on the topic: '
                            'those labels were not evaluated', labels_file, beyond[0],
                            beyond[-1], count)
        return from_bag(), f'bag {bag}'
    if not rate > 0:
        raise ConfigError(f'--rate {rate}: expected a frame rate > 0 Hz')
    seq = datasets.load_alert_sequence(labels_file)
    root = images or Path(labels_file).parent
    cache: dict[tuple[str, str], Any] = {}
    frames = []
    for i, f in enumerate(seq):
        key = (f.image, f.transform)
        if key not in cache:
            cache[key] = datasets.apply_transform(datasets.load_image(f.image, root),
                                                  f.transform)
        # Message time starts at 1 s, so no clock reads as "never".
        frames.append(_SeqFrame(f.clip, 1_000_000_000 + round(i * 1e9 / rate),
                                f.expected, cache[key]))
    return frames, f'image sequence {labels_file} at {rate:g} Hz'


def run_alerts(config: Config, *, labels: str, bag: str | None, images: str | None,
               topic: str | None, rate: float, tolerance_frames: int, exclude: str,
               with_mllm: bool, limit: int | None, overrides: list[str]):
    """Alert precision/recall per rule and latency over an image sequence or a bag, the
    MLLM reasoning at the live schedule in message time (fresh state per clip)."""
    if not config.alerts.enabled:
        raise ConfigError('alerts.enabled is false in the config: nothing to evaluate')
    pipeline = _open(config, with_mllm, per_image=False)
    engine = pipeline.scene.alerts
    excluded = {x.strip() for x in exclude.split(',') if x.strip()}
    names = [r.name for r in engine.rules]
    evaluated = [r.name for r in engine.rules if r.enabled and r.name not in excluded
                 and r.type not in excluded]
    not_evaluated = {r.name: 'disabled' if not r.enabled else 'excluded by --exclude'
                     for r in engine.rules if r.name not in evaluated}
    frames_in, source = _sequence_frames(labels, bag, topic, images, rate, limit)
    records: list[metrics.AlertFrame] = []
    per_frame, results = [], []
    clips: list[str] = []
    try:
        for i, f in enumerate(frames_in):
            if limit and i >= limit:
                break
            unknown = f.expected - set(names)
            if unknown:
                raise ConfigError(f'{labels}: frame {i} expects rule(s) '
                                  f'{", ".join(sorted(unknown))} that the rules file does '
                                  f'not have; its rules: {", ".join(names)}')
            if not clips or f.clip != clips[-1]:
                if clips:
                    pipeline.reset()  # a new recording: no debounce, cooldown, schedule
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
        r in f.expected or r in f.raised for f in records)], tolerance_frames)
    judged = config.alerts.mllm_judgement and pipeline.scene.reasoner is not None
    for r in engine.rules:
        if r.name in evaluated and r.name not in scores['per_rule']:
            not_evaluated[r.name] = 'never asked (alerts.mllm_judgement off or no MLLM)' \
                if r.type == 'mllm_judgement' and not judged else 'no labelled event, no alert'
    result = {'task': 'alerts', 'labels': str(labels), 'source': source,
              'frames': len(records), 'clips': len(clips), 'models': models,
              'config_overrides': overrides, 'rules_file': config.alerts.rules_file or
              'packaged config/alert_rules.yaml', 'scores': scores,
              'not_evaluated': not_evaluated, 'per_frame': per_frame,
              'timing': _timing(results)}
    return result, result_files.alerts_markdown(result), []
