"""Training of the shared-query fusion adapter (core.fusion) with the LLM and the detector
frozen.

Recipe: the LM loss of the answer tokens only (everything else is context), soft tokens
inserted at the prompt's marker exactly as at run time (same prompt template, same
placeholder ids), plus a BCE loss of the re-scoring head on detections the data marks
right or wrong. AdamW, linear warm-up then cosine decay, gradient accumulation, gradient
clipping, autocast (bf16, else fp16 with a grad scaler) on CUDA, periodic evaluation,
checkpoints (safetensors + config) that resume exactly, a progress bar and a JSONL
metrics log.

Batches are scenes x questions: `scenes_per_step` scenes, `questions_per_scene` of each
scene's question/answer pairs. The adapter runs once per scene. With a text LLM the prompt
is split where the soft tokens start:

    [system + examples]  [objects block]  [soft tokens + question + answer]
     KV once per run      KV per scene,     forward + backward (the only part that
     (no grad)            no grad           depends on the adapter)

so backpropagation runs only over the short tail, attending to cached keys/values; a VLM
is run on the full sequence (its image tokens sit in the user turn).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .config import Config
from .errors import ConfigError, ModelLoadError
from .fusion import (AdapterConfig, Featurizer, SharedQueryFusion, dataclass_from_dict,
                     embedding_rms, load_adapter, parameter_count, save_adapter, vlm_vision_fn)
from .fusion_data import QA, Scene
from .mllm import hf_common
from .prompts import PromptBuilder, load_template

log = logging.getLogger(__name__)

# Stands in for soft tokens when only the prompt text is wanted (the marker is rendered).
_MARKER_ONLY = object()


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    scenes_per_step: int = 4          # scenes per micro-batch
    questions_per_scene: int = 4      # rows per scene; rows per micro-batch = product
    grad_accum: int = 1               # micro-batches per optimiser step
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    min_lr_ratio: float = 0.1         # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    hint_lr_mult: float = 10.0        # learning-rate multiplier of the hint tokens
    rescore_weight: float = 0.5       # weight of the re-scoring head's BCE loss
    eval_every: int = 50              # 0 = only at the end
    eval_scenes: int = 32             # held-out scenes scored at each evaluation
    eval_fraction: float = 0.05       # held out from --data when no eval data is given
    save_every: int = 100             # checkpoint period (0 = only the final adapter)
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    amp: str = 'auto'                 # auto | bf16 | fp16 | off (autocast on CUDA only)
    prompt_template: str = 'scene_fusion_v1'
    #: AdapterConfig fields to set (num_queries, dim, layers, heads, crop_size, ...)
    adapter: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> 'TrainConfig':
        return dataclass_from_dict(cls, data, 'fusion training', ConfigError)


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    losses: list[float]                       # LM loss per optimiser step
    eval: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    seconds_per_step: float = 0.0
    parameters: int = 0


# ------------------------------------------------------------------ hosts

@dataclass
class _Rows:
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

    def forward(self, rows: _Rows, soft: torch.Tensor | None, grad: bool,
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

    def forward(self, scenes: Sequence[Scene], rows: _Rows, soft: torch.Tensor | None,
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
        inputs = self.backend._inputs(requests, padding=len(requests) > 1, softs=softs)
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


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all sequences share."""
    n = 0
    while all(len(x) > n for x in seqs) and len({x[n] for x in seqs}) == 1:
        n += 1
    return n


def make_host(backend, prompts: PromptBuilder, num_tokens: int):
    if getattr(backend, 'sees_images', False):
        return VlmHost(backend, prompts, num_tokens)
    if not getattr(backend, 'supports_soft_tokens', False):
        raise ConfigError(f'{backend.name} cannot take soft tokens: fusion training needs '
                          'mllm.backend transformers_llm or transformers_vlm')
    return TextLlmHost(backend, prompts, num_tokens)


# ------------------------------------------------------------------ batches

class Trainer:
    """One adapter, one frozen backend, the data; `run()` trains, `evaluate()` scores."""

    def __init__(self, config: Config, train_config: TrainConfig, backend=None,
                 adapter: SharedQueryFusion | None = None):
        from .mllm import create_backend
        self.config = config
        self.tc = train_config
        self.backend = backend if backend is not None else create_backend(config)
        if self.backend is None:
            raise ConfigError('fusion training needs an MLLM (mllm.backend is none)')
        template = load_template(train_config.prompt_template)
        if '{soft_tokens}' not in template.tasks['answer'].user:
            raise ConfigError(f'prompt template {train_config.prompt_template} has no '
                              '{soft_tokens} field in its answer task (use scene_fusion_v1)')
        self.prompts = PromptBuilder(template, config.mllm, self.backend.count_tokens,
                                     self.backend.sees_images)
        model = self.backend.model
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        embedding = model.get_input_embeddings()
        sees = self.backend.sees_images
        overrides = dict(train_config.adapter)
        if sees:
            overrides.setdefault('vision_dim', int(embedding.weight.shape[1]))
        if adapter is not None:
            self.adapter_config = adapter.config
        else:
            self.adapter_config = AdapterConfig(
                llm_hidden=int(embedding.weight.shape[1]), output_rms=embedding_rms(embedding),
                llm=self.backend.name, prompt_template=train_config.prompt_template,
                **overrides)
        self.host = make_host(self.backend, self.prompts, self.adapter_config.num_soft_tokens)
        self.device = self.host.device
        needs_vision = self.adapter_config.vision_dim or self.adapter_config.roi_source == 'vision'
        self.featurizer = Featurizer(self.adapter_config, self.backend.tokenizer, embedding,
                                     self.host.vision_fn if needs_vision else None)
        if adapter is None:
            torch.manual_seed(train_config.seed)
            adapter = SharedQueryFusion(self.adapter_config)
        self.module = adapter.to(self.device)
        self._target_cache: dict[str, list[int]] = {}

    # ---------------------------------------------------------------- rows
    def _answer_ids(self, answer: str) -> list[int]:
        ids = self._target_cache.get(answer)
        if ids is None:
            ids = self.host.encode(answer) + [self._eos()]
            self._target_cache[answer] = ids
        return ids

    def _eos(self) -> int:
        eos = self.backend.tokenizer.eos_token_id
        return eos[0] if isinstance(eos, list) else eos

    def _adapter_indices(self, scene: Scene) -> tuple[int, ...]:
        return self.prompts.select_objects(scene.detections)

    def adapter_rows(self, scenes: Sequence[Scene], row_scene: Sequence[int],
                     qas: Sequence[QA]):
        """Adapter output for rows (scene row_scene[r], question qas[r]): soft tokens
        (R, H + K, D), re-scoring logits (R, N) and the FusionBatch."""
        from .fusion import mentioned_objects
        picked = [scenes[s] for s in row_scene]
        batch = self.featurizer.build([s.load_image() for s in picked],
                                      [s.detections for s in picked],
                                      [self._adapter_indices(s) for s in picked],
                                      [mentioned_objects(qa.question) for qa in qas])
        out = self.module(batch.to(self.device))
        return out.soft_tokens, out.rescore_logits, batch

    def _score_rows(self, scenes, rows: _Rows, soft, grad: bool, qas, last: bool = False):
        if isinstance(self.host, VlmHost):
            return self.host.forward(scenes, rows, soft, grad, qas, last)
        return self.host.forward(rows, soft, grad, last)

    def lm_loss(self, scenes: Sequence[Scene], qas_per_scene: Sequence[Sequence[QA]],
                with_adapter: bool = True, grad: bool = True):
        """Mean NLL of the answer tokens (+ EOS) over the rows, the number of tokens, and
        (adapter output, FusionBatch, scene of each row) for the re-scoring loss."""
        rows = _Rows([], [], [])
        flat = []
        for s, (scene, qas) in enumerate(zip(scenes, qas_per_scene)):
            for qa in qas:
                rows.row_scene.append(s)
                rows.prompts.append(self.host.prompt_ids(scene, qa, with_adapter)
                                    if isinstance(self.host, TextLlmHost) else [])
                rows.targets.append(self._answer_ids(qa.answer))
                flat.append(qa)
        soft = logits = batch = None
        if with_adapter:
            with torch.set_grad_enabled(grad):
                soft, logits, batch = self.adapter_rows(scenes, rows.row_scene, flat)
        logps = self._score_rows(scenes, rows, soft, grad, flat)
        total = torch.cat(logps)
        return -total.mean(), int(total.numel()), (logits, batch, rows.row_scene)

    def rescore_loss(self, scenes: Sequence[Scene], logits: torch.Tensor, batch,
                     row_scene: Sequence[int]):
        """BCE of the re-scoring head on detections the data marks right or wrong."""
        labels = torch.zeros_like(logits)
        known = torch.zeros_like(logits, dtype=torch.bool)
        for r, scene in enumerate(scenes[i] for i in row_scene):
            for n, i in enumerate(batch.indices[r]):
                if i >= 0 and i < len(scene.correct) and scene.correct[i] is not None:
                    labels[r, n] = float(scene.correct[i])
                    known[r, n] = True
        if not bool(known.any()):
            return None
        return nn.functional.binary_cross_entropy_with_logits(logits[known].float(),
                                                              labels[known])

    def sample(self, scenes: Sequence[Scene], step: int, micro: int):
        rng = random.Random(self.tc.seed * 1_000_003 + step * 97 + micro)
        picked = [scenes[rng.randrange(len(scenes))] for _ in range(self.tc.scenes_per_step)]
        qas = [rng.sample(s.qas, min(self.tc.questions_per_scene, len(s.qas))) for s in picked]
        return picked, qas

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, scenes: Sequence[Scene], with_adapter: bool = True,
                 chunk: int = 8) -> dict[str, Any]:
        """Restricted-choice accuracy (argmax over `choices` of the summed log-probability
        of the choice's tokens) on questions with choices, per kind and overall, and the
        mean answer NLL on every question."""
        self.module.eval()
        right: dict[str, list[int]] = {}
        nll_sum, nll_n = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(scenes), chunk):
                group = list(scenes[start:start + chunk])
                # answer NLL
                loss, n, _ = self.lm_loss(group, [s.qas for s in group], with_adapter,
                                          grad=False)
                nll_sum += float(loss) * n
                nll_n += n
                # choices: one row per question when every choice is one token (its
                # next-token log-probability), else one row per choice (teacher forced)
                single = _Rows([], [], [])
                multi = _Rows([], [], [])
                single_qa, multi_qa, single_ids = [], [], []
                for s, scene in enumerate(group):
                    for qa in scene.qas:
                        if not qa.choices:
                            continue
                        ids = [self.host.encode(c) for c in qa.choices]
                        prompt = self.host.prompt_ids(scene, qa, with_adapter) \
                            if isinstance(self.host, TextLlmHost) else []
                        common = _common_prefix(ids)
                        if all(len(i) == common + 1 for i in ids):
                            # choices differ in their last token only ("<obj2> is red"):
                            # score that token after the shared tokens, in one row
                            single.row_scene.append(s)
                            single.prompts.append(prompt)
                            single.targets.append([])
                            single.forced.append(ids[0][:common])
                            single_qa.append(qa)
                            single_ids.append([i[common] for i in ids])
                        else:
                            for c in ids:
                                multi.row_scene.append(s)
                                multi.prompts.append(prompt)
                                multi.targets.append(c)
                                multi_qa.append(qa)
                if single_qa:
                    soft = self.adapter_rows(group, single.row_scene, single_qa)[0] \
                        if with_adapter else None
                    logp = self._score_rows(group, single, soft, False, single_qa, last=True)
                    for r, qa in enumerate(single_qa):
                        best = max(range(len(qa.choices)),
                                   key=lambda j: float(logp[r, single_ids[r][j]]))
                        right.setdefault(qa.kind or 'all', []).append(
                            int(qa.choices[best] == qa.answer))
                if multi_qa:
                    soft = self.adapter_rows(group, multi.row_scene, multi_qa)[0] \
                        if with_adapter else None
                    scores = [float(lp.sum()) for lp in
                              self._score_rows(group, multi, soft, False, multi_qa)]
                    pos = 0
                    while pos < len(multi_qa):
                        qa = multi_qa[pos]
                        k = len(qa.choices)
                        best = max(range(k), key=lambda j: scores[pos + j])
                        right.setdefault(qa.kind or 'all', []).append(
                            int(qa.choices[best] == qa.answer))
                        pos += k
        self.module.train()
        result: dict[str, Any] = {'answer_nll': nll_sum / max(nll_n, 1)}
        every = [x for v in right.values() for x in v]
        if every:
            result['accuracy'] = sum(every) / len(every)
            result['questions'] = len(every)
            for kind, v in sorted(right.items()):
                result[f'accuracy_{kind}'] = sum(v) / len(v)
        return result

    # ---------------------------------------------------------------- training
    def _optimizer(self):
        decay, no_decay, hints = [], [], []
        for name, p in self.module.named_parameters():
            if name == 'hints':
                hints.append(p)
            else:
                (decay if p.ndim >= 2 and name != 'queries' else no_decay).append(p)
        # Hint tokens are free embedding-scale vectors (prompt tuning): a larger step.
        return torch.optim.AdamW([{'params': decay, 'weight_decay': self.tc.weight_decay},
                                  {'params': no_decay, 'weight_decay': 0.0},
                                  {'params': hints, 'weight_decay': 0.0,
                                   'lr': self.tc.lr * self.tc.hint_lr_mult}], lr=self.tc.lr)

    def lr_factor(self, step: int) -> float:
        tc = self.tc
        if step < tc.warmup_steps:
            return (step + 1) / tc.warmup_steps
        span = max(1, tc.steps - tc.warmup_steps)
        progress = min(1.0, (step - tc.warmup_steps) / span)
        return tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def _autocast(self):
        import contextlib
        mode = self.tc.amp
        if self.device.type != 'cuda' or mode == 'off':
            return contextlib.nullcontext(), None
        if mode == 'auto':
            mode = 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
        dtype = torch.bfloat16 if mode == 'bf16' else torch.float16
        scaler = torch.amp.GradScaler('cuda') if dtype == torch.float16 else None
        return torch.autocast('cuda', dtype=dtype), scaler

    def run(self, scenes: Sequence[Scene], out_dir: str | Path,
            eval_scenes: Sequence[Scene] | None = None, resume: str | Path | None = None,
            progress: bool = True) -> TrainResult:
        tc = self.tc
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        usable = [s for s in scenes if s.qas and s.detections is not None]
        if not usable:
            raise ConfigError('no training scene has detections and questions')
        if eval_scenes is None and tc.eval_fraction > 0 and len(usable) > 10:
            n_eval = max(1, int(len(usable) * tc.eval_fraction))
            order = list(range(len(usable)))
            random.Random(tc.seed).shuffle(order)
            eval_scenes = [usable[i] for i in order[:n_eval]]
            usable = [usable[i] for i in order[n_eval:]]
        eval_scenes = list(eval_scenes or [])[:tc.eval_scenes]
        optimizer = self._optimizer()
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        autocast, scaler = self._autocast()
        start = 0
        history: list[float] = []
        if resume:
            start, history = self._resume(resume, optimizer, scheduler)
        (out / 'train_config.json').write_text(json.dumps(
            {'train': dataclasses.asdict(tc), 'adapter': self.adapter_config.to_dict(),
             'mllm': self.config.mllm.model, 'backend': self.backend.name}, indent=1) + '\n')
        metrics = (out / 'metrics.jsonl').open('a', encoding='utf-8')
        result = TrainResult(out, tc.steps, history, parameters=parameter_count(self.module))
        self.module.train()
        t_start = time.perf_counter()
        bar = _progress(range(start, tc.steps), progress, start, tc.steps)
        try:
            for step in bar:
                t0 = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                lm_total, rs_total = 0.0, 0.0
                for micro in range(tc.grad_accum):
                    picked, qas = self.sample(usable, step, micro)
                    with autocast:
                        lm, _, (logits, batch, row_scene) = self.lm_loss(picked, qas)
                    loss = lm
                    rs = self.rescore_loss(picked, logits, batch, row_scene)
                    if rs is not None and tc.rescore_weight > 0:
                        loss = loss + tc.rescore_weight * rs
                        rs_total += float(rs.detach()) / tc.grad_accum
                    loss = loss / tc.grad_accum
                    (scaler.scale(loss) if scaler else loss).backward()
                    lm_total += float(lm.detach()) / tc.grad_accum
                if scaler:
                    scaler.unscale_(optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.module.parameters(),
                                                                 tc.grad_clip))
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                history.append(lm_total)
                record = {'step': step + 1, 'loss': round(lm_total, 5),
                          'rescore_loss': round(rs_total, 5), 'grad_norm': round(grad_norm, 4),
                          'lr': scheduler.get_last_lr()[0],
                          'step_s': round(time.perf_counter() - t0, 3)}
                last = step + 1 == tc.steps
                if eval_scenes and ((tc.eval_every and (step + 1) % tc.eval_every == 0) or last):
                    ev = self.evaluate(eval_scenes)
                    record.update({f'eval_{k}': v for k, v in ev.items()})
                    result.eval.append({'step': step + 1, **ev})
                if (step + 1) % max(1, tc.log_every) == 0 or last or 'eval_answer_nll' in record:
                    metrics.write(json.dumps(record) + '\n')
                    metrics.flush()
                if hasattr(bar, 'set_postfix'):
                    bar.set_postfix(loss=f'{lm_total:.3f}', lr=f'{record["lr"]:.2e}')
                if tc.save_every and (step + 1) % tc.save_every == 0 and not last:
                    self._checkpoint(out, step + 1, optimizer, scheduler, history)
        finally:
            metrics.close()
        result.seconds = time.perf_counter() - t_start
        done = max(1, tc.steps - start)
        result.seconds_per_step = result.seconds / done
        save_adapter(self.module, out, info={'steps': tc.steps, 'final_loss': history[-1]
                                             if history else None,
                                             'eval': result.eval[-1] if result.eval else None,
                                             'train': dataclasses.asdict(tc)})
        result.losses = history
        return result

    # ---------------------------------------------------------------- checkpoints
    def _checkpoint(self, out: Path, step: int, optimizer, scheduler, history) -> Path:
        from safetensors.torch import save_file
        folder = out / f'checkpoint-{step:06d}'
        save_adapter(self.module, folder, info={'step': step,
                                                'train': dataclasses.asdict(self.tc)})
        state = optimizer.state_dict()
        tensors = {}
        for idx, st in state['state'].items():
            for name, value in st.items():
                if isinstance(value, torch.Tensor):
                    tensors[f'{idx}.{name}'] = value.detach().cpu().reshape(-1).contiguous()
        save_file(tensors, str(folder / 'optimizer.safetensors'))
        (folder / 'trainer_state.json').write_text(json.dumps(
            {'step': step, 'history': history, 'param_groups': state['param_groups'],
             'scheduler': scheduler.state_dict()}, indent=1) + '\n')
        checkpoints = sorted(out.glob('checkpoint-*'))
        for old in checkpoints[:-max(1, self.tc.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def _resume(self, folder, optimizer, scheduler) -> tuple[int, list[float]]:
        from safetensors.torch import load_file
        folder = Path(folder)
        module = load_adapter(folder, expected=self.adapter_config, device=self.device)
        self.module.load_state_dict(module.state_dict())
        try:
            meta = json.loads((folder / 'trainer_state.json').read_text())
            tensors = load_file(str(folder / 'optimizer.safetensors'))
        except (OSError, ValueError) as e:
            raise ModelLoadError(f'cannot resume from {folder}: {e}') from e
        params = [p for g in optimizer.param_groups for p in g['params']]
        state: dict[int, dict] = {}
        for key, value in tensors.items():
            idx, name = key.split('.', 1)
            ref = params[int(idx)]
            # AdamW keeps its step count on the CPU (non-capturable), moments by the param.
            state.setdefault(int(idx), {})[name] = value.reshape(()) if name == 'step' \
                else value.to(ref.device).reshape(ref.shape)
        optimizer.load_state_dict({'state': state, 'param_groups': meta['param_groups']})
        scheduler.load_state_dict(meta['scheduler'])
        log.info('resumed from %s at step %d', folder, meta['step'])
        return int(meta['step']), list(meta.get('history', []))


def _progress(iterable, enabled: bool, start: int, total: int):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, initial=start, total=total, desc='train-fusion', unit='step',
                dynamic_ncols=True)


def train(config: Config, scenes: Sequence[Scene], out_dir: str | Path,
          train_config: TrainConfig = TrainConfig(), eval_scenes: Sequence[Scene] | None = None,
          resume: str | Path | None = None, backend=None, progress: bool = True) -> TrainResult:
    """Train an adapter for the configured MLLM on `scenes`; the adapter lands in out_dir."""
    trainer = Trainer(config, train_config, backend)
    return trainer.run(scenes, out_dir, eval_scenes, resume, progress)
