"""Text-only instruct LLM backend: the model sees the image only through the
perception-embedded prompt (the offline default: SmolLM2-135M-Instruct).

Prefix KV reuse: the system prompt and few-shot examples are the same for every frame,
so their keys/values are computed once per prefix and copied into each generation; only
the frame's own tokens are prefilled. Used when the prefix tokenizes identically alone
and inside the full prompt (checked), else the full prompt is prefilled.

Soft tokens (shared-query fusion): the marker in the user turn becomes K placeholder ids;
the prompt is embedded and the placeholders' embeddings are replaced by the request's soft
tokens, passed to generate() as `inputs_embeds` beside `input_ids` (generate prefills
from the embeddings, slicing off the cached prefix, and keeps the ids for the output and
the logits processors). The soft tokens always come after the cached prefix, so prefix
KV reuse stays valid and gives the same output as a full prefill.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import OrderedDict
from typing import Sequence

from ..config import Config
from ..errors import BackendError, ModelLoadError
from ..types import Generation
from . import hf_common, streaming
from .backend import ChatMessage, MllmRequest

log = logging.getLogger(__name__)


def _common_prefix(rows: Sequence[list[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one of its own."""
    return max(0, min(hf_common.common_prefix(rows), min(len(r) for r in rows) - 1))


class TransformersLlmBackend(hf_common.SoftTokenInput):
    sees_images = False

    def __init__(self, config: Config):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg = config.mllm
        source, _, self.tokenizer, self.model = hf_common.load_pretrained(
            config, AutoTokenizer, AutoModelForCausalLM, 'LLM')
        self.model.to(cfg.device).eval()
        if self.tokenizer.chat_template is None:
            raise ModelLoadError(f'{source} has no chat template: an instruct model is needed')
        self.config = config
        self.device = torch.device(cfg.device)
        self.name = f'{hf_common.short_name(source)} (transformers_llm)'
        self._lock = threading.Lock()
        self._prefix_cache: OrderedDict[str, tuple[list[int], object]] = OrderedDict()
        self._yes = hf_common.word_token_ids(self.tokenizer, hf_common.YES_WORDS)
        self._no = hf_common.word_token_ids(self.tokenizer, hf_common.NO_WORDS)
        self.soft_placeholder_id = hf_common.soft_placeholder_id(self.tokenizer)
        self.kv_hits = 0
        #: (token ids, their KV cache) of the previous generation: the connector calls of
        #: one description share everything but their last few words (see _reusable)
        self._session: tuple[list[int], object] | None = None
        self.session_hits = 0

    # ------------------------------------------------------------------- prompts
    def _chat_text(self, messages: Sequence[ChatMessage], generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            [{'role': m.role, 'content': m.content} for m in messages], tokenize=False,
            add_generation_prompt=generation_prompt)

    def prompt_text(self, request: MllmRequest) -> str:
        return self._chat_text(request.messages(), True) + request.answer_prefix

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)['input_ids'])

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)['input_ids']

    # Public names of the two above, for fusion training and the benchmarks.
    chat_text = _chat_text
    encode = _encode

    def _prompt_ids(self, request: MllmRequest, soft) -> list[int]:
        """Token ids of the prompt; the soft-token marker becomes K placeholder ids."""
        text = self.prompt_text(request)
        if soft is None:
            hf_common.check_no_marker(text)
        else:
            text = hf_common.expand_soft_marker(text, self.tokenizer, self.soft_placeholder_id,
                                                soft.shape[0])
        return self._encode(text)

    def _embeds(self, input_ids, softs, attention_mask=None):
        """inputs_embeds (B, L, D) of input_ids (B, L) with row b's placeholders replaced by
        softs[b] (K_b, D); rows whose soft tokens are None must hold no placeholder."""
        import torch
        counts = [0 if s is None else s.shape[0] for s in softs]
        mask = hf_common.soft_token_mask(input_ids, self.soft_placeholder_id, counts,
                                         attention_mask)
        embeds = self.model.get_input_embeddings()(input_ids)
        rows = torch.cat([s for s in softs if s is not None])
        return hf_common.insert_soft_tokens(embeds, mask, rows)

    def prefix_kv(self, prefix: Sequence[ChatMessage]):
        """(token ids, KV cache or None) of a fixed prompt prefix, computed once and kept
        (the one prefix KV cache: generation and the fusion trainer share it). The cache
        is None when the prefix does not tokenize the same alone and inside a prompt (the
        template merges tokens across the boundary). Read-only: copy before appending."""
        key = self._chat_text(prefix, False)
        entry = self._prefix_cache.get(key)
        if entry is None:
            import torch
            ids = self._encode(key)
            probe = self._encode(self._chat_text([*prefix, ChatMessage('user', 'x')], True))
            cache = None
            if probe[:len(ids)] == ids and len(ids) < len(probe):
                # no_grad, not inference_mode: the fusion trainer backpropagates through
                # activations computed on top of these tensors.
                with torch.no_grad():
                    cache = self.model(torch.tensor([ids], device=self.device),
                                       use_cache=True).past_key_values
            entry = self._prefix_cache[key] = (ids, cache)
            if len(self._prefix_cache) > 8:
                self._prefix_cache.popitem(last=False)
        return entry

    def _cached_prefix(self, request: MllmRequest, full_ids: list[int]):
        """(number of cached tokens, a private copy of their KV cache) or (0, None)."""
        if not (self.config.mllm.kv_reuse and request.prefix):
            return 0, None
        ids, cache = self.prefix_kv(request.prefix)
        if cache is None or full_ids[:len(ids)] != ids or len(ids) >= len(full_ids):
            return 0, None
        self.kv_hits += 1
        # generate() appends to the cache it is given: hand it a copy.
        return len(ids), copy.deepcopy(cache)

    def _reusable(self, request: MllmRequest, ids: list[int], soft):
        """(cached tokens, KV cache to extend) for prompt `ids`: the longest of the previous
        generation's sequence (cropped to what the two share) and the fixed prefix. The
        grounding plan asks one description in several calls, each the previous prompt plus
        a few words: without this every call prefilled the whole object block again.
        Soft tokens: prefix only (equal placeholder ids can carry other vectors)."""
        session, self._session = self._session, None
        if session is not None and soft is None and self.config.mllm.kv_reuse:
            done, cache = session
            # at least one token left to run
            shared = hf_common.common_prefix([done, ids[:len(ids) - 1]])
            prefix_len = len(self.prefix_kv(request.prefix)[0]) if request.prefix else 0
            if shared > prefix_len:
                cache.crop(shared - len(done))  # transformers 5: minus the tokens to drop
                self.session_hits += 1
                return shared, cache
        return self._cached_prefix(request, ids)

    # ---------------------------------------------------------------- inference
    def generate(self, request: MllmRequest) -> Generation:
        import torch
        t0 = time.perf_counter()
        with self._lock:
            streaming.check(request.stream)
            soft = self._soft(request)
            ids = self._prompt_ids(request, soft)
            cached, cache = self._reusable(request, ids, soft)
            if soft is not None and self.soft_placeholder_id in ids[:cached]:
                cached, cache = 0, None  # never: the marker is in the user turn
            t1 = time.perf_counter()
            input_ids = torch.tensor([ids], device=self.device)
            kwargs = hf_common.request_generation_kwargs(self.config, self.tokenizer, request,
                                                         len(ids))
            kwargs.update(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                          return_dict_in_generate=True)
            if cache is not None:
                kwargs['past_key_values'] = cache
            try:
                with torch.inference_mode():
                    if soft is not None:
                        # Full-length embeddings: generate() slices off the cached prefix.
                        kwargs['inputs_embeds'] = self._embeds(input_ids, [soft])
                    out = self.model.generate(**kwargs)
            except (RuntimeError, ValueError, IndexError) as e:
                raise BackendError(f'{self.name}: generation failed: {e}') from e
            sequence = out.sequences[0].tolist()
            kv = out.past_key_values
            if soft is None and kv is not None and self.config.mllm.kv_reuse:
                # the KV of every token but the last sampled one
                self._session = (sequence[:kv.get_seq_length()], kv)
            streaming.check(request.stream)  # stopped by a cancel: no reply
            new = sequence[len(ids):]
            reply = self.tokenizer.decode(new, skip_special_tokens=True)
        t2 = time.perf_counter()
        return Generation(text=request.answer_prefix + reply, prompt_tokens=len(ids),
                          generated_tokens=len(new),
                          timings_ms={'prompt': (t1 - t0) * 1e3, 'generate': (t2 - t1) * 1e3,
                                      'kv_reused_tokens': float(cached)})

    def yes_probability(self, requests: Sequence[MllmRequest]) -> list[float]:
        """One batched forward pass (left-padded); P(yes) from the next-token logits."""
        import torch
        if not requests:
            return []
        with self._lock:
            softs = [self._soft(r) for r in requests]
            rows = [self._prompt_ids(r, soft) for r, soft in zip(requests, softs)]
            if len(rows) > 1 and all(s is None for s in softs):
                shared = _common_prefix(rows)
                if shared >= 16:  # (a handful of shared tokens is not worth a second call)
                    return self._yes_on_shared_prefix(rows, shared)
            width = max(len(r) for r in rows)
            pad = hf_common.pad_id(self.tokenizer) or 0
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows],
                                device=self.device)
            try:
                with torch.inference_mode():
                    # Positions count real tokens only, so padding does not shift them.
                    positions = (mask.cumsum(-1) - 1).clamp(min=0)
                    if any(s is not None for s in softs):
                        inputs = dict(inputs_embeds=self._embeds(ids, softs, mask))
                    else:
                        inputs = dict(input_ids=ids)
                    logits = self.model(attention_mask=mask, position_ids=positions,
                                        **inputs).logits[:, -1, :]
            except RuntimeError as e:
                raise BackendError(f'{self.name}: yes/no scoring failed: {e}') from e
            return hf_common.yes_probability_from_logits(logits, self._yes, self._no)

    def _yes_on_shared_prefix(self, rows: list[list[int]], shared: int) -> list[float]:
        """P(yes) of prompts that share their first `shared` tokens (the verification
        questions of one frame: the same objects, then 'Is <objN> really a ...?'): the
        shared part is prefilled once, then every row's own few tokens on a copy of its
        KV, in one batch (right-padded: a row's padding comes after its last token, which
        causal attention never lets it see). Same result as one forward per prompt."""
        import torch
        pad = hf_common.pad_id(self.tokenizer) or 0
        tails = [r[shared:] for r in rows]
        width = max(len(t) for t in tails)
        try:
            with torch.inference_mode():
                cache = self.model(torch.tensor([rows[0][:shared]], device=self.device),
                                   use_cache=True).past_key_values
                cache.batch_repeat_interleave(len(rows))
                ids = torch.tensor([t + [pad] * (width - len(t)) for t in tails],
                                   device=self.device)
                positions = torch.arange(shared, shared + width, device=self.device)
                logits = self.model(input_ids=ids, past_key_values=cache,
                                    position_ids=positions.expand(len(rows), -1),
                                    attention_mask=torch.ones(len(rows), shared + width,
                                                              dtype=torch.long,
                                                              device=self.device)).logits
                last = logits[torch.arange(len(rows)), [len(t) - 1 for t in tails], :]
        except RuntimeError as e:
            raise BackendError(f'{self.name}: yes/no scoring failed: {e}') from e
        return hf_common.yes_probability_from_logits(last, self._yes, self._no)

    def close(self) -> None:
        with self._lock:
            self._prefix_cache.clear()
            self._session = None
            self.model = None
        hf_common.release_cuda_memory()
