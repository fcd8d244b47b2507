"""Text-only instruct LLM backend: the model sees the image only through the
perception-embedded prompt (the offline default: SmolLM2-135M-Instruct).

Prefix KV reuse: the system prompt and few-shot examples are the same for every frame,
so their keys/values are computed once per prefix and copied into each generation; only
the frame's own tokens are prefilled. Used when the prefix tokenizes identically alone
and inside the full prompt (checked), else the full prompt is prefilled.
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
from . import hf_common
from .base import ChatMessage, MllmRequest

log = logging.getLogger(__name__)


class TransformersLlmBackend:
    sees_images = False

    def __init__(self, config: Config):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg = config.mllm
        source = hf_common.resolve_model_source(config)
        hf_common.check_device(cfg.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                source, trust_remote_code=cfg.trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(
                source, dtype=hf_common.torch_dtype(config),
                attn_implementation=cfg.attn_implementation,
                trust_remote_code=cfg.trust_remote_code, use_safetensors=None)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f'cannot load LLM from {source}: {e}') from e
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
        self.kv_hits = 0

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

    def _cached_prefix(self, request: MllmRequest, full_ids: list[int]):
        """(number of cached tokens, a private copy of their KV cache) or (0, None)."""
        if not (self.config.mllm.kv_reuse and request.prefix):
            return 0, None
        key = self._chat_text(request.prefix, False)
        entry = self._prefix_cache.get(key)
        if entry is None:
            import torch
            ids = self._encode(key)
            if full_ids[:len(ids)] != ids or len(ids) >= len(full_ids):
                entry = (ids, None)  # the template merges tokens across the boundary
            else:
                with torch.inference_mode():
                    out = self.model(torch.tensor([ids], device=self.device), use_cache=True)
                entry = (ids, out.past_key_values)
            self._prefix_cache[key] = entry
            if len(self._prefix_cache) > 8:
                self._prefix_cache.popitem(last=False)
        ids, cache = entry
        if cache is None or full_ids[:len(ids)] != ids:
            return 0, None
        self.kv_hits += 1
        # generate() appends to the cache it is given: hand it a copy.
        return len(ids), copy.deepcopy(cache)

    # ---------------------------------------------------------------- inference
    def generate(self, request: MllmRequest) -> Generation:
        import torch
        t0 = time.perf_counter()
        with self._lock:
            text = self.prompt_text(request)
            ids = self._encode(text)
            cached, cache = self._cached_prefix(request, ids)
            t1 = time.perf_counter()
            input_ids = torch.tensor([ids], device=self.device)
            kwargs = hf_common.request_generation_kwargs(self.config, self.tokenizer, request,
                                                         len(ids))
            kwargs.update(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))
            if cache is not None:
                kwargs['past_key_values'] = cache
            try:
                with torch.inference_mode():
                    out = self.model.generate(**kwargs)
            except (RuntimeError, ValueError, IndexError) as e:
                raise BackendError(f'{self.name}: generation failed: {e}') from e
            new = out[0, len(ids):].tolist()
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
            rows = [self._encode(self.prompt_text(r)) for r in requests]
            width = max(len(r) for r in rows)
            pad = hf_common.pad_id(self.tokenizer) or 0
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows],
                                device=self.device)
            try:
                with torch.inference_mode():
                    # Positions count real tokens only, so padding does not shift them.
                    positions = (mask.cumsum(-1) - 1).clamp(min=0)
                    logits = self.model(input_ids=ids, attention_mask=mask,
                                        position_ids=positions).logits[:, -1, :]
            except RuntimeError as e:
                raise BackendError(f'{self.name}: yes/no scoring failed: {e}') from e
            return hf_common.yes_probability_from_logits(logits, self._yes, self._no)

    def close(self) -> None:
        with self._lock:
            self._prefix_cache.clear()
            self.model = None
        hf_common.release_cuda_memory()
