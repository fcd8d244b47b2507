"""Grounded output that is right by construction: choose the objects, then say them.

A description (and an answer to a count or presence question) is built from a plan: the
prompt's objects grouped by class ("two ties"), each group one grounded phrase whose words
come from the vocabulary (config/vocabulary.yaml) and which cites exactly that group. The
model only writes the words between the phrases (a few tokens each, cut at the first '<',
'.' or prompt syntax); where it writes nothing usable, or names a detected object in
plain text, the template's words are used ("is at the left bottom"). So every phrase names
the objects it cites, no object is cited twice, and groups are counted by the detector.
The template backend (no model) uses the template words throughout.

Free answers (other questions) are the model's own words under constrained decoding;
`finish` then makes them publishable: a phrase that does not name its cited object is
renamed, a second citation of an object is dropped, the text ends at the first sentence,
at prompt syntax (`; confidence`, `box [`) or at a repeated word n-gram.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Sequence

from ..types import DetectionSet, Generation, GroundedPhrase, GroundedText
from .grounding import (
    GROUND_CLOSE,
    GROUND_OPEN,
    OBJECTS_CLOSE,
    OBJECTS_OPEN,
    parse_grounded,
    ref,
)
from .prompts import region_words
from .vocabulary import Vocabulary, canonical_class

#: Where a stretch of model words between two planned phrases ends.
CONNECTOR_STOPS = ('<', '.', ';', '\n', '[', '(', ':')
#: Prompt syntax a published sentence must never contain (the text ends before it).
PROMPT_SYNTAX = re.compile(r';|\bconfidence\b|\bbox\s*\[|[<>\[\]()]|\btrack \d|\bobj\d')
#: A published sentence never repeats a word n-gram of this length.
REPEAT_NGRAM_WORDS = 5
_SENTENCE_END = re.compile(r'[.!?](\s|$)')
_WORD = re.compile(r"[A-Za-z0-9']+")
_TRAILING = re.compile(r'(\s*[,\-]|\s+(and|or|the|a|an|while|with|of|to|in|at|is|are))+\s*$',
                       re.IGNORECASE)


@dataclass(frozen=True)
class Mention:
    """One planned grounded phrase: the objects it cites and the words it says."""
    indices: tuple[int, ...]
    class_name: str
    phrase: str   # 'two ties'
    where: str    # 'at the center bottom'

    @property
    def verb(self) -> str:
        return 'is' if len(self.indices) == 1 else 'are'


def plan_mentions(ds: DetectionSet, indices: Sequence[int], vocab: Vocabulary,
                  counted: bool = False) -> list[Mention]:
    """The objects `indices` grouped by class (best-scoring class first), one mention per
    class. `counted`: say 'one tie' instead of 'a tie' (answers to 'how many')."""
    groups: dict[str, list[int]] = {}
    for i in sorted(indices, key=lambda i: -ds[i].score):
        groups.setdefault(canonical_class(ds[i].class_name), []).append(i)
    mentions = []
    for cls, members in groups.items():
        members.sort()
        n = len(members)
        phrase = f'one {vocab.noun(cls)}' if counted and n == 1 else vocab.phrase(cls, n)
        regions = dict.fromkeys(region_words(ds[i].box, ds.image_width, ds.image_height)
                                for i in members)
        mentions.append(Mention(tuple(members), cls, phrase,
                                'at the ' + ' and the '.join(regions)))
    return mentions


def _markup(m: Mention, capital: bool) -> str:
    phrase = m.phrase[:1].upper() + m.phrase[1:] if capital else m.phrase
    return (f'{GROUND_OPEN}{phrase}{GROUND_CLOSE}{OBJECTS_OPEN}'
            + ''.join(ref(i) for i in m.indices) + OBJECTS_CLOSE)


def _joiner(i: int, n: int) -> str:
    if i == n - 1:
        return ''
    return ' and ' if n == 2 else ', and ' if i == n - 2 else ', '


def template_sentence(mentions: Sequence[Mention], lead: str = '') -> str:
    """The template's grounded sentence (grammar form). Mentions at the same place share
    one clause: 'Two ties and a person are at the center bottom, and a dog is at the
    right.'"""
    clauses: dict[str, list[Mention]] = {}
    for m in mentions:
        clauses.setdefault(m.where, []).append(m)
    parts, first = [lead], not lead
    for k, (where, group) in enumerate(clauses.items()):
        for j, m in enumerate(group):
            parts.append(_markup(m, first) + _joiner(j, len(group)))
            first = False
        verb = group[0].verb if len(group) == 1 else 'are'
        parts.append(f' {verb} {where}{_joiner(k, len(clauses))}')
    return ''.join(parts) + '.'


def has_repeat(text: str, n: int = REPEAT_NGRAM_WORDS) -> bool:
    return first_repeat(text, n) is not None


def first_repeat(text: str, n: int = REPEAT_NGRAM_WORDS) -> int | None:
    """Character offset where the first repetition of an earlier word n-gram starts, else
    None."""
    words = [(m.group().lower(), m.start()) for m in _WORD.finditer(text)]
    seen = set()
    for i in range(len(words) - n + 1):
        gram = tuple(w for w, _ in words[i:i + n])
        if gram in seen:
            return words[i][1]
        seen.add(gram)
    return None


def clean_connector(text: str, vocab: Vocabulary, classes: Sequence[str]) -> str:
    """The model's words between two phrases, publishable, or '' (use the template's)."""
    for stop in CONNECTOR_STOPS:
        text = text.split(stop, 1)[0]
    text = _TRAILING.sub('', ' '.join(text.split()))
    words = _WORD.findall(text)
    if not words or not text[:1].isalpha() or any(w[:1].isdigit() for w in words) \
            or vocab.mentioned_classes(text, classes) or has_repeat(text, 3):
        return ''  # nothing, numbers, or a detected object named without its citation
    return ' ' + text


_REGION_WORDS = frozenset(('left', 'right', 'center', 'centre', 'middle', 'top', 'bottom'))
_VERB = re.compile(r'^ (is|are)\b')


def _fit(words: str, m: Mention) -> str:
    """The model's words for mention `m`, or '' when they place it where the detector
    did not (region words absent from m.where); 'is'/'are' made to agree with the count."""
    if not words:
        return ''
    said = {w.lower() for w in _WORD.findall(words)} & _REGION_WORDS
    if not said <= set(m.where.split()):
        return ''
    return _VERB.sub(' ' + m.verb, words)


def word_plan(backend, request, mentions: Sequence[Mention], ds: DetectionSet,
              vocab: Vocabulary, max_tokens: int, lead: str = '') -> tuple[str, list]:
    """(grounded sentence in grammar form, the backend's Generations): the planned phrases
    in order, with the model's words after each (template words where it has none). The
    model writes at most `max_tokens` per stretch and request.max_new_tokens in all."""
    if not getattr(backend, 'writes_text', True):
        return template_sentence(mentions, lead), []
    classes = sorted({d.class_name for d in ds})
    raw, generations = lead, []
    budget = request.max_new_tokens  # of the whole sentence
    for i, m in enumerate(mentions):
        raw += _markup(m, i == 0 and not lead)
        words = ''
        if budget > 0:
            gen = backend.generate(dataclasses.replace(
                request, answer_prefix=raw, stop=CONNECTOR_STOPS,
                max_new_tokens=min(max_tokens, budget), allowed_indices=None))
            generations.append(gen)
            budget -= max(gen.generated_tokens, 1)
            cont = gen.text[len(raw):] if gen.text.startswith(raw) else gen.text
            words = _fit(clean_connector(cont, vocab, classes), m)
        words = words or f' {m.verb} {m.where}'
        raw += words + _joiner(i, len(mentions))
    return raw + '.', generations


def merge_generations(generations: Sequence[Generation]) -> Generation:
    """One Generation summing several calls' token counts and timings."""
    timings: dict[str, float] = {}
    for g in generations:
        for k, v in g.timings_ms.items():
            timings[k] = timings.get(k, 0.0) + v
    return Generation('', sum(g.prompt_tokens for g in generations),
                      sum(g.generated_tokens for g in generations), timings)


# ------------------------------------------------------------ count and presence

_COUNT = re.compile(r'\bhow many\s+([a-z]+(?: [a-z]+)?)')
_PRESENCE = re.compile(r'^(?:is there|are there|do you see|can you see|is anyone|are any)'
                       r'\s+(?:an?\s+|any\s+|some\s+)?([a-z]+(?: [a-z]+)?)')
_ANY_OBJECT = ('objects', 'object', 'things', 'thing', 'items', 'item')


@dataclass(frozen=True)
class CountQuestion:
    kind: str                  # 'count' | 'presence'
    noun: str                  # the question's word for the objects, 'people'
    indices: tuple[int, ...]   # the detections it asks about


def count_question(question: str, ds: DetectionSet,
                   vocab: Vocabulary) -> CountQuestion | None:
    """A question whose answer is a count or a presence, and the detections it asks
    about (classes named by the words after 'how many' / 'is there', else anywhere in the
    question); None for other questions."""
    q = ' '.join(re.sub(r'[^a-z ]', ' ', question.lower()).split())
    m = _COUNT.search(q)
    kind = 'count' if m else None
    if m is None:
        m = _PRESENCE.search(q)
        kind = 'presence' if m else None
    if m is None:
        return None
    noun = m.group(1).split()[0]
    classes = sorted({d.class_name for d in ds})
    named = vocab.mentioned_classes(m.group(1), classes) or vocab.mentioned_classes(q, classes)
    if not named and noun in _ANY_OBJECT:
        named = classes
    return CountQuestion(kind, noun, tuple(i for i, d in enumerate(ds)
                                           if d.class_name in named))


def no_objects_sentence(q: CountQuestion) -> str:
    return f'I see no {q.noun}.' if q.kind == 'count' else f'No, I see no {q.noun}.'


# ------------------------------------------------------------------ finishing

def finish(grounded: GroundedText, ds: DetectionSet, vocab: Vocabulary) -> GroundedText:
    """A parsed reply made publishable: one sentence, no prompt syntax, no repeated word
    n-gram; every phrase names the class of each object it cites (else it is renamed from
    the vocabulary); no object cited twice (a second citation becomes plain text)."""
    text = grounded.text
    cut = len(text)
    for found in (_SENTENCE_END.search(text), PROMPT_SYNTAX.search(text)):
        if found is not None:
            cut = min(cut, found.start() + (1 if found.group()[:1] in '.!?' else 0))
    repeat = first_repeat(text[:cut])
    if repeat is not None:
        cut = min(cut, repeat)
    notes = list(grounded.problems)
    if cut < len(text):
        notes.append(f'reply cut at {text[cut:cut + 20]!r}')
    out, phrases, pos, cited = [], [], 0, set()
    for p in sorted(grounded.phrases, key=lambda p: p.start):
        if p.start >= cut:
            break
        out.append(text[pos:p.start])
        indices = tuple(i for i in dict.fromkeys(p.indices)
                        if i not in cited and 0 <= i < len(ds))
        words = text[p.start:min(p.end, cut)]
        if indices and not all(vocab.names(words, ds[i].class_name) for i in indices):
            words = _rename(words, indices, ds, vocab, at_start=not ''.join(out).strip())
            notes.append(f'phrase {p.text!r} renamed {words!r} (it cites '
                         + ''.join(ref(i) for i in indices) + ')')
        start = sum(len(s) for s in out)
        out.append(words)
        if indices:
            phrases.append(GroundedPhrase(words, start, start + len(words), indices))
            cited.update(indices)
        pos = min(p.end, cut)
    out.append(text[pos:cut])
    body = _TRAILING.sub('', ''.join(out).rstrip())
    # A phrase the cut shortened keeps what is left, if that still names its objects.
    phrases = [p if p.end <= len(body) else
               GroundedPhrase(body[p.start:], p.start, len(body), p.indices)
               for p in phrases if p.start < len(body)]
    phrases = [p for p in phrases
               if all(vocab.names(p.text, ds[i].class_name) for i in p.indices)]
    if body and body[-1] not in '.!?':
        body += '.'
    return GroundedText(body, grounded.raw_text, tuple(phrases), grounded.grounded,
                        tuple(notes))


def _rename(words: str, indices: tuple[int, ...], ds: DetectionSet, vocab: Vocabulary,
            at_start: bool) -> str:
    definite = words.strip().lower().startswith(('the ', 'this ', 'that '))
    counts: dict[str, int] = {}
    for i in indices:
        c = canonical_class(ds[i].class_name)
        counts[c] = counts.get(c, 0) + 1
    new = ' and '.join(vocab.phrase(c, n, definite) for c, n in counts.items())
    return new[:1].upper() + new[1:] if at_start else new


def grounded_sentence(raw: str, indices: Sequence[int], ds: DetectionSet,
                      vocab: Vocabulary) -> GroundedText:
    """Parse a sentence in grammar form and finish it."""
    return finish(parse_grounded(raw, indices, [d.class_name for d in ds]), ds, vocab)
