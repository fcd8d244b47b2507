"""Streaming and cancel for one MLLM request (`MllmRequest.stream`).

A caller that wants the reply as it is written, or may want to stop it, puts a
`TokenStream` in the request. Every backend then
- calls `emit(piece)` with each new piece of the reply text (as decoded, markup included;
  the answer prefix is not repeated), and
- checks `cancelled` at every decoding step (a transformers stopping criterion, the
  llama.cpp stream iterator, between the OpenAI server's SSE events) and, once it is set,
  stops and raises `GenerationCancelled`: the model is free for the next request within
  one step.
`stage(name)` lets the layers above tell the caller where the request is ('thinking' when
the model is about to be called). A stream with no `on_text` still cancels: the ask_scene
service uses one so a timed-out question stops the model too.

Thread-safety: `cancel()` may be called from any thread; the callbacks run on the thread
that generates (the node's MLLM thread) and must be quick.
"""

from __future__ import annotations

import threading
from typing import Callable

from ..errors import MrMllmError


class GenerationCancelled(MrMllmError):
    """The request's stream was cancelled; generation stopped and its text was dropped."""


class _CancelFlag:
    """A cancel flag with hooks, shared by a stream and its muted copies."""

    def __init__(self):
        self.event = threading.Event()
        self.lock = threading.Lock()
        self.hooks: list[Callable[[], None]] = []


class TokenStream:
    def __init__(self, on_text: Callable[[str], None] | None = None,
                 on_stage: Callable[[str], None] | None = None,
                 _flag: _CancelFlag | None = None):
        self.on_text, self.on_stage = on_text, on_stage
        self._flag = _flag if _flag is not None else _CancelFlag()

    # ------------------------------------------------------------------ control
    def cancel(self) -> None:
        """Ask the generation to stop at its next decoding step (any thread)."""
        flag = self._flag
        with flag.lock:
            first = not flag.event.is_set()
            flag.event.set()
            hooks = list(flag.hooks) if first else []
        for hook in hooks:
            hook()

    def on_cancel(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call `hook` once, on the cancelling thread, when cancelled (at once if it already
        is): for waits that no decoding step interrupts (an HTTP read). Returns the
        function that removes it."""
        flag = self._flag
        with flag.lock:
            flag.hooks.append(hook)
            already = flag.event.is_set()
        if already:
            hook()

        def remove() -> None:
            with flag.lock:
                if hook in flag.hooks:
                    flag.hooks.remove(hook)
        return remove

    @property
    def cancelled(self) -> bool:
        return self._flag.event.is_set()

    def check(self) -> None:
        """Raise GenerationCancelled once cancelled (backends: before and after a call)."""
        if self._flag.event.is_set():
            raise GenerationCancelled('generation cancelled')

    # ----------------------------------------------------------------- progress
    def emit(self, piece: str) -> None:
        """A new piece of the reply text."""
        if piece and self.on_text is not None:
            self.on_text(piece)

    def stage(self, name: str) -> None:
        if self.on_stage is not None:
            self.on_stage(name)

    def muted(self) -> 'TokenStream':
        """The same cancel flag without the text: for generations whose words the caller
        streams itself after checking them (the grounding plan's connectors)."""
        return TokenStream(None, None, self._flag)


def check(stream: TokenStream | None) -> None:
    """stream.check() when there is a stream."""
    if stream is not None:
        stream.check()


class IncrementalDecoder:
    """Token ids in, new text out: decodes the ids so far and returns what was added
    since the last call ('' while the newest ids end inside a multi-byte character).
    `decode(ids) -> str` is the tokenizer's; O(n^2) in the reply length, which is a few
    dozen tokens here."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self._ids: list[int] = []
        self._text = ''

    def push(self, ids) -> str:
        self._ids.extend(int(i) for i in ids)
        text = self._decode(self._ids)
        if text.endswith('\ufffd') or not text.startswith(self._text):
            # an incomplete UTF-8 sequence, or a tokenizer that re-spaces earlier text:
            # wait for more ids rather than emit something to take back
            return ''
        piece, self._text = text[len(self._text):], text
        return piece
