"""The ImageNet-1k -> COCO-80 mapping (config/imagenet_coco.yaml): which of the looker's
classes are a thing of a COCO class (`is`) and which a crop of that thing often shows
instead (`seen_with`). The file's own header explains both; load_mapping checks it
against the model's label file (every entry one label, no label under two COCO classes in
`is`, every COCO class listed)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import yaml

from ..detection.labels import COCO_CLASSES
from ..errors import ConfigError

MAPPING_FILE = 'imagenet_coco.yaml'
_INDEXED = re.compile(r'^(.*\S)\s*\((\d+)\)$')


def read_labels(path: str | Path) -> tuple[str, ...]:
    """The label file, one class a line in model output order ('tabby, tabby cat')."""
    try:
        lines = Path(path).read_text(encoding='utf-8').splitlines()
    except OSError as e:
        raise ConfigError(f'cannot read the looker\'s labels {path}: {e.strerror}') from e
    labels = tuple(line.strip() for line in lines if line.strip())
    if not labels:
        raise ConfigError(f'the looker\'s label file {path} is empty')
    return labels


def short_name(label: str) -> str:
    """'tabby, tabby cat' -> 'tabby': the name outputs say."""
    return label.split(',', 1)[0].strip()


@dataclass(frozen=True, eq=False)
class ImagenetCoco:
    labels: tuple[str, ...]                 # label file lines, model output order
    names: tuple[str, ...]                  # their short names
    is_members: Mapping[str, np.ndarray]    # COCO class -> label indices (`is`)
    seen_members: Mapping[str, np.ndarray]  # COCO class -> label indices (is + seen_with)
    coco_of: tuple[str | None, ...]         # label index -> its `is` COCO class or None
    not_objects: frozenset[int] = frozenset()  # labels that never name an object
    animals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def other_animal_mass(self, probs: np.ndarray, coco_class: str) -> float:
        """P that the crop shows an animal that is not one of the class (nor what it is
        seen with): a quokka's crop under a "dog" box."""
        own = self.seen_members.get(coco_class)
        others = np.setdiff1d(self.animals, own) if own is not None else self.animals
        return float(probs[others].sum()) if others.size else 0.0

    def support(self, probs: np.ndarray, coco_class: str) -> float:
        """P that the crop shows the class or what it is seen with (is + seen_with)."""
        members = self.seen_members.get(coco_class)
        return float(probs[members].sum()) if members is not None and members.size else 0.0

    def strengths(self, probs: np.ndarray) -> dict[str, float]:
        """COCO class -> P that the crop IS a thing of it (sum over its `is` labels);
        classes with no `is` label are left out."""
        return {c: float(probs[m].sum()) for c, m in self.is_members.items() if m.size}

    def names_object(self, label: int) -> bool:
        """Whether a label may name a box or an object (not 'web site', 'seashore')."""
        return label not in self.not_objects

    def knows(self, coco_class: str) -> bool:
        """Whether the class is one the mapping can judge (a COCO-80 class)."""
        return coco_class in self.seen_members


def _resolve(entry: str, labels: Sequence[str], names: Sequence[str],
             by_name: Mapping[str, list[int]], where: str) -> int:
    m = _INDEXED.match(entry)
    if m:
        i = int(m.group(2))
        if i >= len(labels) or names[i] != m.group(1):
            raise ConfigError(f'{where}: {entry!r}: label {i} is '
                              f'{labels[i] if i < len(labels) else "out of range"!r}')
        return i
    hits = by_name.get(entry, [])
    if len(hits) != 1:
        raise ConfigError(f'{where}: {entry!r} ' + (
            'is no label of the looker\'s model' if not hits else
            f'names {len(hits)} labels ({", ".join(map(str, hits))}): write "{entry} (N)"'))
    return hits[0]


def load_mapping(labels: Sequence[str], path: str | Path | None = None) -> ImagenetCoco:
    """The mapping file (default: the packaged config/imagenet_coco.yaml) against the
    model's labels; ConfigError naming the entry when something does not fit."""
    if path is None:
        from ..config import share_dir
        path = share_dir() / 'config' / MAPPING_FILE
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
    except OSError as e:
        raise ConfigError(f'cannot read the ImageNet -> COCO mapping {path}: {e.strerror}') \
            from e
    except yaml.YAMLError as e:
        raise ConfigError(f'the ImageNet -> COCO mapping {path} is not valid YAML: {e}') from e
    labels = tuple(labels)
    names = tuple(short_name(label) for label in labels)
    by_name: dict[str, list[int]] = {}
    for i, (label, name) in enumerate(zip(labels, names)):
        by_name.setdefault(name, []).append(i)
        if label != name:
            by_name.setdefault(label, []).append(i)
    raw_not = data.get('not_objects') or []
    if not isinstance(raw_not, list) or not all(isinstance(e, str) for e in raw_not):
        raise ConfigError(f'{path}: `not_objects` must be a list of labels')
    not_objects = frozenset(_resolve(e, labels, names, by_name, f'{path}: not_objects')
                            for e in raw_not)
    sections = {}
    for section in ('is', 'seen_with'):
        raw = data.get(section)
        if not isinstance(raw, dict):
            raise ConfigError(f'{path}: `{section}` must map COCO classes to label lists')
        unknown = sorted(set(raw) - set(COCO_CLASSES))
        if unknown:
            raise ConfigError(f'{path}: {section}.{unknown[0]} is not a COCO-80 class')
        out = {}
        for cls, entries in raw.items():
            where = f'{path}: {section}.{cls}'
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                raise ConfigError(f'{where} must be a list of labels')
            idx = [_resolve(e, labels, names, by_name, where) for e in entries]
            if len(set(idx)) != len(idx):
                raise ConfigError(f'{where} lists a label twice')
            out[cls] = idx
        sections[section] = out
    missing = [c for c in COCO_CLASSES if c not in sections['is']]
    if missing:
        raise ConfigError(f'{path}: `is` lacks the COCO class {missing[0]!r} (list it, '
                          'empty if ImageNet has nothing for it)')
    coco_of: list[str | None] = [None] * len(labels)
    for cls, idx in sections['is'].items():
        for i in idx:
            if coco_of[i] is not None:
                raise ConfigError(f'{path}: {labels[i]!r} is under two COCO classes in `is`: '
                                  f'{coco_of[i]} and {cls}')
            coco_of[i] = cls
    is_members = {c: np.array(sorted(i), dtype=np.int64) for c, i in sections['is'].items()}
    seen = {c: np.array(sorted(set(sections['is'][c]) | set(sections['seen_with'].get(c, []))),
                        dtype=np.int64) for c in COCO_CLASSES}
    both = sorted(i for i in not_objects if coco_of[i] is not None)
    if both:
        raise ConfigError(f'{path}: {labels[both[0]]!r} is in `not_objects` and under '
                          f'{coco_of[both[0]]} in `is`')
    return ImagenetCoco(labels, names, is_members, seen, tuple(coco_of), not_objects,
                        _animal_range(data.get('animals'), labels, names, by_name, path))


def _animal_range(raw, labels, names, by_name, path) -> np.ndarray:
    """`animals: [first, last]`: the label indices from first to last (inclusive)."""
    if raw is None:
        return np.zeros(0, dtype=np.int64)
    if not isinstance(raw, list) or len(raw) != 2 or not all(isinstance(e, str) for e in raw):
        raise ConfigError(f'{path}: `animals` must be [first label, last label]')
    first, last = (_resolve(e, labels, names, by_name, f'{path}: animals') for e in raw)
    if last < first:
        raise ConfigError(f'{path}: `animals`: {raw[1]!r} comes before {raw[0]!r}')
    return np.arange(first, last + 1, dtype=np.int64)
