"""Training of the shared-query fusion adapter (core.fusion) with the LLM and the detector
frozen.

Recipe: the LM loss of the answer tokens only (everything else is context), soft tokens
inserted at the prompt's marker exactly as at run time (core.fusion.hosts), plus a BCE
loss of the re-scoring head on detections the data marks right or wrong. AdamW, linear
warm-up then cosine decay, gradient accumulation, gradient clipping, autocast (bf16, else
fp16 with a grad scaler) on CUDA, periodic evaluation, checkpoints (safetensors + config)
that resume exactly, a progress bar and a JSONL metrics log. The recipe's defaults:
config/fusion.yaml (TrainConfig).

Batches are scenes x questions: `scenes_per_step` scenes, `questions_per_scene` of each
scene's question/answer pairs. The adapter runs once per scene.
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

from ..config import Config
from ..errors import ConfigError, ModelLoadError
from ..reasoning.prompts import PromptBuilder, load_template
from ..runtime.progress import progress as make_progress
from .fusion_config import AdapterConfig, TrainConfig
from .data import QA, Scene
from .features import Featurizer, embedding_rms, mentioned_objects
from ..mllm.hf_common import common_prefix
from .hosts import Rows, TextLlmHost, VlmHost, make_host
from .io import load_adapter, save_adapter
from .model import SharedQueryFusion, parameter_count

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    losses: list[float]                       # LM loss per optimiser step
    eval: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    seconds_per_step: float = 0.0
    parameters: int = 0
    #: the step whose weights were saved: the last, or with keep_best the best evaluated
    kept_step: int = 0


# ------------------------------------------------------------------ batches

class Trainer:
    """One adapter, one frozen backend, the data; `run()` trains, `evaluate()` scores."""

    def __init__(self, config: Config, train_config: TrainConfig, backend=None,
                 adapter: SharedQueryFusion | None = None):
        from ..mllm import create_backend
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
        picked = [scenes[s] for s in row_scene]
        batch = self.featurizer.build([s.load_image() for s in picked],
                                      [s.detections for s in picked],
                                      [self._adapter_indices(s) for s in picked],
                                      [mentioned_objects(qa.question) for qa in qas])
        out = self.module(batch.to(self.device))
        return out.soft_tokens, out.rescore_logits, batch

    def _score_rows(self, scenes, rows: Rows, soft, grad: bool, qas, last: bool = False):
        if isinstance(self.host, VlmHost):
            return self.host.forward(scenes, rows, soft, grad, qas, last)
        return self.host.forward(rows, soft, grad, last)

    def lm_loss(self, scenes: Sequence[Scene], qas_per_scene: Sequence[Sequence[QA]],
                with_adapter: bool = True, grad: bool = True):
        """Mean NLL of the answer tokens (+ EOS) over the rows, the number of tokens, and
        (adapter output, FusionBatch, scene of each row) for the re-scoring loss."""
        rows = Rows([], [], [])
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
                single = Rows([], [], [])
                multi = Rows([], [], [])
                single_qa, multi_qa, single_ids = [], [], []
                for s, scene in enumerate(group):
                    for qa in scene.qas:
                        if not qa.choices:
                            continue
                        ids = [self.host.encode(c) for c in qa.choices]
                        prompt = self.host.prompt_ids(scene, qa, with_adapter) \
                            if isinstance(self.host, TextLlmHost) else []
                        common = common_prefix(ids)
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
        # keep_best: the weights with the lowest evaluated answer NLL so far, and its step
        best = _Best(tc.keep_best and bool(eval_scenes))
        if resume:
            start, history = self._resume(resume, optimizer, scheduler, best)
        (out / 'train_config.json').write_text(json.dumps(
            {'train': dataclasses.asdict(tc), 'adapter': self.adapter_config.to_dict(),
             'mllm': self.config.mllm.model, 'backend': self.backend.name}, indent=1) + '\n')
        metrics = (out / 'metrics.jsonl').open('a', encoding='utf-8')
        result = TrainResult(out, tc.steps, history, parameters=parameter_count(self.module))
        self.module.train()
        t_start = time.perf_counter()
        # A bar on a terminal, else a log line per log_every steps (core.runtime.progress).
        bar = make_progress(tc.steps, 'train-fusion', 'step', log,
                            None if progress else False, tc.log_every, start)
        try:
            for step in range(start, tc.steps):
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
                    best.offer(ev['answer_nll'], step + 1, self.module)
                if (step + 1) % max(1, tc.log_every) == 0 or last or 'eval_answer_nll' in record:
                    metrics.write(json.dumps(record) + '\n')
                    metrics.flush()
                bar.set_postfix(loss=f'{lm_total:.3f}', lr=f'{record["lr"]:.2e}')
                bar.update(1)
                if tc.save_every and (step + 1) % tc.save_every == 0 and not last:
                    self._checkpoint(out, step + 1, optimizer, scheduler, history, best)
        finally:
            metrics.close()
            bar.close()
        result.seconds = time.perf_counter() - t_start
        done = max(1, tc.steps - start)
        result.seconds_per_step = result.seconds / done
        result.kept_step = best.restore(self.module) or tc.steps
        kept_eval = next((e for e in result.eval if e['step'] == result.kept_step), None)
        save_adapter(self.module, out, info={'steps': tc.steps, 'kept_step': result.kept_step,
                                             'final_loss': history[-1] if history else None,
                                             'eval': kept_eval,
                                             'train': dataclasses.asdict(tc)})
        result.losses = history
        return result

    # ---------------------------------------------------------------- checkpoints
    def _checkpoint(self, out: Path, step: int, optimizer, scheduler, history,
                    best: '_Best') -> Path:
        from safetensors.torch import save_file
        folder = out / f'checkpoint-{step:06d}'
        save_adapter(self.module, folder, info={'step': step,
                                                'train': dataclasses.asdict(self.tc)})
        if best.state is not None:
            save_file(best.state, str(folder / BEST_FILE))
        state = optimizer.state_dict()
        tensors = {}
        for idx, st in state['state'].items():
            for name, value in st.items():
                if isinstance(value, torch.Tensor):
                    tensors[f'{idx}.{name}'] = value.detach().cpu().reshape(-1).contiguous()
        save_file(tensors, str(folder / 'optimizer.safetensors'))
        (folder / 'trainer_state.json').write_text(json.dumps(
            {'step': step, 'history': history, 'param_groups': state['param_groups'],
             'scheduler': scheduler.state_dict(), 'best_nll': best.nll,
             'best_step': best.step}, indent=1) + '\n')
        checkpoints = sorted(out.glob('checkpoint-*'))
        for old in checkpoints[:-max(1, self.tc.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def _resume(self, folder, optimizer, scheduler, best: '_Best') -> tuple[int, list[float]]:
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
        if best.enabled and (folder / BEST_FILE).is_file():
            best.nll, best.step = meta.get('best_nll', math.inf), meta.get('best_step', 0)
            best.state = load_file(str(folder / BEST_FILE))
        log.info('resumed from %s at step %d', folder, meta['step'])
        return int(meta['step']), list(meta.get('history', []))


#: in a checkpoint with keep_best: the best weights so far (adapter state dict)
BEST_FILE = 'best_adapter.safetensors'


class _Best:
    """keep_best: a copy of the weights with the lowest evaluated answer NLL (the usual
    early-stopping guard: a run that gets worse after its best evaluation, e.g. when the
    learning rate is still high late in training, keeps its best). The evaluation scenes
    choose, so they must not be the scenes a result is reported on."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.nll = math.inf
        self.step = 0
        self.state: dict[str, torch.Tensor] | None = None

    def offer(self, nll: float, step: int, module: nn.Module) -> None:
        if self.enabled and nll < self.nll:
            self.nll, self.step = nll, step
            self.state = {k: v.detach().cpu().clone().contiguous()
                          for k, v in module.state_dict().items()}

    def restore(self, module: nn.Module) -> int:
        """Load the kept weights into `module`; their step (0 = nothing kept)."""
        if self.state is None:
            return 0
        module.load_state_dict(self.state)
        return self.step


def train(config: Config, scenes: Sequence[Scene], out_dir: str | Path,
          train_config: TrainConfig = TrainConfig(), eval_scenes: Sequence[Scene] | None = None,
          resume: str | Path | None = None, backend=None, progress: bool = True) -> TrainResult:
    """Train an adapter for the configured MLLM on `scenes`; the adapter lands in out_dir."""
    trainer = Trainer(config, train_config, backend)
    return trainer.run(scenes, out_dir, eval_scenes, resume, progress)
