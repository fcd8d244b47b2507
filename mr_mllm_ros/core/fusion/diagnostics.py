"""Where a fusion adapter's training fails: a broken feature or a broken optimisation.

Linear probes (multinomial logistic regression, fitted on one set of scenes and scored
on another) read an answer label (a colour, a size: each question's answer, for
questions that name one object and have a `kind`) from two places of the adapter:

- `roi`: the per-object RoI feature (`SharedQueryFusion.object_tokens`), what the pixels
  give the adapter;
- `soft`: the scene soft tokens the LLM receives for that question (the read-out of
  the asked object).

Reading the result next to the LLM's own restricted-choice accuracy:
- probe `roi` low: the feature does not carry the answer (crop encoder, RoI source);
- `roi` high, `soft` low: the read-out loses it (queries, focus, normalisation);
- both high, the LLM's accuracy low: the LLM does not read what the soft tokens carry,
  an optimisation failure (learning rate, schedule, steps), not a feature.

`scene_share` is the part of the scene soft tokens that varies from question to
question (RMS of the deviation from their mean over RMS of the tokens): near 0 the
scene tokens have collapsed to a constant (the answer format) and carry no scene.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .data import Scene
from .features import mentioned_objects


def probe_accuracy(train_x: torch.Tensor, train_y: Sequence[str], test_x: torch.Tensor,
                   test_y: Sequence[str], steps: int = 300, seed: int = 0) -> float:
    """Held-out accuracy of a linear classifier (features standardised on `train_x`)."""
    classes = {c: k for k, c in enumerate(sorted(set(train_y) | set(test_y)))}
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xs, xt = (train_x - mean) / std, (test_x - mean) / std
    ys = torch.tensor([classes[y] for y in train_y])
    yt = torch.tensor([classes[y] for y in test_y])
    gen = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(xs.shape[1], len(classes))
    with torch.no_grad():
        linear.weight.normal_(0.0, 0.01, generator=gen)
        linear.bias.zero_()
    opt = torch.optim.Adam(linear.parameters(), lr=1e-2, weight_decay=1e-3)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(linear(xs), ys).backward()
            opt.step()
    with torch.no_grad():
        return float((linear(xt).argmax(1) == yt).float().mean())


def _answer_word(answer: str) -> str:
    return answer.split()[-1] if answer.split() else answer


def probe_features(trainer, scenes: Sequence[Scene]):
    """({kind: [(roi feature, label)]}, {kind: [(scene soft tokens, label)]}) over the
    questions of `scenes` that name one object and have a kind."""
    module = trainer.module
    hints = module.config.hint_tokens
    roi_rows: dict[str, list] = {}
    soft_rows: dict[str, list] = {}
    was_training = module.training
    module.eval()
    with torch.no_grad():
        for scene in scenes:
            qas = [qa for qa in scene.qas if qa.kind and len(mentioned_objects(qa.question)) == 1]
            if not qas:
                continue
            soft, _, batch = trainer.adapter_rows([scene], [0] * len(qas), qas)
            _, roi = module.object_tokens(batch.select(torch.tensor([0])).to(trainer.device))
            slot = {i: n for n, i in enumerate(batch.indices[0]) if i >= 0}
            for r, qa in enumerate(qas):
                index = next(iter(mentioned_objects(qa.question)))
                label = _answer_word(qa.answer)
                soft_rows.setdefault(qa.kind, []).append(
                    (soft[r, hints:].flatten().float().cpu(), label))
                if index in slot:
                    roi_rows.setdefault(qa.kind, []).append(
                        (roi[0, slot[index]].float().cpu(), label))
    module.train(was_training)
    return roi_rows, soft_rows


def _share(rows: list) -> float:
    x = torch.stack([v for v, _ in rows])
    spread = (x - x.mean(0)).pow(2).mean().sqrt()
    return float(spread / x.pow(2).mean().sqrt().clamp_min(1e-12))


def diagnose(trainer, fit_scenes: Sequence[Scene], test_scenes: Sequence[Scene]) -> dict:
    """{'probe_roi': {kind: acc}, 'probe_soft': {kind: acc}, 'scene_share': float}: probes
    fitted on `fit_scenes`, scored on `test_scenes`."""
    fit_roi, fit_soft = probe_features(trainer, fit_scenes)
    test_roi, test_soft = probe_features(trainer, test_scenes)
    out: dict = {'probe_roi': {}, 'probe_soft': {}}
    for name, fit, test in (('probe_roi', fit_roi, test_roi), ('probe_soft', fit_soft, test_soft)):
        for kind in sorted(set(fit) & set(test)):
            out[name][kind] = round(probe_accuracy(
                torch.stack([v for v, _ in fit[kind]]), [y for _, y in fit[kind]],
                torch.stack([v for v, _ in test[kind]]), [y for _, y in test[kind]]), 3)
    every = [row for rows in test_soft.values() for row in rows]
    out['scene_share'] = round(_share(every), 4) if every else 0.0
    return out
