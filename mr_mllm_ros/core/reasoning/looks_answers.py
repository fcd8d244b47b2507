"""Answers from the looker's words (core.looking): "what is the person holding?", "what
does the cup look like?" for a model that cannot see the image. The looker classified
each box's crop; a person's crop shows what they hold or wear ("seen with a tripod"),
another object's crop what it is ("looks like an espresso"). Grounded like every answer:
each phrase cites the box it names; nothing is said that the looker did not see."""

from __future__ import annotations

import re

from ..detection.labels import COCO_CLASSES
from ..types import DetectionSet, GroundedText
from .grounding import GROUND_CLOSE, GROUND_OPEN, OBJECTS_CLOSE, OBJECTS_OPEN, ref
from .grounding_plan import CountQuestion, asked_about, grounded_sentence
from .vocabulary import Vocabulary, canonical_class

_APPEARANCE = re.compile(r'\b(hold|holds|holding|carry|carries|carrying|wear|wears|wearing|'
                         r'look like|looks like|what kind|what type|what sort)\b')
_TARGET = re.compile(r'\b(?:the|a|an|this|that|he|she|it)\s+([a-z]+)')
#: at most this many objects in one answer
MAX_OBJECTS = 3


def appearance_question(question: str, ds: DetectionSet,
                        vocab: Vocabulary) -> CountQuestion | None:
    """A question about what objects hold, wear or look like, and the detections it asks
    about: the classes it names; every detection the looker saw when it names none; none
    when it names a class that is not detected. None for other questions."""
    def unnamed(q: str) -> CountQuestion:
        m = _TARGET.search(q)
        noun = m.group(1) if m else 'object'
        if any(vocab.names(noun, c) for c in COCO_CLASSES):
            return CountQuestion('appearance', noun, ())  # names an object that is not here
        return CountQuestion('appearance', 'object', tuple(i for i, d in enumerate(ds)
                                                            if d.looks_like))

    return asked_about(question, _APPEARANCE, 'appearance', ds, vocab, unnamed)


def _article(word: str) -> str:
    return 'an' if word[:1].lower() in 'aeiou' else 'a'


def appearance_answer(q: CountQuestion, ds: DetectionSet, vocab: Vocabulary) -> GroundedText:
    """'The person is seen with a tripod.' / 'The cup looks like an espresso.'"""
    if not q.indices:
        text = f'I see no {q.noun}.'
        return GroundedText(text, text)
    seen = [i for i in q.indices if ds[i].looks_like][:MAX_OBJECTS]
    cited = seen or list(q.indices[:1])
    parts = []
    for k, i in enumerate(cited):
        cls = canonical_class(ds[i].class_name)
        phrase = vocab.phrase(cls, 1, definite=True)
        phrase = phrase[:1].upper() + phrase[1:] if k == 0 else phrase
        markup = f'{GROUND_OPEN}{phrase}{GROUND_CLOSE}{OBJECTS_OPEN}{ref(i)}{OBJECTS_CLOSE}'
        if not seen:
            parts.append(f'I cannot tell what {markup} holds or looks like')
            continue
        label = ds[i].looks_like[0][0]
        verb = 'is seen with' if cls == 'person' else 'looks like'
        parts.append(f'{markup} {verb} {_article(label)} {label}')
    joined = parts[0] if len(parts) == 1 else ', '.join(parts[:-1]) + ' and ' + parts[-1]
    return grounded_sentence(joined[:1].upper() + joined[1:] + '.', cited, ds, vocab)
