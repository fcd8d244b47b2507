"""The words that name a class in a grounded phrase: config/vocabulary.yaml (the one
vocabulary), read by the grounding plan, the grounding check of published phrases and the
evaluation metric alike.

A phrase names a class when one of the class's words occurs in it as whole words: the
class name (COCO spelling, or the detector's own), its synonyms, the hypernyms that cover
it, and the plurals of all of them. A class the file does not list (an open-vocabulary
label from reinforcement) is named by its own name and plural.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import yaml

from ..detection.labels import COCO_CLASSES, DARKNET_TO_COCO
from ..errors import ConfigError

VOCABULARY_FILE = 'vocabulary.yaml'
_WORD_RE = re.compile(r'[a-z]+')
COUNT_WORDS = ('no', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine',
               'ten', 'eleven', 'twelve')


def canonical_class(name: str) -> str:
    """'MotorBike' -> 'motorcycle', 'dining_table' -> 'dining table'."""
    n = ' '.join(str(name).strip().lower().replace('_', ' ').split())
    return DARKNET_TO_COCO.get(n, n)


@dataclass(frozen=True, eq=False)  # hashed by identity (cached word sets)
class Vocabulary:
    synonyms: Mapping[str, tuple[str, ...]]
    hypernyms: Mapping[str, tuple[str, ...]]
    irregular_plurals: Mapping[str, str]

    def plural(self, word: str) -> str:
        *head, last = word.split(' ')
        if last in self.irregular_plurals:
            last = self.irregular_plurals[last]
        elif last.endswith(('s', 'x', 'z', 'ch', 'sh')):
            last += 'es'
        elif last.endswith('y') and len(last) > 1 and last[-2] not in 'aeiou':
            last = last[:-1] + 'ies'
        else:
            last += 's'
        return ' '.join([*head, last])

    def class_words(self, class_name: str) -> frozenset[str]:
        """Every word (sequence) that names `class_name`, plurals included."""
        return self._class_words(canonical_class(class_name))

    @functools.lru_cache(maxsize=1024)
    def _class_words(self, c: str) -> frozenset[str]:
        forms = {c, *self.synonyms.get(c, ())}
        forms |= {k for k, v in DARKNET_TO_COCO.items() if v == c}
        forms |= {h for h, members in self.hypernyms.items() if c in members}
        return frozenset(forms | {self.plural(f) for f in forms})

    def names(self, phrase: str, class_name: str) -> bool:
        """Whether the phrase names the class ('A motorbike' names motorcycle, 'two ties'
        names tie, 'a bicycle' does not name motorcycle). Whole words only."""
        text = f' {" ".join(_WORD_RE.findall(phrase.lower()))} '
        return any(f' {w} ' in text for w in self.class_words(class_name))

    def noun(self, class_name: str, count: int = 1) -> str:
        """The word the plan says for `count` objects of a class: 'tie', 'ties'."""
        c = canonical_class(class_name)
        return c if count == 1 else self.plural(c)

    def phrase(self, class_name: str, count: int, definite: bool = False) -> str:
        """'a tie', 'two ties', 'the person', '13 cars'; a plural-only noun counts pairs:
        'a pair of skis', 'two pairs of scissors'."""
        noun = self.noun(class_name, count)
        single = self.noun(class_name, 1)
        if single.endswith('s') and self.plural(single) == single:
            noun = f'{"pair" if count == 1 else "pairs"} of {single}'
        if count == 1:
            article = 'the' if definite else ('an' if noun[:1] in 'aeiou' else 'a')
            return f'{article} {noun}'
        number = COUNT_WORDS[count] if count < len(COUNT_WORDS) else str(count)
        return f'the {number} {noun}' if definite else f'{number} {noun}'

    def mentioned_classes(self, text: str, class_names) -> list[str]:
        """The classes among `class_names` that `text` names, in the order given."""
        return [c for c in class_names if self.names(text, c)]

    @functools.lru_cache(maxsize=1)  # asked once per connector the model writes
    def known_classes(self) -> tuple[str, ...]:
        """COCO-80 and every class this file lists (synonyms, hypernyms' members)."""
        listed = [*self.synonyms, *(c for members in self.hypernyms.values() for c in members)]
        return tuple(dict.fromkeys([*COCO_CLASSES, *listed]))

    def names_a_class(self, text: str) -> bool:
        """Whether `text` names any known class by one of its words ('a large cat',
        'an animal', 'the people'), detected or not."""
        return bool(self.mentioned_classes(text, self.known_classes()))


def _words(value, key: str, path: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(w, str) and w.strip() for w in value):
        raise ConfigError(f'{path}: {key} must be a list of words, got {value!r}')
    return tuple(' '.join(w.lower().split()) for w in value)


def load_vocabulary(path: str | Path | None = None) -> Vocabulary:
    """The vocabulary file (default: the packaged config/vocabulary.yaml)."""
    if path is None:
        from ..config import share_dir
        path = share_dir() / 'config' / VOCABULARY_FILE
    return _load(Path(path))


@functools.lru_cache(maxsize=8)
def _load(path: Path) -> Vocabulary:
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
    except OSError as e:
        raise ConfigError(f'cannot read the vocabulary {path}: {e.strerror}') from e
    except yaml.YAMLError as e:
        raise ConfigError(f'the vocabulary {path} is not valid YAML: {e}') from e
    sections = {}
    for key in ('synonyms', 'hypernyms'):
        section = data.get(key) or {}
        if not isinstance(section, dict):
            raise ConfigError(f'{path}: {key} must map a word to a list of words')
        sections[key] = {canonical_class(k): _words(v, f'{key}.{k}', path)
                         for k, v in section.items()}
    sections['hypernyms'] = {h: tuple(canonical_class(c) for c in members)
                             for h, members in sections['hypernyms'].items()}
    plurals = data.get('irregular_plurals') or {}
    if not isinstance(plurals, dict):
        raise ConfigError(f'{path}: irregular_plurals must map a word to its plural')
    return Vocabulary(sections['synonyms'], sections['hypernyms'],
                      {str(k).lower(): str(v).lower() for k, v in plurals.items()})
