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
import math
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
from ..geometry.words import distance_words, metres
from .duplicates import object_units
from .prompts import spoken_region
from .vocabulary import COUNT_WORDS, Vocabulary, canonical_class

#: Where a stretch of model words between two planned phrases ends.
CONNECTOR_STOPS = ('<', '.', ';', '\n', '[', '(', ':')
#: Prompt syntax a published sentence must never contain (the text ends before it).
PROMPT_SYNTAX = re.compile(r';|\bconfidence\b|\bbox\s*\[|[<>\[\]()]|\btrack \d|\bobj\d')
#: A published sentence never repeats a word n-gram of this length.
REPEAT_NGRAM_WORDS = 5
_SENTENCE_END = re.compile(r'[.!?](\s|$)')
_WORD = re.compile(r"[A-Za-z0-9']+")
_REPEAT_TOKEN = re.compile(r"\d+(?:\.\d+)?|[A-Za-z0-9']+")
_LABEL_WORD = re.compile(r'[a-z]+')  # the vocabulary's words (vocabulary._WORD_RE)
_TRAILING = re.compile(r'(\s*[,\-]|\s+(and|or|the|a|an|while|with|of|to|in|at|is|are))+\s*$',
                       re.IGNORECASE)


@dataclass(frozen=True)
class Mention:
    """One planned grounded phrase: the objects it cites and the words it says. `count`
    is the objects it names (duplicate boxes of one object merged, core.reasoning.
    duplicates); a class spread over several places says where each are: `where` is then
    ': two at the top right and one at the left' (`spread`)."""
    indices: tuple[int, ...]
    class_name: str
    phrase: str   # 'two ties'
    where: str    # 'at the bottom', or ': two at the top right and one at the left'
    count: int = 1

    @property
    def verb(self) -> str:
        return 'is' if self.count == 1 else 'are'

    @property
    def spread(self) -> bool:
        return self.where.startswith(':')

    def tail(self) -> str:
        """The template's words after the phrase: ' are at the left', ': two at ...'."""
        return self.where if self.spread else f' {self.verb} {self.where}'


def _places(ds: DetectionSet, units: Sequence[tuple[int, ...]]) -> str:
    """'at the top right', or for objects in several places ': two at the top right,
    three at the left and one at the bottom' (most first)."""
    counts: dict[str, int] = {}
    for unit in units:
        largest = max(unit, key=lambda i: ds[i].box.area)
        place = spoken_region(ds[largest].box, ds.image_width, ds.image_height)
        counts[place] = counts.get(place, 0) + 1
    if len(counts) == 1:
        return f'at the {next(iter(counts))}'
    parts = [f'{COUNT_WORDS[n] if n < len(COUNT_WORDS) else n} at the {place}'
             for place, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return ': ' + ', '.join(parts[:-1]) + ' and ' + parts[-1]


def plan_mentions(ds: DetectionSet, indices: Sequence[int], vocab: Vocabulary,
                  counted: bool = False) -> list[Mention]:
    """The objects `indices` grouped by class (best-scoring class first), one mention per
    class, counting duplicate boxes of one object once. `counted`: say 'one tie' instead
    of 'a tie' (answers to 'how many')."""
    groups: dict[str, list[int]] = {}
    for i in sorted(indices, key=lambda i: -ds[i].score):
        groups.setdefault(canonical_class(ds[i].class_name), []).append(i)
    mentions = []
    for cls, members in groups.items():
        members.sort()
        units = object_units(ds, members)
        n = len(units)
        phrase = f'one {vocab.noun(cls)}' if counted and n == 1 else vocab.phrase(cls, n)
        where = place_words([ds[i].position for i in members]) or _places(ds, units)
        postures = {ds[i].posture for i in members}
        if len(postures) == 1 and (posture := postures.pop()) in SAID_POSTURES \
                and not where.startswith(':'):
            where = f'{posture} {where}'  # the looker's posture: 'is lying at the left'
        mentions.append(Mention(tuple(members), cls, phrase, where, n))
    return mentions


def place_words(positions) -> str:
    """Where objects are in metres when every one has a position (depth): '2.3 m ahead,
    slightly left'; two: 'at 1.2 m and 3.4 m ahead'; more: '1.2 to 3.4 m away'; else ''."""
    if not positions or any(p is None for p in positions):
        return ''
    if len(positions) == 1:
        return distance_words(positions[0])
    dists = sorted(math.sqrt(sum(c * c for c in p)) for p in positions)
    if len(dists) == 2:
        return f'at {metres(dists[0])} and {metres(dists[1])} ahead'
    return f'{metres(dists[0])[:-2]} to {metres(dists[-1])} away'


def _markup(m: Mention, capital: bool) -> str:
    phrase = m.phrase[:1].upper() + m.phrase[1:] if capital else m.phrase
    return (f'{GROUND_OPEN}{phrase}{GROUND_CLOSE}{OBJECTS_OPEN}'
            + ''.join(ref(i) for i in m.indices) + OBJECTS_CLOSE)


def _joiner(i: int, n: int) -> str:
    if i == n - 1:
        return ''
    return ' and ' if n == 2 else ', and ' if i == n - 2 else ', '


def _sentences(items: Sequence, spread) -> list[list]:
    """`items` split into sentences: an item for which `spread(item)` holds ends one (its
    own list of places has the commas)."""
    out: list[list] = [[]]
    for item in items:
        out[-1].append(item)
        if spread(item):
            out.append([])
    return [s for s in out if s]


def _clauses(mentions: Sequence[Mention]) -> list[list[Mention]]:
    """Mentions at the same place grouped into one clause (in order of first mention), so
    a place is said once ('a cup and a bowl are at the top left', never '... is at the top
    left, ... is at the top left'); a spread class is a clause of its own."""
    clauses: dict[object, list[Mention]] = {}
    for m in mentions:
        clauses.setdefault(m.where if not m.spread else id(m), []).append(m)
    return list(clauses.values())


def _clause_mention(group: Sequence[Mention]) -> Mention:
    """What the words after a clause's last phrase are said of: its one mention, or the
    group as one plural subject ('are')."""
    if len(group) == 1:
        return group[0]
    return dataclasses.replace(group[-1], count=sum(m.count for m in group),
                               indices=tuple(i for m in group for i in m.indices))


def template_sentence(mentions: Sequence[Mention], lead: str = '') -> str:
    """The template's grounded sentences (grammar form). Mentions at the same place share
    one clause: 'Two ties and a person are at the bottom, and a dog is at the right.'; a
    class in several places gets a sentence of its own: 'Six people: two at the top
    right, three at the left and one at the bottom.'"""
    out = []
    for k, sentence in enumerate(_sentences(_clauses(mentions), lambda g: g[0].spread)):
        parts, first = [lead if k == 0 else ''], not (lead and k == 0)
        for c, group in enumerate(sentence):
            for j, m in enumerate(group):
                parts.append(_markup(m, first) + _joiner(j, len(group)))
                first = False
            parts.append(_clause_mention(group).tail() + _joiner(c, len(sentence)))
        out.append(''.join(parts) + '.')
    return ' '.join(out)


def has_repeat(text: str, n: int = REPEAT_NGRAM_WORDS) -> bool:
    return first_repeat(text, n) is not None


def first_repeat(text: str, n: int = REPEAT_NGRAM_WORDS) -> int | None:
    """Character offset where the first repetition of an earlier word n-gram starts, else
    None."""
    # '2.3' is one token: '2.3 m ahead, slightly left' beside '3.3 m ahead, slightly
    # left' is two distances, not a loop
    words = [(m.group().lower(), m.start()) for m in _REPEAT_TOKEN.finditer(text)]
    seen = set()
    for i in range(len(words) - n + 1):
        gram = tuple(w for w, _ in words[i:i + n])
        if gram in seen:
            return words[i][1]
        seen.add(gram)
    return None


def clean_connector(text: str, vocab: Vocabulary, names: Sequence[str] = ()) -> str:
    """The model's words between two phrases, publishable, or '' (use the template's).
    Rejected: nothing (or only a verb: 'a person is,'), numbers, a thing named without a
    citation - any class the vocabulary knows, detected or not ('is a large cat'), or one
    of `names` (the frame's detected classes, the looker's labels of objects the phrase
    does not cite) - and loops: a word said twice in a row ('a large, large wombat') or a
    repeated 3-gram."""
    for stop in CONNECTOR_STOPS:
        text = text.split(stop, 1)[0]
    # the leading space lets a lone trailing word go too ('is' -> '')
    text = _TRAILING.sub('', ' ' + ' '.join(text.split())).strip()
    words = [w.lower() for w in _WORD.findall(text)]
    if not words or not text[:1].isalpha() or any(w[:1].isdigit() for w in words) \
            or vocab.names_a_class(text) or vocab.mentioned_classes(text, names) \
            or any(a == b for a, b in zip(words, words[1:])) or has_repeat(text, 3):
        return ''
    return ' ' + text


def looker_labels(ds: DetectionSet, exclude: Sequence[int] = ()) -> list[str]:
    """The looker's labels (core.looking: 'football helmet', 'espresso') of the objects
    not in `exclude`, and of the whole frame, in plain words: things the model read in
    the prompt that a phrase citing `exclude` must not name."""
    own = {label for i in exclude for label, _ in ds[i].looks_like}
    labels = [label for i, d in enumerate(ds) if i not in exclude for label, _ in d.looks_like]
    labels += [label for label, _ in ds.looks_like]
    # what the cited objects look like themselves stays sayable, even when another box or
    # the whole frame looks alike (Grace Hopper's crop and frame: 'military uniform')
    return list(dict.fromkeys(' '.join(_LABEL_WORD.findall(x.lower())) for x in labels
                              if x not in own))


_REGION_WORDS = frozenset(('left', 'right', 'center', 'centre', 'middle', 'top', 'bottom'))
_VERB = re.compile(r'^ (is|are)\b')
#: postures the plan says (the looker's, core.looking.posture; 'upright' may be a
#: portrait, so it is not said as 'standing'), and the words a model may use for one
SAID_POSTURES = ('sitting', 'lying')
_POSTURE_WORDS = {'standing': 'upright', 'stands': 'upright', 'upright': 'upright',
                  'walking': 'upright', 'sitting': 'sitting', 'sits': 'sitting',
                  'seated': 'sitting', 'lying': 'lying', 'lies': 'lying',
                  'laying': 'lying', 'fallen': 'lying'}


#: 'is a coffee', 'are the red ones': the model saying what an object is
_IDENTITY = re.compile(r"\b(?:is|are)\s+(?:an?|the)\s+([a-z' ]+)", re.IGNORECASE)


def own_label_words(ds: DetectionSet, indices: Sequence[int]) -> frozenset[str]:
    """The words of the looker's labels of the objects `indices` ('coffee', 'mug')."""
    return frozenset(w for i in indices for label, _ in ds[i].looks_like
                     for w in _LABEL_WORD.findall(label.lower()))


def _fit(words: str, m: Mention, looks: frozenset[str] = frozenset()) -> str:
    """The model's words for mention `m`, or '' when they place it where the detector
    did not (region words absent from m.where), give it a posture the looker did not see,
    or say what it is ('is a coffee') in a word that is not the looker's for it (`looks`:
    own_label_words): a text LLM sees neither, and copies the clause before ("a dining
    table is a coffee"). 'is'/'are' made to agree with the count."""
    if not words:
        return ''
    said_words = {w.lower() for w in _WORD.findall(words)}
    said = said_words & _REGION_WORDS
    if not said <= set(m.where.split()):
        return ''
    if {_POSTURE_WORDS[w] for w in said_words & set(_POSTURE_WORDS)} \
            - (set(m.where.split()) & set(SAID_POSTURES)):
        return ''
    for claim in _IDENTITY.finditer(words):
        head = claim.group(1).split()
        if head and head[-1].lower() not in looks:
            return ''
    return _VERB.sub(' ' + m.verb, words)


def word_plan(backend, request, mentions: Sequence[Mention], ds: DetectionSet,
              vocab: Vocabulary, max_tokens: int, lead: str = '',
              stream=None) -> tuple[str, list]:
    """(grounded sentence in grammar form, the backend's Generations): the planned phrases
    in order, with the model's words after each (template words where it has none). The
    model writes at most `max_tokens` per stretch and request.max_new_tokens in all.
    `stream` (core.mllm.streaming.TokenStream): the sentence as it is decided, a phrase and
    its checked words at a time; the model's connectors run with its cancel flag only."""
    emit = stream.emit if stream is not None else (lambda text: None)
    if not getattr(backend, 'writes_text', True):
        sentence = template_sentence(mentions, lead)
        emit(sentence)
        return sentence, []
    classes = sorted({d.class_name for d in ds})
    raw, plain, generations = lead, lead, []
    emit(lead)
    muted = stream.muted() if stream is not None else None
    budget = request.max_new_tokens  # of the whole description
    for k, sentence in enumerate(_sentences(_clauses(mentions), lambda g: g[0].spread)):
        if k:
            raw, plain = raw + ' ', plain + ' '
            emit(' ')
        first = not (lead and k == 0)
        for c, group in enumerate(sentence):
            for j, m in enumerate(group):
                phrase = _markup(m, first) + _joiner(j, len(group))
                raw, plain = raw + phrase, plain + m.phrase + _joiner(j, len(group))
                emit(phrase)
                first = False
            m = _clause_mention(group)
            words = ''
            if budget > 0 and not m.spread:  # the places of a spread class are ours
                gen = backend.generate(dataclasses.replace(
                    request, answer_prefix=raw, stop=CONNECTOR_STOPS,
                    max_new_tokens=min(max_tokens, budget), allowed_indices=None,
                    stream=muted))
                generations.append(gen)
                budget -= max(gen.generated_tokens, 1)
                cont = gen.text[len(raw):] if gen.text.startswith(raw) else gen.text
                names = classes + looker_labels(ds, exclude=m.indices)
                words = _fit(clean_connector(cont, vocab, names), m,
                             own_label_words(ds, m.indices))
                if words and first_repeat(plain + words) is not None:
                    words = ''  # it would repeat what was said: the template's words
            words = (words or m.tail()) + _joiner(c, len(sentence))
            raw, plain = raw + words, plain + words
            emit(words)
        raw, plain = raw + '.', plain + '.'
        emit('.')
    return raw, generations


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

def finish(grounded: GroundedText, ds: DetectionSet, vocab: Vocabulary,
           planned: bool = False) -> GroundedText:
    """A parsed reply made publishable: one sentence, no prompt syntax, no repeated word
    n-gram; every phrase names the class of each object it cites (else it is renamed from
    the vocabulary); no object cited twice (a second citation becomes plain text).
    `planned`: a word_plan text, whose model words were checked stretch by stretch: it is
    never cut (a cut could end it in the middle of an object), only its names checked."""
    text = grounded.text
    cut = len(text)
    for found in (_SENTENCE_END.search(text), PROMPT_SYNTAX.search(text)):
        if found is not None and not planned:
            cut = min(cut, found.start() + (1 if found.group()[:1] in '.!?' else 0))
    repeat = first_repeat(text[:cut]) if not planned else None
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
                      vocab: Vocabulary, planned: bool = False) -> GroundedText:
    """Parse a sentence in grammar form and finish it."""
    return finish(parse_grounded(raw, indices, [d.class_name for d in ds]), ds, vocab,
                  planned)


# ------------------------------------------------------------------- distance

_HOW_FAR = re.compile(r'\b(how (far|close|near)|what distance|distance (to|of|from))\b')
_TARGET = re.compile(r'\b(?:how (?:far|close|near)(?: away)?|what distance|distance)'
                     r'(?: (?:is|are|to|of|from))?(?: (?:the|a|an|my|that|this|those|these))?'
                     r' ([a-z]+(?: [a-z]+)?)')
_ANYTHING = ('it', 'that', 'they', 'them', 'everything', 'anything', 'there', 'away',
             *_ANY_OBJECT)


def asked_about(question: str, trigger: re.Pattern, kind: str, ds: DetectionSet,
                vocab: Vocabulary, unnamed) -> CountQuestion | None:
    """A question of one kind (`trigger` finds it in the lower-case words) about the
    detected classes it names; unnamed(words) when it names none. None when the trigger
    is absent."""
    q = ' '.join(re.sub(r'[^a-z ]', ' ', question.lower()).split())
    if not trigger.search(q):
        return None
    named = vocab.mentioned_classes(q, sorted({d.class_name for d in ds}))
    if not named:
        return unnamed(q)
    return CountQuestion(kind, vocab.noun(named[0]),
                         tuple(i for i, d in enumerate(ds) if d.class_name in named))


def distance_question(question: str, ds: DetectionSet, vocab: Vocabulary) -> CountQuestion | None:
    """A question about how far objects are ('how far is the person?'), and the detections
    it asks about: the classes it names; every detection when it names none ('how far is
    it?'); none when it names an object that is not detected. None for other questions."""
    def unnamed(q: str) -> CountQuestion:
        m = _TARGET.search(q)
        target = m.group(1).split()[0] if m else 'it'
        if target in _ANYTHING:
            return CountQuestion('distance', 'object', tuple(range(len(ds))))
        return CountQuestion('distance', target, ())

    return asked_about(question, _HOW_FAR, 'distance', ds, vocab, unnamed)


def distance_answer(q: CountQuestion, ds: DetectionSet, vocab: Vocabulary) -> GroundedText:
    """The answer from the numbers, grounded to the boxes: 'The person is 2.3 m ahead,
    slightly left.'; without depth for them, said so (still grounded)."""
    if not q.indices:
        text = f'I see no {q.noun}.'
        return GroundedText(text, text)
    placed = [i for i in q.indices if ds[i].position is not None]
    if not placed:
        mentions = plan_mentions(ds, q.indices, vocab)
        raw = (''.join(_markup(m, i == 0) + _joiner(i, len(mentions))
                       for i, m in enumerate(mentions))
               + ' has no depth measurement, so I cannot tell how far away it is.')
        return grounded_sentence(raw, q.indices, ds, vocab)
    return grounded_sentence(template_sentence(plan_mentions(ds, placed, vocab)), placed, ds,
                             vocab)
