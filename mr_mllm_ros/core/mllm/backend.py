"""The MLLM backend protocol and the request every backend takes.

A request is split the way the KV cache wants it: `prefix` (system prompt + few-shot
examples) is identical across frames and can be cached; `user` carries this frame's
perception block and task; `answer_prefix` is forced at the start of the reply (e.g.
`<ground>`, which puts small models into the grounding grammar).

Soft tokens (shared-query fusion, core.fusion): a prompt that takes them holds the text
marker `SOFT_TOKENS_MARKER` once, in the user turn (never in the KV-cached prefix). A
backend replaces the marker by K copies of one placeholder token id (hf_common.
soft_placeholder_id), embeds the prompt, and overwrites the K placeholder embeddings with
`MllmRequest.soft_tokens` (in `inputs_embeds`, or by an embedding hook for models whose
generate() does not take them). A request with soft tokens but no marker, or the marker
but no soft tokens, is an error.

Streaming and cancel: a request may carry a `stream` (core.mllm.streaming); every backend
emits the reply's text through it as it is written and stops within one decoding step
once it is cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from ..types import Generation

#: Where a prompt takes the fusion adapter's soft tokens (prompt templates write it through
#: their `{soft_tokens}` field). User text cannot forge it: questions are sanitised of '<'.
SOFT_TOKENS_MARKER = '<soft_tokens>'


@dataclass(frozen=True)
class ChatMessage:
    role: str  # 'system' | 'user' | 'assistant'
    content: str


@dataclass(frozen=True)
class MllmRequest:
    prefix: tuple[ChatMessage, ...]
    user: str
    #: (H, W, 3) uint8 RGB for backends that see images; text-only backends ignore it.
    image: np.ndarray | None = None
    answer_prefix: str = ''
    #: Object indices the reply may cite as <objN>; None = no constraint (free text).
    allowed_indices: frozenset[int] | None = None
    #: No default: the caller's (mllm.max_new_tokens in config/mr_mllm.yaml for the scene
    #: reasoner), given by keyword.
    max_new_tokens: int = field(kw_only=True)
    #: Generation ends after any of these strings (e.g. '.' for one sentence).
    stop: tuple[str, ...] = ()
    #: Shared-query fusion soft tokens, (K, hidden) float tensor, inserted where the
    #: prompt holds the soft-token placeholder (core.fusion); None = prompt-only.
    soft_tokens: Any = None
    #: Free-form tag for logs/benchmarks ('describe', 'answer', 'verify', 'judge', 'label').
    task: str = 'describe'
    extra: dict = field(default_factory=dict)
    #: core.mllm.streaming.TokenStream: the reply's text as it is written, and cancel
    #: (checked every decoding step; raises GenerationCancelled). None = neither.
    stream: Any = None

    def messages(self) -> list[ChatMessage]:
        return [*self.prefix, ChatMessage('user', self.user)]


@runtime_checkable
class MllmBackend(Protocol):
    #: e.g. "smollm2-135m-instruct (transformers_llm)"
    name: str
    #: True when the model receives the image (VLMs, multimodal servers).
    sees_images: bool

    def generate(self, request: MllmRequest) -> Generation:
        """Reply to one request. `Generation.text` starts with `request.answer_prefix`.
        Raises BackendError on failure."""

    def yes_probability(self, requests: Sequence[MllmRequest]) -> list[float]:
        """P(yes) of a one-token yes/no reply to each request, batched where possible
        (the verification regime of MLLM -> perception feedback)."""

    def count_tokens(self, text: str) -> int:
        """Prompt-budget accounting in this model's tokens (an estimate for servers)."""

    def close(self) -> None:
        """Free the model."""
