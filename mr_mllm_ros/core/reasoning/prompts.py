"""Perception-embedded prompts (MR-MLLM) with LION-style tags and ChatRex-style indices.

Detections become a compact block of indexed objects: one line per object, rendered by
`PromptBuilder.object_line` (the template's `object_line`, then the clauses other stages
add: distance, what it looks like, posture). scene_v1 lists `<objN> class; place, size;
confidence NN%; box [x1,y1,x2,y2]` (0-1000 grid, ~34 tokens); scene_v2 groups the objects
under one header per class (`person (6):`, duplicate boxes of one object counted once) and
lists `<objN> top right, small, 87%` (~13 tokens). Objects enter by score (highest first)
until `mllm.max_objects` or `mllm.object_token_budget` is reached; they keep their
DetectionSet index, so `<obj3>` in a reply is always `detections[3]`. Templates are
versioned data files (mr_mllm_ros/prompts/*.yaml); chat formatting is the model's own.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import yaml

from ..config import MllmConfig
from ..errors import ConfigError
from ..geometry.words import distance_words
from ..mllm.backend import SOFT_TOKENS_MARKER, ChatMessage, MllmRequest
from ..types import DetectionSet
from .duplicates import object_units

PROMPTS_DIR = Path(__file__).resolve().parents[2] / 'prompts'
# A template line holding the {soft_tokens} field is dropped when a request has none.
_NO_SOFT_TOKENS = '\x00no-soft-tokens\x00'
TASKS = ('describe', 'answer', 'verify', 'judge', 'label')


@dataclass(frozen=True)
class TaskTemplate:
    system: str
    examples: tuple[tuple[str, str], ...]
    user: str
    answer_prefix: str
    answer_prefix_no_objects: str
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    vision_image: str
    vision_text_only: str
    object_line: str
    no_objects: str
    tags: str
    tasks: Mapping[str, TaskTemplate]
    #: '{class_name} ({count}):' groups the object lines under one header per class;
    #: '' = one flat list (each line names its class)
    class_header: str = ''
    #: append ' track N' to the line of a tracked object
    track_ids: bool = True


def load_template(name_or_path: str) -> PromptTemplate:
    """A template by name (file in mr_mllm_ros/prompts) or by path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROMPTS_DIR / f'{name_or_path}.yaml'
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
        tasks = {}
        for task in TASKS:
            t = data['tasks'][task]
            tasks[task] = TaskTemplate(
                system=t['system'].strip(),
                examples=tuple((e['user'].strip(), e['assistant'].strip())
                               for e in t.get('examples') or ()),
                user=t['user'].strip(), answer_prefix=t.get('answer_prefix', ''),
                answer_prefix_no_objects=t.get('answer_prefix_no_objects', ''),
                stop=tuple(t.get('stop') or ()))
        return PromptTemplate(version=str(data['version']),
                              vision_image=data['vision']['image'].strip(),
                              vision_text_only=data['vision']['text_only'].strip(),
                              object_line=data['object_line'], no_objects=data['no_objects'],
                              tags=data['tags'], tasks=tasks,
                              class_header=data.get('class_header', ''),
                              track_ids=bool(data.get('track_ids', True)))
    except OSError as e:
        available = ', '.join(sorted(p.stem for p in PROMPTS_DIR.glob('*.yaml')))
        raise ConfigError(f'prompt template {name_or_path!r} not found ({e.strerror}); '
                          f'available: {available}') from e
    except (KeyError, TypeError, AttributeError, yaml.YAMLError) as e:
        raise ConfigError(f'prompt template {path} is malformed: missing or wrong {e}') from e


def region_words(box, width: int, height: int) -> str:
    """'left bottom', 'center': the image third the box centre falls in."""
    cx, cy = box.center
    horiz = ('left', 'center', 'right')[min(2, int(3 * cx / max(width, 1)))]
    vert = ('top', '', 'bottom')[min(2, int(3 * cy / max(height, 1)))]
    return f'{horiz}{" " + vert if vert else ""}'


def size_word(box, width: int, height: int) -> str:
    share = box.area / max(width * height, 1)
    return 'small' if share < 0.05 else 'medium' if share < 0.25 else 'large'


def position_words(box, width: int, height: int) -> str:
    """'left bottom, large': coarse region words a text-only LLM can repeat (LION's
    region-level knowledge, made explicit), from the box centre and area share."""
    return f'{region_words(box, width, height)}, {size_word(box, width, height)}'


def spoken_region(box, width: int, height: int) -> str:
    """'top right', 'bottom', 'center': region_words in the order people say them."""
    horiz, _, vert = region_words(box, width, height).partition(' ')
    if not vert:
        return horiz
    return vert if horiz == 'center' else f'{vert} {horiz}'


def looks_like_words(labels: Sequence[tuple[str, float]]) -> str:
    """'looks like: espresso 86%, cup 6%' (the looker's labels, best first; no decimal
    point, like the confidence: a copied '.' would end the model's sentence)."""
    return 'looks like: ' + ', '.join(f'{name} {p:.0%}' for name, p in labels)


_CONTROL = re.compile(r'[\x00-\x08\x0b-\x1f\x7f]')


def sanitize_user_text(text: str, max_chars: int | None = None) -> str:
    """User-supplied text (VQA questions) as inert data inside our prompt: no control
    characters, and no '<' '>' so it can neither open chat-template turns
    (`<|im_start|>system`) nor write grounding markup (`<obj99>`)."""
    text = unicodedata.normalize('NFC', text)
    text = _CONTROL.sub(' ', text).replace('<', '(').replace('>', ')')
    text = ' '.join(text.split())
    return text[:max_chars] if max_chars else text


class PromptBuilder:
    def __init__(self, template: PromptTemplate, config: MllmConfig,
                 count_tokens: Callable[[str], int], sees_images: bool):
        self.template = template
        self.config = config
        self.count_tokens = count_tokens
        self.sees_images = sees_images
        self._vision = template.vision_image if sees_images else template.vision_text_only
        self._prefixes: dict[str, tuple[ChatMessage, ...]] = {}

    # ---------------------------------------------------------------- blocks
    def select_objects(self, ds: DetectionSet) -> tuple[int, ...]:
        """Indices of the detections that enter the prompt (score order, budgeted),
        returned in index order."""
        order = sorted(range(len(ds)), key=lambda i: -ds[i].score)[:self.config.max_objects]
        chosen: list[int] = []
        used = 0
        headed: set[str] = set()
        for i in order:
            cost = self.count_tokens(self.object_line(ds, i)) + 1  # + newline
            if self.template.class_header and ds[i].class_name not in headed:
                headed.add(ds[i].class_name)
                cost += self.count_tokens(self.template.class_header.format(
                    class_name=ds[i].class_name, count=1)) + 1
            if used + cost > self.config.object_token_budget:
                break
            chosen.append(i)
            used += cost
        return tuple(sorted(chosen))

    def object_line(self, ds: DetectionSet, i: int) -> str:
        """The one line of object i: the template's fields, then each stage's clause."""
        d = ds[i]
        w, h = ds.image_width, ds.image_height
        x1, y1, x2, y2 = d.box.normalized_1000(w, h)
        line = self.template.object_line.format(
            index=i, class_name=d.class_name, score=d.score, x1=x1, y1=y1, x2=x2, y2=y2,
            position=position_words(d.box, w, h), place=spoken_region(d.box, w, h),
            size=size_word(d.box, w, h))
        if d.track_id >= 0 and self.template.track_ids:
            line += f' track {d.track_id}'
        if d.position is not None:  # depth (core.geometry): distance and direction in words
            line += f'; {distance_words(d.position)}'
        if d.looks_like:  # the looker (core.looking): what the crop shows, for a text LLM
            line += f'; {looks_like_words(d.looks_like)}'
        if d.posture:
            line += f'; {d.posture}'
        return line

    def object_block(self, ds: DetectionSet) -> tuple[str, tuple[int, ...]]:
        """The object lines (under their class headers when the template groups them),
        then what the whole frame looks like (the looker)."""
        chosen = self.select_objects(ds)
        if self.template.class_header and chosen:
            lines = []
            for cls, members in self._by_class(ds, chosen):
                lines.append(self.template.class_header.format(
                    class_name=cls, count=len(object_units(ds, members))))
                lines += [self.object_line(ds, i) for i in members]
        else:
            lines = [self.object_line(ds, i) for i in chosen] or [self.template.no_objects]
        if ds.looks_like:
            lines.append(f'The whole image {looks_like_words(ds.looks_like)}')
        return '\n'.join(lines), chosen

    @staticmethod
    def _by_class(ds: DetectionSet, indices: Sequence[int]) -> list[tuple[str, list[int]]]:
        """`indices` grouped by class name, the best-scoring class first."""
        groups: dict[str, list[int]] = {}
        for i in sorted(indices, key=lambda i: -ds[i].score):
            groups.setdefault(ds[i].class_name, []).append(i)
        return [(cls, sorted(members)) for cls, members in groups.items()]

    def tags(self, ds: DetectionSet, chosen: Sequence[int]) -> str:
        names = sorted({ds[i].class_name for i in chosen})
        return self.template.tags.format(tags=', '.join(names)) if names else ''

    def prefix(self, task: str) -> tuple[ChatMessage, ...]:
        """System prompt + few-shot examples: identical for every frame (KV-reusable)."""
        cached = self._prefixes.get(task)
        if cached is None:
            t = self.template.tasks[task]
            msgs = [ChatMessage('system', t.system.format(vision=self._vision))]
            for user, assistant in t.examples:
                msgs += [ChatMessage('user', user), ChatMessage('assistant', assistant)]
            cached = self._prefixes[task] = tuple(msgs)
        return cached

    # ---------------------------------------------------------------- requests
    def _request(self, task: str, ds: DetectionSet, image: np.ndarray | None,
                 max_new_tokens: int, constrain: bool = True, soft_tokens=None,
                 **fields) -> MllmRequest:
        t = self.template.tasks[task]
        block, chosen = self.object_block(ds)
        soft_field = _NO_SOFT_TOKENS if soft_tokens is None else SOFT_TOKENS_MARKER
        user = t.user.format(objects=block, tags=self.tags(ds, chosen),
                             soft_tokens=soft_field, **fields)
        user = '\n'.join(line for line in user.split('\n')
                         if line.strip() and _NO_SOFT_TOKENS not in line)
        if soft_tokens is not None and SOFT_TOKENS_MARKER not in user:
            raise ConfigError(f'prompt template {self.template.version} has no {{soft_tokens}} '
                              f'field in its {task!r} task, so the fusion adapter\'s soft '
                              'tokens have no place (use scene_fusion_v1)')
        prefix = t.answer_prefix if chosen else t.answer_prefix_no_objects
        allowed = frozenset(chosen) if constrain and self.config.constrained_decoding \
            else None
        return MllmRequest(prefix=self.prefix(task), user=user,
                           image=image if self.sees_images else None, answer_prefix=prefix,
                           allowed_indices=allowed, max_new_tokens=max_new_tokens,
                           stop=t.stop, soft_tokens=soft_tokens, task=task,
                           extra={'object_indices': chosen})

    # `soft_tokens`: (K, hidden) shared-query fusion soft tokens for this frame (core.fusion),
    # placed at the template's {soft_tokens} field; None = prompt-only.
    def describe(self, ds: DetectionSet, image: np.ndarray | None = None,
                 soft_tokens=None) -> MllmRequest:
        return self._request('describe', ds, image, self.config.describe_max_new_tokens,
                             soft_tokens=soft_tokens)

    def answer(self, ds: DetectionSet, question: str,
               image: np.ndarray | None = None, soft_tokens=None) -> MllmRequest:
        return self._request('answer', ds, image, self.config.max_new_tokens,
                             soft_tokens=soft_tokens, question=sanitize_user_text(question))

    def verify(self, ds: DetectionSet, index: int,
               image: np.ndarray | None = None) -> MllmRequest:
        return self._request('verify', ds, image, 1, constrain=False, index=index,
                             class_name=ds[index].class_name)

    def judge(self, ds: DetectionSet, image: np.ndarray | None = None,
              max_new_tokens: int = 24) -> MllmRequest:
        return self._request('judge', ds, image, max_new_tokens, constrain=False)

    def label(self, ds: DetectionSet, index: int, image: np.ndarray | None = None,
              max_new_tokens: int = 6) -> MllmRequest:
        return self._request('label', ds, image, max_new_tokens, constrain=False, index=index)
