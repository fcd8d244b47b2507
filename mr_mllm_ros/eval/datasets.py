"""Evaluation inputs: ground truth files and the images they refer to.

Image references (every file format below uses them):
  `sample:<name>`     a photo an installed package ships (core.assets.sample_images), e.g.
                      `sample:coffee`; the committed set in data/sample_photos uses them
  `solid:<v>[:WxH]`   a uniform grey frame of level v (0..255), default 640x480
  `crop:...`, `compose:...`  crops and composites of the sample photos (derived_images)
  anything else       an image file, relative to the given root folder
Formats:
  COCO instances json (detections): `file_name` resolved against --images; a bare
      sample name (`coffee`) also resolves when no such file exists.
  Referring-expression JSONL (grounding), one object per line:
      {"image": "sample:coffee", "expression": "the spoon on the saucer",
       "bbox": [x, y, w, h]}        (COCO/RefCOCO box; or "box_xyxy": [x1, y1, x2, y2])
      optional: "category", "ann_id", "id". Lines starting with '#' are comments.
  RefCOCO/RefCOCOg/RefCOCO+ (refer toolkit): refs(umd).p + instances.json + split.
  Alert labels JSONL (alerts), over an image sequence:
      {"clip": "camera", "image": "sample:camera", "repeat": 6,
       "alerts": ["person_in_path"], "transform": "blur:31"}
      each line is `repeat` consecutive frames (default 1); a change of `clip` starts a
      new recording (the alert engine is reset). `transform`: blur:K (Gaussian, odd K)
      or scale:F (intensities times F, clipped: 0.02 = lens covered, 4 = over-exposed).
  Alert labels JSONL over a rosbag2 recording (--bag): {"frames": [first, last],
      "alerts": [...]} or {"frame": i, "alerts": [...]}: image messages of the topic,
      counted from 0 in log order; unlabelled frames expect no alert.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np

from ..core.assets.sample_images import SAMPLES, load_sample
from ..core.config import read_json_file
from ..core.errors import BagError, ConfigError, ImageConversionError
from ..core.images import read_rgb
from ..replay import bag_reader
from .derived_images import is_derived, load_derived
from .metrics import Box, Obj, canonical_class

SAMPLE_PREFIX = 'sample:'
SOLID_PREFIX = 'solid:'


def _bad(path: os.PathLike | str, where: str, what: str) -> ConfigError:
    return ConfigError(f'{path}{":" + where if where else ""}: {what}')


# ----------------------------------------------------------------------------- images

def load_image(ref: str, root: str | os.PathLike | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB for an image reference (see module docstring)."""
    if ref.startswith(SAMPLE_PREFIX):
        return load_sample(ref[len(SAMPLE_PREFIX):])
    if is_derived(ref):
        return load_derived(ref)
    if ref.startswith(SOLID_PREFIX):
        parts = ref[len(SOLID_PREFIX):].split(':')
        try:
            level = int(parts[0])
            w, h = (int(v) for v in parts[1].split('x')) if len(parts) > 1 else (640, 480)
            if not 0 <= level <= 255 or w < 1 or h < 1:
                raise ValueError
        except (ValueError, IndexError):
            raise ConfigError(f'image {ref!r}: expected solid:<0..255>[:<W>x<H>]') from None
        return np.full((h, w, 3), level, np.uint8)
    path = Path(root) / ref if root is not None else Path(ref)
    if not path.is_file() and root is not None and ref in SAMPLES:
        return load_sample(ref)  # a COCO file_name that is a sample name
    try:
        return read_rgb(path)
    except ImageConversionError:
        raise ConfigError(f'cannot read image {ref!r} (looked at {path})') from None


def apply_transform(rgb: np.ndarray, spec: str | None) -> np.ndarray:
    """blur:K (Gaussian blur, odd kernel K) or scale:F (intensities x F, clipped)."""
    if not spec:
        return rgb
    kind, _, value = spec.partition(':')
    try:
        if kind == 'blur':
            k = int(value)
            if k < 1 or k % 2 == 0:
                raise ValueError
            return np.ascontiguousarray(cv2.GaussianBlur(rgb, (k, k), 0))
        if kind == 'scale':
            f = float(value)
            if not 0 <= f <= 100:
                raise ValueError
            return np.clip(rgb.astype(np.float32) * f, 0, 255).astype(np.uint8)
    except ValueError:
        pass
    raise ConfigError(f'transform {spec!r}: expected blur:<odd kernel> or scale:<factor>')


# ------------------------------------------------------------------------ detections

@dataclass(frozen=True)
class ImageRef:
    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class CocoSet:
    """A COCO instances file with canonical class names (metrics.canonical_class)."""

    path: Path
    images: tuple[ImageRef, ...]
    objects: tuple[Obj, ...]        # ground truth; Obj.image = ImageRef.id
    categories: tuple[str, ...]     # evaluated categories (all listed in the file)


def load_coco(path: str | os.PathLike, class_map: Mapping[str, str] | None = None,
              image_ids: Sequence[int] | None = None, limit: int | None = None) -> CocoSet:
    """Read a COCO instances json. `class_map` renames classes after canonicalisation
    ({'*': 'object'} = class-agnostic); `image_ids` / `limit` select images."""
    path = Path(path)
    data = read_json_file(path, 'ground truth')
    try:
        cat_names = {c['id']: canonical_class(c['name'], class_map) for c in data['categories']}
        images = [ImageRef(int(im['id']), str(im['file_name']), int(im['width']),
                           int(im['height'])) for im in data['images']]
        if image_ids:
            wanted = set(image_ids)
            images = [im for im in images if im.id in wanted]
        if limit:
            images = images[:limit]
        keep = {im.id for im in images}
        objects = []
        for a in data['annotations']:
            if a['image_id'] not in keep:
                continue
            x, y, w, h = (float(v) for v in a['bbox'])
            objects.append(Obj(a['image_id'], cat_names[a['category_id']],
                               (x, y, x + w, y + h), 1.0, bool(a.get('iscrowd', 0))))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f'ground truth {path} is not a COCO instances file: missing or '
                          f'bad {e}') from e
    return CocoSet(path, tuple(images), tuple(objects),
                   tuple(dict.fromkeys(cat_names.values())))


def load_image_labels(path: str | os.PathLike, class_map: Mapping[str, str] | None = None
                      ) -> dict[str, tuple[set[str], set[str]]]:
    """Image-level labels: {file_name: {"classes": [...], "maybe": [...]}} (other keys are
    ignored) -> {file_name: (classes present, don't-care classes)}. A `maybe` entry is a
    class name, optionally followed by a note: "vase (the planter itself)", "apple?"."""
    path = Path(path)
    data = read_json_file(path, 'image labels')
    if not isinstance(data, dict):
        raise _bad(path, '', 'expected {file_name: {"classes": [...], "maybe": [...]}}')
    out = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or not all(
                isinstance(entry.get(k, []), list) for k in ('classes', 'maybe')):
            raise _bad(path, name, '"classes" and "maybe" must be lists of class names')
        classes = {canonical_class(str(c), class_map) for c in entry.get('classes', [])}
        maybe = {canonical_class(str(c).split('(')[0].replace('?', '').strip(), class_map)
                 for c in entry.get('maybe', [])}
        out[str(name)] = (classes, maybe)
    return out


# ------------------------------------------------------------------------- grounding

@dataclass(frozen=True)
class ReferringSample:
    id: str
    image: str              # image reference
    expression: str
    box: Box                # x1, y1, x2, y2
    category: str = ''


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        lines = path.read_text(encoding='utf-8').splitlines()
    except OSError as e:
        raise ConfigError(f'cannot read {path}: {e.strerror}') from e
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _bad(path, str(n), f'not valid JSON: {e}') from e
        if not isinstance(obj, dict):
            raise _bad(path, str(n), 'expected a JSON object')
        yield n, obj


def _box_of(path: Path, n: int, obj: dict) -> Box:
    if 'box_xyxy' in obj:
        box = obj['box_xyxy']
    elif 'bbox' in obj:
        b = obj['bbox']
        box = [b[0], b[1], b[0] + b[2], b[1] + b[3]] if isinstance(b, list) and len(b) == 4 \
            else None
    else:
        raise _bad(path, str(n), 'needs "bbox": [x, y, w, h] or "box_xyxy"')
    if not isinstance(box, list) or len(box) != 4 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in box) \
            or box[2] <= box[0] or box[3] <= box[1]:
        raise _bad(path, str(n), f'bad box {obj.get("bbox", obj.get("box_xyxy"))!r}')
    return tuple(float(v) for v in box)


def load_referring_jsonl(path: str | os.PathLike) -> list[ReferringSample]:
    path = Path(path)
    samples = []
    for n, obj in _jsonl(path):
        for key in ('image', 'expression'):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                raise _bad(path, str(n), f'needs a non-empty string "{key}"')
        samples.append(ReferringSample(str(obj.get('id', n)), obj['image'],
                                       obj['expression'].strip(), _box_of(path, n, obj),
                                       canonical_class(obj.get('category', ''))))
    return samples


def load_refer_pickle(refs_path: str | os.PathLike, instances_path: str | os.PathLike,
                      split: str) -> list[ReferringSample]:
    """RefCOCO / RefCOCO+ / RefCOCOg from the refer toolkit's files: `refs(umd).p` (a
    Python pickle: load only the file you downloaded from the dataset's authors) and the
    matching `instances.json`; one sample per sentence of each ref in `split`."""
    try:
        with open(refs_path, 'rb') as f:
            refs = pickle.load(f)
        coco = json.loads(Path(instances_path).read_text(encoding='utf-8'))
    except OSError as e:
        raise ConfigError(f'cannot read {e.filename}: {e.strerror}') from e
    files = {im['id']: im['file_name'] for im in coco['images']}
    anns = {a['id']: a for a in coco['annotations']}
    cats = {c['id']: c['name'] for c in coco['categories']}
    samples = []
    for ref in refs:
        if ref.get('split') != split:
            continue
        ann = anns[ref['ann_id']]
        x, y, w, h = ann['bbox']
        for sent in ref['sentences']:
            samples.append(ReferringSample(
                str(sent.get('sent_id', len(samples))), files[ref['image_id']],
                str(sent.get('raw') or sent['sent']).strip(), (x, y, x + w, y + h),
                canonical_class(cats.get(ref.get('category_id'), ''))))
    if not samples:
        raise ConfigError(f'{refs_path}: no referring expressions in split {split!r}')
    return samples


# ---------------------------------------------------------------------------- alerts

@dataclass(frozen=True)
class SequenceFrame:
    """One frame of a labelled image sequence."""

    clip: str
    image: str
    transform: str
    expected: frozenset[str]


def load_alert_sequence(path: str | os.PathLike) -> list[SequenceFrame]:
    path = Path(path)
    frames = []
    for n, obj in _jsonl(path):
        image, repeat = obj.get('image'), obj.get('repeat', 1)
        if not isinstance(image, str) or not image:
            raise _bad(path, str(n), 'needs "image" (sample:<name>, solid:<v>, or a file)')
        if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= 10000:
            raise _bad(path, str(n), f'"repeat" = {repeat!r}: expected an integer 1..10000')
        expected = _alert_list(path, n, obj)
        clip = str(obj.get('clip', ''))
        transform = str(obj.get('transform') or '')
        frames += [SequenceFrame(clip, image, transform, expected)] * repeat
    if not frames:
        raise ConfigError(f'{path}: no labelled frames')
    return frames


def _alert_list(path: Path, n: int, obj: dict) -> frozenset[str]:
    alerts = obj.get('alerts', [])
    if not isinstance(alerts, list) or not all(isinstance(a, str) for a in alerts):
        raise _bad(path, str(n), '"alerts" must be a list of rule names')
    return frozenset(alerts)


def load_bag_alert_labels(path: str | os.PathLike) -> dict[int, frozenset[str]]:
    """Frame index -> rules expected on it."""
    path = Path(path)
    labels: dict[int, set[str]] = {}
    for n, obj in _jsonl(path):
        if 'frames' in obj:
            rng = obj['frames']
            ok = isinstance(rng, list) and len(rng) == 2 and all(
                isinstance(v, int) and v >= 0 for v in rng) and rng[0] <= rng[1]
            if not ok:
                raise _bad(path, str(n), '"frames" must be [first, last] frame indices')
            first, last = rng
        elif isinstance(obj.get('frame'), int) and obj['frame'] >= 0:
            first = last = obj['frame']
        else:
            raise _bad(path, str(n), 'needs "frame": i or "frames": [first, last]')
        for i in range(first, last + 1):
            labels.setdefault(i, set()).update(_alert_list(path, n, obj))
    return {i: frozenset(v) for i, v in labels.items()}


@dataclass(frozen=True)
class BagImage:
    index: int
    stamp_ns: int       # header stamp, or the log time when the header stamp is 0
    frame_id: str
    rgb: np.ndarray


def image_topics(bag: str | os.PathLike) -> dict[str, str]:
    """Topic -> message type of the image topics in a rosbag2 (sqlite3 or mcap)."""
    info = bag_reader.open_bag(bag)
    return {t: info.topics[t].msgtype for t in info.image_topics()}


def iter_bag_images(bag: str | os.PathLike, topic: str | None = None,
                    max_pixels: int | None = None) -> Iterator[BagImage]:
    """Image / CompressedImage messages of one topic (default: the only image topic), in
    log order, as RGB (replay's bag reader and decoder). An undecodable message raises
    BagError naming its index."""
    info = bag_reader.open_bag(bag)
    topics = info.image_topics()
    if topic is None:
        if len(topics) != 1:
            raise BagError(f'bag {bag} has {len(topics)} image topics '
                           f'({", ".join(topics) or "none"}): choose one with --topic')
        topic = topics[0]
    elif topic not in topics:
        raise BagError(f'bag {bag} has no image topic {topic!r}; image topics: '
                       f'{", ".join(topics) or "none"}')
    for index, m in enumerate(bag_reader.iter_frames(info, [topic], max_pixels=max_pixels)):
        if not m.ok:
            raise BagError(f'bag {bag}, topic {topic}, image #{index}: {m.error}')
        yield BagImage(index, m.stamp_ns or m.log_time_ns, m.frame_id, m.frame.image)


def photo_scenes(duration_s: float, rate_hz: float, scene_s: float,
                 side: int = 320) -> Iterator[np.ndarray]:
    """A camera made of the sample photos: each shown for `scene_s` s in turn (a scene
    change at every switch), `duration_s` s at `rate_hz`, scaled to `side` px on the longer
    side. For long-bag tests and benchmarks (write_bag takes it as its images)."""
    photos = []
    for name in SAMPLES:
        rgb = load_sample(name)
        scale = side / max(rgb.shape[:2])
        photos.append(cv2.resize(rgb, (round(rgb.shape[1] * scale),
                                       round(rgb.shape[0] * scale)),
                                 interpolation=cv2.INTER_AREA))
    for k in range(round(duration_s * rate_hz)):
        yield photos[int(k / rate_hz // scene_s) % len(photos)]


def write_bag(path: str | os.PathLike, topic: str, images: Iterable[np.ndarray],
              rate_hz: float = 10.0, frame_id: str = 'camera',
              compressed: bool = False) -> None:
    """A rosbag2 (sqlite3) of RGB images at `rate_hz`, stamps from 1 s: for tests and to
    turn an image sequence into a recording (replay.bag_writer)."""
    from ..replay.bag_writer import NS, image_message
    from ..replay.bag_writer import write_bag as write
    period = 1.0 / rate_hz
    msgs = [image_message(rgb, 'jpeg' if compressed else 'rgb8',
                          NS + round(i * NS * period), frame_id) for i, rgb in enumerate(images)]
    write(path, {topic: msgs}, 'sqlite3', start_ns=NS, period_s=period)
