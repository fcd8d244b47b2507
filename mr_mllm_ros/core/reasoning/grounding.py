"""Grounded output: the grammar in which the MLLM cites boxes by index (ChatRex), its
parser, and constrained decoding that makes citing a missing box impossible.

Grammar (ChatRex style):  <ground>A man</ground><objects><obj0><obj3></objects> holds ...
A bare `<objN>` in running text is accepted too (small models write it) and becomes a
phrase whose text is the object's class name. Anything else between tags is plain text.

Parsing never raises: malformed output degrades to an ungrounded text (markup removed,
`grounded=False`, `problems` says why).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Iterable, Sequence

from ..types import GroundedPhrase, GroundedText

GROUND_OPEN, GROUND_CLOSE = '<ground>', '</ground>'
OBJECTS_OPEN, OBJECTS_CLOSE = '<objects>', '</objects>'
REF_PREFIX = '<obj'


def ref(index: int) -> str:
    return f'{REF_PREFIX}{index}>'


_TOKEN_RE = re.compile(r'(<ground>|</ground>|<objects>|</objects>|<obj(\d+)>)')


# ------------------------------------------------------------------------ parsing

def parse_grounded(raw: str, allowed: Iterable[int] | None = None,
                   class_names: Sequence[str] | None = None) -> GroundedText:
    """Parse model output. `allowed`: indices that exist (None = any index is accepted);
    `class_names[i]`: name used for a bare <obj i> in the plain text."""
    allowed_set = None if allowed is None else set(allowed)
    plain: list[str] = []
    phrases: list[GroundedPhrase] = []
    problems: list[str] = []
    pos = 0  # length of the plain text so far
    in_ground: int | None = None  # plain-text start of the open <ground> phrase
    pending: tuple[str, int, int] | None = None  # closed phrase waiting for <objects>
    in_objects = False
    indices: list[int] = []

    def emit(text: str) -> None:
        nonlocal pos
        plain.append(text)
        pos += len(text)

    def check_index(n: int) -> bool:
        if allowed_set is not None and n not in allowed_set:
            problems.append(f'reference to missing object <obj{n}> dropped')
            return False
        return True

    def close_pending() -> None:
        nonlocal pending
        if pending is not None:
            problems.append(f'phrase {pending[0]!r} has no <objects> list')
            pending = None

    parts = _TOKEN_RE.split(raw)
    # re.split with 2 groups yields: text, tag, digits-or-None, text, tag, digits, ...
    i = 0
    while i < len(parts):
        text = parts[i]
        if text:
            if in_objects:
                if text.strip():
                    problems.append(f'text {text.strip()[:30]!r} inside <objects>')
            else:
                if text.strip():
                    close_pending()  # a closed phrase must be followed by <objects>
                emit(text)
        if i + 1 >= len(parts):
            break
        tag, digits = parts[i + 1], parts[i + 2]
        i += 3
        if digits is not None:  # <objN>
            n = int(digits)
            if in_objects:
                if check_index(n):
                    indices.append(n)
            else:
                close_pending()
                if check_index(n):
                    name = class_names[n] if class_names and 0 <= n < len(class_names) \
                        else f'object {n}'
                    start = pos
                    emit(name)
                    phrases.append(GroundedPhrase(name, start, pos, (n,)))
        elif tag == GROUND_OPEN:
            close_pending()
            if in_objects:
                problems.append('<ground> inside <objects>')
                in_objects = False
            if in_ground is not None:
                problems.append('nested <ground>')
            in_ground = pos
        elif tag == GROUND_CLOSE:
            if in_ground is None:
                problems.append('stray </ground>')
            else:
                pending = (''.join(plain)[in_ground:pos], in_ground, pos)
                in_ground = None
        elif tag == OBJECTS_OPEN:
            if pending is None:
                problems.append('<objects> without a preceding <ground> phrase')
            in_objects = True
            indices = []
        elif tag == OBJECTS_CLOSE:
            if not in_objects:
                problems.append('stray </objects>')
            elif pending is not None:
                text_, start, end = pending
                if indices:
                    phrases.append(GroundedPhrase(text_, start, end, tuple(indices)))
                else:
                    problems.append(f'phrase {text_!r} cites no existing object')
                pending = None
            in_objects = False
    if in_ground is not None:
        problems.append('unclosed <ground>')
    if in_objects:
        problems.append('unclosed <objects>')
    close_pending()
    return _strip_outer_whitespace(''.join(plain), raw, phrases, problems)


def _strip_outer_whitespace(text: str, raw: str, phrases: list[GroundedPhrase],
                            problems: list[str]) -> GroundedText:
    """Strip surrounding whitespace (models end replies with newlines) and shift spans."""
    lead = len(text) - len(text.lstrip())
    stripped = text.strip()
    shifted = tuple(GroundedPhrase(p.text, p.start - lead, p.end - lead, p.indices)
                    for p in phrases) if lead else tuple(phrases)
    return GroundedText(text=stripped, raw_text=raw, phrases=shifted,
                        grounded=not problems, problems=tuple(problems))


def render_grounded(text: str, phrases: Sequence[GroundedPhrase]) -> str:
    """The canonical grammar form of a plain text with phrases (inverse of the parser for
    well-formed output: no whitespace between </ground>, <objects> and references)."""
    out: list[str] = []
    pos = 0
    for p in sorted(phrases, key=lambda p: p.start):
        out.append(text[pos:p.start])
        out.append(f'{GROUND_OPEN}{text[p.start:p.end]}{GROUND_CLOSE}{OBJECTS_OPEN}'
                   + ''.join(ref(i) for i in p.indices) + OBJECTS_CLOSE)
        pos = p.end
    out.append(text[pos:])
    return ''.join(out)


# ---------------------------------------------------------- constrained decoding

def _open_ground_delta(text: str) -> int:
    return text.count(GROUND_OPEN) - text.count(GROUND_CLOSE)


class ReferenceAutomaton:
    """Character automaton over generated text that rejects any reference `<objN>` whose
    N is not allowed (no leading zeros; the digits must close with '>').

    States: '' (free text), '<', '<o', '<ob', '<obj' and '<obj' + digits. Text such as
    `<objects>` passes ('<obj' followed by a non-digit is ordinary text)."""

    def __init__(self, allowed: Iterable[int]):
        self.allowed = frozenset(allowed)
        self._prefixes = {str(i)[:k] for i in self.allowed for k in range(1, len(str(i)) + 1)}
        self._complete = {str(i) for i in self.allowed}

    def feed(self, state: str, text: str) -> str | None:
        """State after `text`, or None when `text` makes an invalid reference."""
        for ch in text:
            if len(state) > 4:  # inside '<obj' + digits
                digits = state[4:]
                if ch == '>':
                    if digits not in self._complete:
                        return None
                    state = ''
                elif ch.isdigit() and (digits + ch) in self._prefixes:
                    state += ch
                else:
                    return None
            elif state == '<obj':
                if ch.isdigit():
                    if ch not in self._prefixes:
                        return None
                    state += ch
                else:
                    state = '<' if ch == '<' else ''
            elif state and ch == REF_PREFIX[len(state)]:
                state += ch
            else:
                state = '<' if ch == '<' else ''
        return state


class TokenTable:
    """Token strings of one vocabulary, indexed for the mask computations. Built from a
    transformers tokenizer (`token_table`) or from any list of strings (llama.cpp)."""

    def __init__(self, strings: Sequence[str], special_ids: Iterable[int] = ()):
        import numpy as np
        self.strings = list(strings)
        self.size = len(self.strings)
        strings = self.strings
        self.has_lt = np.array([i for i, s in enumerate(strings) if '<' in s], dtype=np.int64)
        first_digit_or_gt = [i for i, s in enumerate(strings) if s[:1].isdigit() or s[:1] == '>']
        self.digit_or_gt = np.array(first_digit_or_gt, dtype=np.int64)
        self.by_first = {}
        for i, s in enumerate(strings):
            if s:
                self.by_first.setdefault(s[0], []).append(i)
        # Tokens that would end a sentence or the reply: not allowed inside an open
        # <ground> phrase (the phrase must be closed and cited first).
        enders = {i for i, s in enumerate(strings) if '.' in s}
        enders |= {i for i in special_ids if 0 <= i < self.size}
        self.enders = np.array(sorted(enders), dtype=np.int64)
        #: markup and digit tokens: n-grams made only of these may repeat (core.mllm.ngram_guard)
        self.markup = frozenset(i for i, s in enumerate(strings) if s and _is_markup(s))
        self._containing: dict[frozenset, frozenset] = {}

    def containing(self, chars: Iterable[str]) -> frozenset[int]:
        """Ids of the tokens whose text holds any of `chars` (cached per set)."""
        key = frozenset(chars)
        found = self._containing.get(key)
        if found is None:
            found = self._containing[key] = frozenset(
                i for i, s in enumerate(self.strings) if any(c in s for c in key))
        return found


_MARKUP_CHARS = set('<>/0123456789')


def _is_markup(token: str) -> bool:
    t = token.strip()
    return bool(t) and (set(t) <= _MARKUP_CHARS or t in ('ground', 'objects', 'obj')
                        or t.strip('<>/') in ('ground', 'objects', 'obj'))


def _hf_token_strings(tokenizer) -> list[str]:
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    strings = []
    for t in tokens:
        try:
            strings.append(tokenizer.convert_tokens_to_string([t]) if t is not None else '')
        except Exception:  # a token some tokenizers cannot render alone
            strings.append('')
    return strings


_TABLES: dict[int, TokenTable] = {}
_TABLES_LOCK = threading.Lock()


def token_table(tokenizer) -> TokenTable:
    """The (cached) table of a transformers tokenizer."""
    key = id(tokenizer)
    with _TABLES_LOCK:
        table = _TABLES.get(key)
        if table is None or table.size != len(tokenizer):
            table = TokenTable(_hf_token_strings(tokenizer),
                               getattr(tokenizer, 'all_special_ids', []) or [])
            _TABLES[key] = table
        return table


class ReferenceConstraint:
    """The allowed next tokens of ONE generated sequence, framework-neutral: tokens that
    would complete or extend an invalid `<objN>` are banned; while a `<ground>` phrase is
    open, so are tokens that would end the sentence or the reply ('.', EOS), so phrases
    get closed and cited. Masks (numpy bool, True = allowed) are cached per automaton
    state, so the steady-state cost is one lookup per step.

    `prompt_length` is where the generated tokens start in the ids given to `allowed`;
    `initial_text` is forced reply text already in the prompt (the answer prefix)."""

    def __init__(self, table: TokenTable, allowed: Iterable[int], prompt_length: int,
                 initial_text: str = '', cache_size: int = 256):
        self.automaton = ReferenceAutomaton(allowed)
        self.table = table
        self._state = self.automaton.feed('', initial_text) or ''
        self._seen = prompt_length
        self._open = _open_ground_delta(initial_text)  # opened - closed <ground> phrases
        self._tail = initial_text  # last characters, to spot tags split across tokens
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = cache_size

    def _mask(self, state: str):
        import numpy as np
        mask = self._cache.get(state)
        if mask is not None:
            self._cache.move_to_end(state)
            return mask
        table, feed = self.table, self.automaton.feed
        strings = table.strings
        if len(state) > 4:  # mid-reference: only digits / '>' can continue
            mask = np.zeros(table.size, dtype=bool)
            ok = [i for i in table.digit_or_gt.tolist() if feed(state, strings[i]) is not None]
            mask[ok] = True
        else:
            mask = np.ones(table.size, dtype=bool)
            nxt = REF_PREFIX[len(state)] if len(state) < 4 else None
            candidates = set(table.has_lt.tolist())
            if state == '<obj':
                candidates.update(table.digit_or_gt.tolist())
            elif nxt is not None and state:
                candidates.update(table.by_first.get(nxt, []))
            mask[[i for i in candidates if feed(state, strings[i]) is None]] = False
        self._cache[state] = mask
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return mask

    def allowed(self, ids: Sequence[int]):
        """(vocab,) bool mask of the next token after `ids` (prompt + generated so far),
        or None when nothing would be allowed (never leave a row without a choice)."""
        state, new_text = self._state, ''
        for tok in ids[self._seen:]:
            s = self.table.strings[tok] if 0 <= tok < self.table.size else ''
            new_text += s
            state = self.automaton.feed(state, s)
            if state is None:  # cannot happen when this constraint chose every token
                state = ''
        self._state, self._seen = state, len(ids)
        # Count tags in the tail + new text, minus those already counted in the tail.
        tail = self._tail
        self._open += _open_ground_delta(tail + new_text) - _open_ground_delta(tail)
        self._tail = (tail + new_text)[-len(GROUND_CLOSE):]
        mask = self._mask(state)
        if self._open > 0:
            mask = mask.copy()
            mask[self.table.enders] = False
        return mask if mask.any() else None


class ObjectReferenceLogitsProcessor:
    """transformers LogitsProcessor applying a ReferenceConstraint to every batch row:
    disallowed tokens get -inf. scores: (batch, vocab) float; input_ids: (batch, seq)."""

    def __init__(self, tokenizer, allowed: Iterable[int], prompt_length: int,
                 initial_text: str = ''):
        self.table = token_table(tokenizer)
        self._make = lambda: ReferenceConstraint(self.table, allowed, prompt_length,
                                                 initial_text)
        self._rows: list[ReferenceConstraint] = []
        self.steps = 0

    def __call__(self, input_ids, scores):
        import torch
        if not self._rows:
            self._rows = [self._make() for _ in range(input_ids.shape[0])]
        n = min(self.table.size, scores.shape[1])
        for b, row in enumerate(self._rows):
            mask = row.allowed(input_ids[b].tolist())
            if mask is None:
                continue
            allowed = torch.from_numpy(mask[:n]).to(scores.device)
            scores[b, :n] = torch.where(allowed, scores[b, :n],
                                        torch.full_like(scores[b, :n], float('-inf')))
        self.steps += 1
        return scores
