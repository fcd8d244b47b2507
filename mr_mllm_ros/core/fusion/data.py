"""Training data for the shared-query fusion adapter: the dataset format, a generator of
synthetic scenes whose answers need appearance, and converters for COCO captions and
RefCOCO-style referring data.

Dataset format: JSONL, one scene per line:

    {"id": "toy-000007",
     "image": "images/000007.png",             # relative to the JSONL file, or absolute
     "detections": [                           # optional: without it the detector runs
        {"class": "circle", "score": 0.91, "box": [12.0, 30.5, 50.0, 70.0],   # pixels x1,y1,x2,y2
         "correct": true}],                     # optional: trains the re-scoring head
     "conversation": [
        {"role": "user", "content": "What colour is <obj1>?"},
        {"role": "assistant", "content": "red",
         "choices": ["red", "green", "blue"],  # optional: restricted-choice accuracy
         "type": "colour"}]}                    # optional: accuracy per question type

Each user -> assistant pair is one independent question about the scene: its context is
the prompt (perception block + soft tokens) of the configured template's `answer` task,
not the earlier turns. `<objN>` in a question is the N-th detection (the prompt builder
writes it as `(objN)`, as it does for live questions); an answer is plain text, which may
cite `<objN>`.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..config import read_json_file
from ..errors import ConfigError, ImageConversionError
from ..images import read_rgb, write_rgb
from ..types import Box, Detection, DetectionSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    choices: tuple[str, ...] = ()
    kind: str = ''


@dataclass
class Scene:
    """One record: an image (loaded lazily from `image_path` when `image` is None), its
    detections (None = run the detector) and its question/answer pairs."""

    id: str
    qas: list[QA]
    image: np.ndarray | None = None
    image_path: str = ''
    detections: DetectionSet | None = None
    #: per detection: True/False = the box is right/wrong, None = unknown
    correct: tuple[bool | None, ...] = ()

    def load_image(self) -> np.ndarray:
        if self.image is None:
            try:
                self.image = read_rgb(self.image_path)
            except ImageConversionError as e:
                raise ConfigError(f'fusion data {self.id}: {e}') from None
        return self.image


# ------------------------------------------------------------------ JSONL

def _detections(items, width: int, height: int, where: str) -> tuple[DetectionSet, tuple]:
    dets, correct = [], []
    for j, d in enumerate(items):
        try:
            x1, y1, x2, y2 = (float(v) for v in d['box'])
            dets.append(Detection(int(d.get('class_id', -1)), str(d['class']),
                                  float(d.get('score', 1.0)), Box(x1, y1, x2, y2)))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f'{where}: detection {j} needs "class" and "box" [x1,y1,x2,y2] '
                              f'(pixels), optional "score", "correct": {e}') from e
        c = d.get('correct')
        correct.append(None if c is None else bool(c))
    return DetectionSet(tuple(dets), width, height, model_name='dataset'), tuple(correct)


def record_to_scene(rec: dict, base: Path, where: str) -> Scene:
    if not isinstance(rec, dict) or 'conversation' not in rec or 'image' not in rec:
        raise ConfigError(f'{where}: a record needs "image" and "conversation"')
    conv = rec['conversation']
    qas: list[QA] = []
    pending = None
    for turn in conv:
        role = turn.get('role') or turn.get('from')
        text = turn.get('content', turn.get('value'))
        if role in ('user', 'human'):
            pending = str(text)
        elif role in ('assistant', 'gpt') and pending is not None:
            qas.append(QA(pending, str(text), tuple(turn.get('choices') or ()),
                          str(turn.get('type', ''))))
            pending = None
        else:
            raise ConfigError(f'{where}: turns must alternate user -> assistant, got {role!r}')
    if not qas:
        raise ConfigError(f'{where}: the conversation has no user -> assistant pair')
    image = rec['image']
    path = Path(image).expanduser()
    if not path.is_absolute():
        path = base / path
    scene = Scene(str(rec.get('id', where)), qas, image_path=str(path))
    if rec.get('detections') is not None:
        w, h = rec.get('width'), rec.get('height')
        if not (w and h):
            h, w = scene.load_image().shape[:2]
        scene.detections, scene.correct = _detections(rec['detections'], int(w), int(h), where)
    return scene


def read_jsonl(path: str | Path) -> list[Scene]:
    path = Path(path)
    scenes = []
    try:
        lines = path.read_text(encoding='utf-8').splitlines()
    except OSError as e:
        raise ConfigError(f'cannot read fusion data {path}: {e.strerror}') from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f'{path}:{n}: not JSON: {e}') from e
        scenes.append(record_to_scene(rec, path.parent, f'{path}:{n}'))
    if not scenes:
        raise ConfigError(f'fusion data {path} holds no records')
    return scenes


def scene_record(scene: Scene, image_name: str) -> dict:
    """The JSONL record of a scene whose image is written as `image_name`."""
    rec = {'id': scene.id, 'image': image_name}
    if scene.detections is not None:
        rec['width'], rec['height'] = scene.detections.image_width, scene.detections.image_height
        rec['detections'] = []
        for j, d in enumerate(scene.detections):
            item = {'class': d.class_name, 'score': round(d.score, 4),
                    'box': [round(v, 2) for v in (d.box.x1, d.box.y1, d.box.x2, d.box.y2)]}
            if j < len(scene.correct) and scene.correct[j] is not None:
                item['correct'] = scene.correct[j]
            rec['detections'].append(item)
    conv = []
    for qa in scene.qas:
        conv.append({'role': 'user', 'content': qa.question})
        turn = {'role': 'assistant', 'content': qa.answer}
        if qa.choices:
            turn['choices'] = list(qa.choices)
        if qa.kind:
            turn['type'] = qa.kind
        conv.append(turn)
    rec['conversation'] = conv
    return rec


def write_jsonl(scenes: Sequence[Scene], folder: str | Path, name: str = 'data.jsonl') -> Path:
    """Write the scenes' images (PNG, under images/) and the JSONL file into `folder`."""
    folder = Path(folder)
    (folder / 'images').mkdir(parents=True, exist_ok=True)
    out = folder / name
    with out.open('w', encoding='utf-8') as f:
        for scene in scenes:
            image_name = f'images/{scene.id}.png'
            write_rgb(folder / image_name, scene.load_image())
            f.write(json.dumps(scene_record(scene, image_name)) + '\n')
    return out


# ------------------------------------------------------------------ toy scenes

COLOURS = {'red': (220, 40, 40), 'green': (40, 170, 60), 'blue': (40, 80, 220),
           'yellow': (230, 210, 40), 'purple': (140, 50, 180), 'orange': (240, 140, 30)}
SHAPES = ('circle', 'square', 'triangle')
SIZES = ('big', 'small')


@dataclass(frozen=True)
class ToySpec:
    """Synthetic scenes whose answers need appearance. Objects are coloured shapes, big
    (side 30-38 % of the image) or small (14-20 %); the detector's boxes are jittered
    squares of 36-46 % of the image around each object, whatever its size, so neither the
    colour nor the size is in the perception prompt (class = shape, score, box)."""

    image_size: int = 96
    min_objects: int = 2
    max_objects: int = 4
    colours: tuple[str, ...] = tuple(COLOURS)
    kinds: tuple[str, ...] = ('colour', 'size')
    false_positive_rate: float = 0.3   # an extra wrong box on empty background (correct=false)
    noise: float = 6.0                 # pixel noise sigma


def _draw_shape(img: np.ndarray, shape: str, cx: float, cy: float, side: float, rgb) -> None:
    import cv2
    r = side / 2
    colour = tuple(int(c) for c in rgb)
    if shape == 'circle':
        cv2.circle(img, (int(round(cx)), int(round(cy))), int(round(r)), colour, -1, cv2.LINE_AA)
    elif shape == 'square':
        cv2.rectangle(img, (int(round(cx - r)), int(round(cy - r))),
                      (int(round(cx + r)), int(round(cy + r))), colour, -1)
    else:
        pts = np.array([[cx, cy - r], [cx - r, cy + r * 0.8], [cx + r, cy + r * 0.8]], np.int32)
        cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)


def toy_scene(rng: random.Random, spec: ToySpec, scene_id: str) -> Scene:
    s = spec.image_size
    base = rng.randint(170, 235)
    img = np.full((s, s, 3), base, np.uint8)
    img = np.clip(img.astype(np.float32) + np.array([rng.randint(-12, 12) for _ in range(3)]),
                  0, 255).astype(np.uint8)
    count = rng.randint(spec.min_objects, spec.max_objects)
    placed: list[tuple[float, float, float]] = []   # (cx, cy, box side)
    objects = []
    tries = 0
    while len(objects) < count and tries < 500:
        tries += 1
        size = rng.choice(SIZES)
        side = s * (rng.uniform(0.30, 0.38) if size == 'big' else rng.uniform(0.14, 0.20))
        box_side = s * rng.uniform(0.36, 0.46)
        cx = rng.uniform(box_side / 2, s - box_side / 2)
        cy = rng.uniform(box_side / 2, s - box_side / 2)
        if any(math.hypot(cx - px, cy - py) < (box_side + pb) / 2 * 0.95 for px, py, pb in placed):
            continue
        placed.append((cx, cy, box_side))
        colour = rng.choice(spec.colours)
        rgb = np.clip(np.array(COLOURS[colour]) + [rng.randint(-15, 15) for _ in range(3)], 0, 255)
        shape = rng.choice(SHAPES)
        _draw_shape(img, shape, cx, cy, side, rgb)
        objects.append((shape, colour, size, cx, cy, box_side))
    if spec.noise:
        nrng = np.random.default_rng(rng.randrange(2 ** 32))
        img = np.clip(img + nrng.normal(0, spec.noise, img.shape), 0, 255).astype(np.uint8)
    dets: list[tuple[Detection, bool, tuple | None]] = []
    for shape, colour, size, cx, cy, box_side in objects:
        jx, jy = rng.uniform(-0.04, 0.04) * s, rng.uniform(-0.04, 0.04) * s
        box = Box.from_center_size(cx + jx, cy + jy, box_side, box_side).clip(s, s)
        dets.append((Detection(-1, shape, round(rng.uniform(0.5, 0.95), 2), box), True,
                     (colour, size)))
    if rng.random() < spec.false_positive_rate:
        for _ in range(100):
            side = s * rng.uniform(0.2, 0.3)
            cx, cy = rng.uniform(side / 2, s - side / 2), rng.uniform(side / 2, s - side / 2)
            if all(math.hypot(cx - px, cy - py) > (side + pb) / 2 for px, py, pb in placed):
                box = Box.from_center_size(cx, cy, side, side)
                dets.append((Detection(-1, rng.choice(SHAPES), round(rng.uniform(0.3, 0.6), 2),
                                       box), False, None))
                break
    rng.shuffle(dets)   # indices carry no spatial order
    qas = []
    for i, (_, right, truth) in enumerate(dets):
        if not right:
            continue
        colour, size = truth
        # Grounded one-clause answers that cite the object ("<obj2> is red"): the reply
        # grammar of the answer task, and a form a small LLM copies from context.
        ref = f'<obj{i}>'
        if 'colour' in spec.kinds:
            qas.append(QA(f'What colour is {ref}?', f'{ref} is {colour}',
                          tuple(f'{ref} is {c}' for c in spec.colours), 'colour'))
        if 'size' in spec.kinds:
            qas.append(QA(f'Is {ref} big or small?', f'{ref} is {size}',
                          tuple(f'{ref} is {z}' for z in SIZES), 'size'))
    ds = DetectionSet(tuple(d for d, _, _ in dets), s, s, model_name='toy')
    return Scene(scene_id, qas, image=img, detections=ds,
                 correct=tuple(right for _, right, _ in dets))


def toy_scenes(count: int, seed: int, spec: ToySpec = ToySpec(),
               prefix: str = 'toy') -> list[Scene]:
    """`count` synthetic scenes; a different seed gives held-out scenes."""
    rng = random.Random(seed)
    return [toy_scene(rng, spec, f'{prefix}-{seed}-{i:06d}') for i in range(count)]


# ------------------------------------------------------------------ converters

def _coco_objects(instances: dict | None) -> tuple[dict, dict]:
    """image id -> [(annotation id, class, xyxy box)], category id -> name."""
    if instances is None:
        return {}, {}
    cats = {c['id']: c['name'] for c in instances.get('categories', [])}
    per_image: dict[int, list] = {}
    for a in instances.get('annotations', []):
        if a.get('iscrowd'):
            continue
        x, y, w, h = a['bbox']
        per_image.setdefault(a['image_id'], []).append(
            (a['id'], cats.get(a['category_id'], str(a['category_id'])), [x, y, x + w, y + h]))
    return per_image, cats


def _detections_json(objs) -> list[dict]:
    return [{'class': name, 'score': 1.0, 'box': [round(v, 2) for v in box], 'correct': True}
            for _, name, box in objs]


DESCRIBE_QUESTION = 'Describe the image in one sentence.'


def convert_coco_captions(captions_json: str | Path, images_dir: str | Path,
                          out_jsonl: str | Path, instances_json: str | Path | None = None,
                          captions_per_image: int = 1, limit: int | None = None) -> int:
    """COCO captions (`captions_*.json`) -> fusion JSONL: one record per image, its first
    `captions_per_image` captions as answers to DESCRIBE_QUESTION. With `instances_json`
    the image's ground-truth boxes become the detections (score 1, correct); without it
    the records have none and the detector runs at training time. Returns the count."""
    caps = read_json_file(captions_json, 'COCO captions')
    per_image, _ = _coco_objects(read_json_file(instances_json, 'COCO instances')
                                 if instances_json else None)
    by_image: dict[int, list[str]] = {}
    for a in caps.get('annotations', []):
        by_image.setdefault(a['image_id'], []).append(' '.join(str(a['caption']).split()))
    images_dir = Path(images_dir)
    n = 0
    with Path(out_jsonl).open('w', encoding='utf-8') as f:
        for im in caps.get('images', []):
            texts = by_image.get(im['id'], [])[:captions_per_image]
            if not texts:
                continue
            conv = []
            for t in texts:
                conv += [{'role': 'user', 'content': DESCRIBE_QUESTION},
                         {'role': 'assistant', 'content': t, 'type': 'caption'}]
            rec = {'id': f'coco-{im["id"]}', 'image': str(images_dir / im['file_name']),
                   'width': im.get('width'), 'height': im.get('height'), 'conversation': conv}
            if instances_json:
                rec['detections'] = _detections_json(per_image.get(im['id'], []))
            f.write(json.dumps(rec) + '\n')
            n += 1
            if limit and n >= limit:
                break
    return n


def referring_question(expression: str) -> str:
    return f'Which object is {" ".join(expression.split())}?'


def convert_refcoco(refs_json: str | Path, instances_json: str | Path,
                    images_dir: str | Path, out_jsonl: str | Path,
                    split: str | None = None, limit: int | None = None) -> int:
    """RefCOCO / RefCOCO+ / RefCOCOg-style referring data -> fusion JSONL.

    `refs_json`: a list of {"image_id", "ann_id", "sentences": [str | {"sent": str}],
    "split"} (the refer toolkit's refs(unc).p, saved as JSON); `instances_json`: the COCO
    instances of those images. One record per image: detections = its ground-truth boxes
    (score 1), one question per expression, "Which object is <expression>?", answered by
    the referred box `<objN>`, with every `<objN>` as choices (restricted-choice accuracy =
    referring accuracy). Returns the number of records."""
    refs = read_json_file(refs_json, 'referring expressions')
    inst = read_json_file(instances_json, 'COCO instances')
    per_image, _ = _coco_objects(inst)
    images = {im['id']: im for im in inst.get('images', [])}
    by_image: dict[int, list] = {}
    for r in refs:
        if split and r.get('split') != split:
            continue
        by_image.setdefault(r['image_id'], []).append(r)
    images_dir = Path(images_dir)
    n = skipped = 0
    with Path(out_jsonl).open('w', encoding='utf-8') as f:
        for image_id, rs in by_image.items():
            objs = per_image.get(image_id, [])
            index = {ann_id: i for i, (ann_id, _, _) in enumerate(objs)}
            im = images.get(image_id)
            if im is None or not objs:
                skipped += 1
                continue
            choices = [f'<obj{i}>' for i in range(len(objs))]
            conv = []
            for r in rs:
                if r['ann_id'] not in index:
                    skipped += 1
                    continue
                for s in r.get('sentences', []):
                    text = s['sent'] if isinstance(s, dict) else str(s)
                    conv += [{'role': 'user', 'content': referring_question(text)},
                             {'role': 'assistant', 'content': f'<obj{index[r["ann_id"]]}>',
                              'choices': choices, 'type': 'referring'}]
            if not conv:
                continue
            rec = {'id': f'ref-{image_id}', 'image': str(images_dir / im['file_name']),
                   'width': im.get('width'), 'height': im.get('height'),
                   'detections': _detections_json(objs), 'conversation': conv}
            f.write(json.dumps(rec) + '\n')
            n += 1
            if limit and n >= limit:
                break
    if skipped:
        log.info('refcoco: %d references or images without boxes skipped', skipped)
    return n


def fill_detections(scenes: Iterable[Scene], detector) -> int:
    """Run `detector` (core.detection) on every scene that has no detections; returns how
    many it ran on. Their `correct` labels are unknown (the re-scoring head skips them)."""
    from ..types import Frame
    n = 0
    for scene in scenes:
        if scene.detections is None:
            scene.detections = detector.detect(Frame(scene.load_image(), 0, scene.id))
            scene.correct = (None,) * len(scene.detections)
            n += 1
    return n
