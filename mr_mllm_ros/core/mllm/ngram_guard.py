"""Repetition guard for decoding: the next token may not repeat an n-gram of the reply.

Small models fall into loops ("10 people, 10 people, 10 people, ..."). transformers'
`no_repeat_ngram_size` counts the prompt too, which would forbid the grounding markup the
few-shot examples show (`</ground><objects><obj`), so this guard looks only at the tokens
generated after `prompt_length`, and lets n-grams made only of markup/digit tokens
(`TokenTable.markup`) repeat: a description cites several objects. Framework-neutral
(token id lists in, banned ids out); hf_common and the llama.cpp backend apply it.
"""

from __future__ import annotations

from typing import Sequence


class NgramGuard:
    def __init__(self, n: int, prompt_length: int, exempt: frozenset[int] = frozenset()):
        if n < 2:
            raise ValueError(f'an n-gram guard needs n >= 2, got {n}')
        self.n = n
        self.prompt_length = prompt_length
        self.exempt = exempt

    def banned(self, ids: Sequence[int]) -> list[int]:
        """Tokens that would complete an n-gram already generated after the prompt."""
        gen = list(ids[self.prompt_length:])
        k = self.n - 1
        if len(gen) < k:
            return []
        head = gen[-k:]
        markup_head = all(t in self.exempt for t in head)
        out = []
        for i in range(len(gen) - k):
            if gen[i:i + k] == head:
                nxt = gen[i + k]
                if not (markup_head and nxt in self.exempt):
                    out.append(nxt)
        return out


class NgramLogitsProcessor:
    """transformers LogitsProcessor: each row's banned tokens get -inf.
    input_ids: (batch, seq); scores: (batch, vocab)."""

    def __init__(self, n: int, prompt_length: int, exempt: frozenset[int] = frozenset()):
        self._make = lambda: NgramGuard(n, prompt_length, exempt)
        self._guards: list[NgramGuard] = []

    def __call__(self, input_ids, scores):
        if not self._guards:
            self._guards = [self._make() for _ in range(input_ids.shape[0])]
        for b, guard in enumerate(self._guards):
            banned = [t for t in guard.banned(input_ids[b].tolist()) if t < scores.shape[1]]
            if banned:
                scores[b, banned] = float('-inf')
        return scores
