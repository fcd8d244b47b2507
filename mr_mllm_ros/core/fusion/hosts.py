"""The frozen backend as the fusion trainer sees it: token rows in, log-probabilities of
their targets out, with the adapter's soft tokens inserted at the prompt's marker exactly
as at run time (same prompt template, same placeholder ids).

With a text LLM the prompt is split where the soft tokens start:

    [system + examples]  [objects block]  [soft tokens + question + answer]
     KV once per run      KV per scene,     forward + backward (the only part that
     (no grad)            no grad           depends on the adapter)

so backpropagation runs only over the short tail, attending to cached keys/values; a VLM
is run on the full sequence (its image tokens sit in the user turn).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..errors import ConfigError
from ..mllm import hf_common
from ..reasoning.prompts import PromptBuilder
from .data import QA, Scene
from .features import vlm_vision_fn

# Stands in for soft tokens when only the prompt text is wanted (the marker is rendered).
_MARKER_ONLY = object()


@dataclass
class Rows:
    """Token rows of a micro-batch: row r is question rows[r] of scene row_scene[r]."""

    row_scene: list[int]
    prompts: list[list[int]]          # prompt ids (soft placeholders included)
    targets: list[list[int]]          # answer ids (+ EOS) or candidate ids
    #: per row, answer tokens forced after the prompt before the targets (may be empty)
    forced: list[list[int]] = field(default_factory=list)

    def forced_ids(self, r: int) -> list[int]:
        return self.forced[r] if self.forced else []


class _FrozenHost:
    """A frozen transformers backend seen by the trainer: what both kinds share."""

    def __init__(self, backend, prompts: PromptBuilder, num_tokens: int):
        self.backend = backend
        self.model = backend.model
        self.tokenizer = backend.tokenizer
        self.prompts = prompts
        self.k = num_tokens  # soft tokens per scene (hint + scene tokens)
        self.device = backend.device
        self.embedding = self.model.get_input_embeddings()
        self.hidden = int(self.embedding.weight.shape[1])
        self.soft_id = backend.soft_placeholder_id


class TextLlmHost(_FrozenHost):
    """A frozen transformers_llm backend seen by the trainer."""

    def __init__(self, backend, prompts: PromptBuilder, num_tokens: int):
        super().__init__(backend, prompts, num_tokens)
        self.vision_fn = None
        eos = self.tokenizer.eos_token_id
        self.eos = eos[0] if isinstance(eos, list) else eos
        self.prefix_ids, _ = backend.prefix_kv(prompts.prefix('answer'))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)['input_ids']

    def prompt_ids(self, scene: Scene, qa: QA, with_soft: bool) -> list[int]:
        request = self.prompts.answer(scene.detections, qa.question,
                                      soft_tokens=_MARKER_ONLY if with_soft else None)
        text = self.backend.prompt_text(request)
        if with_soft:
            text = hf_common.expand_soft_marker(text, self.tokenizer, self.soft_id, self.k)
        return self.encode(text)

    def _prefix(self) -> tuple[int, list]:
        """(P, [(k, v)] per layer of the shared prefix, batch 1): the backend's prefix KV
        cache (P = 0 when the backend could not cache it)."""
        ids, cache = self.backend.prefix_kv(self.prompts.prefix('answer'))
        if cache is None:
            return 0, []
        return len(ids), [(layer.keys, layer.values) for layer in cache.layers]

    def _cache(self, kv, rows=None):
        from transformers import DynamicCache
        if rows is not None:
            kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in kv]
        return DynamicCache(ddp_cache_data=kv, config=self.model.config)

    def forward(self, rows: Rows, soft: torch.Tensor | None, grad: bool,
                last: bool = False):
        """Log-probabilities of each row's targets: a list of (len(targets[r]),) tensors;
        with `last`, the next-token log-probabilities after each prompt, (R, V).
        soft: (R, K, D), row r's soft tokens, or None (prompt-only rows)."""
        p_len, prefix_kv = self._prefix()
        use_prefix = all(r[:p_len] == self.prefix_ids for r in rows.prompts) and p_len > 0
        p_len = p_len if use_prefix else 0
        # Context of a scene = the tokens its rows share before the first soft placeholder
        # (prompt-only: before the last prompt token); at least the prefix.
        by_scene: dict[int, list[int]] = {}
        for r, s in enumerate(rows.row_scene):
            by_scene.setdefault(s, []).append(r)
        ctx_end = {}
        for s, members in by_scene.items():
            first = rows.prompts[members[0]]
            end = len(first) - 1
            for r in members:
                ids = rows.prompts[r]
                stop = ids.index(self.soft_id) if soft is not None else len(ids) - 1
                common = next((i for i, (a, b) in enumerate(zip(ids, first)) if a != b),
                              min(len(ids), len(first)))
                end = min(end, stop, len(ids) - 1, common)
            ctx_end[s] = (max(end, p_len), members[0])
        scenes = sorted(ctx_end)
        slot = {s: i for i, s in enumerate(scenes)}
        contexts = [rows.prompts[ctx_end[s][1]][p_len:ctx_end[s][0]] for s in scenes]
        width = max(1, max(len(c) for c in contexts))
        ctx_ids = torch.zeros(len(scenes), width, dtype=torch.long)
        ctx_mask = torch.zeros(len(scenes), width, dtype=torch.long)
        for i, c in enumerate(contexts):      # left padding: contexts end where tails start
            if c:
                ctx_ids[i, width - len(c):] = torch.tensor(c)
                ctx_mask[i, width - len(c):] = 1
        ctx_ids, ctx_mask = ctx_ids.to(self.device), ctx_mask.to(self.device)
        ctx_len = ctx_mask.sum(1)
        with torch.no_grad():
            pre = torch.ones(len(scenes), p_len, dtype=torch.long, device=self.device)
            positions = p_len + (ctx_mask.cumsum(1) - 1).clamp(min=0)
            cache = self._cache([(k.expand(len(scenes), -1, -1, -1),
                                  v.expand(len(scenes), -1, -1, -1)) for k, v in prefix_kv]) \
                if p_len else None
            out = self.model.base_model(input_ids=ctx_ids,
                                        attention_mask=torch.cat([pre, ctx_mask], 1),
                                        position_ids=positions, past_key_values=cache,
                                        use_cache=True)
            ctx_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        # Tails: the rest of the prompt + targets, right padded.
        row_slot = torch.tensor([slot[s] for s in rows.row_scene], device=self.device)
        tails = [ids[ctx_end[rows.row_scene[r]][0]:] + rows.forced_ids(r) + rows.targets[r]
                 for r, ids in enumerate(rows.prompts)]
        t_width = max(len(t) for t in tails)
        tail_ids = torch.full((len(tails), t_width), self.eos, dtype=torch.long)
        tail_mask = torch.zeros(len(tails), t_width, dtype=torch.long)
        for r, t in enumerate(tails):
            tail_ids[r, :len(t)] = torch.tensor(t)
            tail_mask[r, :len(t)] = 1
        tail_ids, tail_mask = tail_ids.to(self.device), tail_mask.to(self.device)
        embeds = self.embedding(tail_ids)                                   # (R, T, D)
        if soft is not None:
            mask = hf_common.soft_token_mask(tail_ids, self.soft_id, [self.k] * len(tails),
                                             tail_mask)
            embeds = hf_common.insert_soft_tokens(embeds, mask, soft.reshape(-1, soft.shape[-1]))
        attention = torch.cat([torch.ones(len(tails), p_len, dtype=torch.long, device=self.device),
                               ctx_mask.index_select(0, row_slot), tail_mask], 1)
        positions = p_len + ctx_len.index_select(0, row_slot)[:, None] + \
            torch.arange(t_width, device=self.device)[None]
        with torch.set_grad_enabled(grad):
            hidden = self.model.base_model(
                inputs_embeds=embeds, attention_mask=attention, position_ids=positions,
                past_key_values=self._cache(ctx_kv, row_slot),
                use_cache=False).last_hidden_state                          # (R, T, D)
            if last:
                ends = torch.tensor([len(t) - 1 for t in tails], device=self.device)
                h = hidden[torch.arange(len(tails), device=self.device), ends]
                return torch.log_softmax(self.model.get_output_embeddings()(h).float(), dim=-1)
            # Target j of row r is predicted at tail position start_r + j - 1.
            picks, rows_idx, tgt = [], [], []
            for r, t in enumerate(tails):
                n_t = len(rows.targets[r])
                start = len(t) - n_t
                picks += list(range(start - 1, len(t) - 1))
                rows_idx += [r] * n_t
                tgt += rows.targets[r]
            h = hidden[torch.tensor(rows_idx, device=self.device),
                       torch.tensor(picks, device=self.device)]               # (sum T_r, D)
            logp = torch.log_softmax(self.model.get_output_embeddings()(h).float(), dim=-1)
            chosen = logp.gather(1, torch.tensor(tgt, device=self.device)[:, None])[:, 0]
        return list(chosen.split([len(t) for t in rows.targets]))


class VlmHost(_FrozenHost):
    """A frozen transformers_vlm backend seen by the trainer: full-sequence forwards with
    the image, soft tokens in inputs_embeds (or through the embedding hook)."""

    def __init__(self, backend, prompts: PromptBuilder, num_tokens: int):
        super().__init__(backend, prompts, num_tokens)
        self.vision_fn = vlm_vision_fn(backend)
        if backend.encoder_decoder:
            raise ConfigError(f'{backend.name}: fusion training supports decoder-only models '
                              '(Florence-2 takes trained adapters only through its hook)')

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)['input_ids']

    def request(self, scene: Scene, qa: QA, with_soft: bool):
        return self.prompts.answer(scene.detections, qa.question, scene.load_image(),
                                   soft_tokens=_MARKER_ONLY if with_soft else None)

    def forward(self, scenes: Sequence[Scene], rows: Rows, soft: torch.Tensor | None,
                grad: bool, qas: Sequence[QA], last: bool = False):
        import dataclasses as dc
        requests, softs = [], []
        for r, qa in enumerate(qas):
            req = self.request(scenes[rows.row_scene[r]], qa, soft is not None)
            # The targets follow the prompt (answer prefix included) as plain text.
            requests.append(dc.replace(req, answer_prefix=req.answer_prefix + self.tokenizer.decode(
                rows.forced_ids(r) + rows.targets[r])))
            softs.append(None if soft is None else
                         torch.zeros(self.k, self.hidden, device=self.device))
        inputs = self.backend.model_inputs(requests, padding=len(requests) > 1, softs=softs)
        ids = inputs['input_ids']
        with torch.set_grad_enabled(grad):
            if soft is None:
                logits = self.model(**inputs).logits
            else:
                mask = hf_common.soft_token_mask(ids, self.soft_id, [self.k] * len(requests),
                                                 inputs.get('attention_mask'))
                rows_soft = soft.reshape(-1, soft.shape[-1])                 # row by row
                if self.backend.soft_mode == 'inputs_embeds':
                    embeds = hf_common.insert_soft_tokens(self.embedding(ids), mask, rows_soft)
                    kwargs = {k: v for k, v in inputs.items() if k != 'input_ids'}
                    logits = self.model(inputs_embeds=embeds, **kwargs).logits
                else:
                    with hf_common.SoftTokenHook(self.embedding, self.soft_id, rows_soft):
                        logits = self.model(**inputs).logits
            if last:   # left padded: every row's prompt ends at the last position
                return torch.log_softmax(logits[:, -1].float(), dim=-1)
            out = []
            for r, t in enumerate(rows.targets):
                # Left padded: the targets are the last len(t) tokens of row r.
                n = len(t)
                got = ids[r, -n:].tolist()
                if got != t:
                    raise ConfigError(f'target tokens {t} re-tokenise as {got} inside the prompt')
                logp = torch.log_softmax(logits[r, -n - 1:-1].float(), dim=-1)
                out.append(logp.gather(1, torch.tensor(t, device=logp.device)[:, None])[:, 0])
        return out


def make_host(backend, prompts: PromptBuilder, num_tokens: int):
    if getattr(backend, 'sees_images', False):
        return VlmHost(backend, prompts, num_tokens)
    if not getattr(backend, 'supports_soft_tokens', False):
        raise ConfigError(f'{backend.name} cannot take soft tokens: fusion training needs '
                          'mllm.backend transformers_llm or transformers_vlm')
    return TextLlmHost(backend, prompts, num_tokens)
