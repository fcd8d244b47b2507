"""Offline proof for the shared-query fusion adapter: it learns what the prompt cannot carry.

    bash scripts/with_env.sh python benchmarks/fusion_toy.py [--steps 300] [--json out.json]

Synthetic scenes (core.fusion.data.toy_scenes): 2-4 coloured shapes (4 colours by
default, --colours; big or small) with jittered detector boxes whose size does not depend
on the object's, plus sometimes a false detection. Questions: "What colour is <objN>?"
and "Is <objN> big or small?", answered "<objN> is red" / "<objN> is big". The
perception-embedded prompt holds class (shape), score and box, so colour and size are
only in the pixels.

The adapter is trained on the frozen offline default LLM (SmolLM2-135M-Instruct, CPU) with
`core.fusion.train` and the compact fusion prompt, then measured on held-out scenes
(another random seed) two ways:
- restricted choice: the answer clause whose colour/size word has the highest
  log-probability after the shared tokens ("<obj2> is"), among the colours or 2 sizes
  (chance 1/4 and 1/2 by default), prompt-only (no soft tokens) vs with the adapter;
- greedy (the run-time path): SceneReasoner.answer with and without fusion.adapter_path,
  constrained decoding on; right = the reply starts with the expected answer clause.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mr_mllm_ros.core.offline import apply_offline_env  # noqa: E402

apply_offline_env()

import torch  # noqa: E402

from mr_mllm_ros.core.config import load_config, with_changes  # noqa: E402
from mr_mllm_ros.core.fusion.data import COLOURS, SIZES, ToySpec, toy_scenes  # noqa: E402
from mr_mllm_ros.core.fusion.train import TrainConfig, Trainer  # noqa: E402
from mr_mllm_ros.core.scene import SceneReasoner  # noqa: E402
from mr_mllm_ros.core.types import Frame  # noqa: E402

TEMPLATE = 'scene_fusion_compact_v1'


def greedy_accuracy(reasoner: SceneReasoner, scenes, limit: int) -> dict:
    """Share of questions whose greedy reply starts with the expected answer clause."""
    right: dict[str, list[int]] = {}
    n = 0
    for scene in scenes:
        frame = Frame(scene.image, 0, scene.id)
        for qa in scene.qas:
            if n >= limit:
                break
            reply = reasoner.answer(frame, scene.detections, qa.question).grounded_text.raw_text
            right.setdefault(qa.kind, []).append(int(reply.strip().lower().startswith(
                qa.answer.lower())))
            n += 1
    every = [x for v in right.values() for x in v]
    out = {'accuracy': sum(every) / max(len(every), 1), 'questions': len(every)}
    out.update({f'accuracy_{k}': sum(v) / len(v) for k, v in sorted(right.items())})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=300)
    p.add_argument('--colours', default='red,green,blue,yellow',
                   help=f'comma-separated, from {",".join(COLOURS)}')
    p.add_argument('--train-scenes', type=int, default=2000)
    p.add_argument('--eval-scenes', type=int, default=100, help='held-out scenes')
    p.add_argument('--scenes-per-step', type=int, default=6)
    p.add_argument('--questions-per-scene', type=int, default=2)
    p.add_argument('--num-queries', type=int, default=8)
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--greedy', type=int, default=60,
                   help='held-out questions answered greedily through SceneReasoner')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0 = default)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--template', default=TEMPLATE,
                   help='prompt template (name or YAML path) with a {soft_tokens} field')
    p.add_argument('--out', default=str(ROOT / 'output' / 'fusion_toy'),
                   help='adapter folder (adapter.safetensors, metrics.jsonl)')
    p.add_argument('--json', help='write the results here')
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    config = load_config()
    spec = ToySpec(colours=tuple(args.colours.split(',')))
    train = toy_scenes(args.train_scenes, seed=1, spec=spec)
    held_out = toy_scenes(args.eval_scenes, seed=2, spec=spec)
    tc = TrainConfig(steps=args.steps, scenes_per_step=args.scenes_per_step,
                     questions_per_scene=args.questions_per_scene, lr=args.lr,
                     warmup_steps=min(20, args.steps // 10), eval_every=100, eval_scenes=24,
                     save_every=0, seed=args.seed, prompt_template=args.template,
                     adapter={'num_queries': args.num_queries})
    trainer = Trainer(config, tc)
    print(f'{trainer.backend.name}, adapter {trainer.adapter_config.num_queries} queries, '
          f'{sum(p.numel() for p in trainer.module.parameters()) / 1e6:.2f} M parameters; '
          f'{len(train)} training scenes, {len(held_out)} held-out scenes', flush=True)
    t0 = time.perf_counter()
    prompt_only = trainer.evaluate(held_out, with_adapter=False)
    t_eval = time.perf_counter() - t0
    print(f'prompt-only (restricted choice): {json.dumps(prompt_only)}  [{t_eval:.0f} s]',
          flush=True)
    result = trainer.run(train, args.out, eval_scenes=held_out[:24])
    adapter = trainer.evaluate(held_out, with_adapter=True)
    print(f'adapter     (restricted choice): {json.dumps(adapter)}', flush=True)

    greedy = {}
    if args.greedy:
        base = with_changes(config, {'mllm.prompt_template': args.template})
        plain = SceneReasoner(base, trainer.backend)
        fused = SceneReasoner(with_changes(base, {'fusion.adapter_path': str(Path(args.out))}),
                              trainer.backend)
        greedy = {'prompt_only': greedy_accuracy(plain, held_out, args.greedy),
                  'adapter': greedy_accuracy(fused, held_out, args.greedy)}
        print(f'greedy through SceneReasoner: {json.dumps(greedy)}', flush=True)

    total = time.perf_counter() - t_start
    out = {
        'machine': {'cpu': platform.processor() or platform.machine(),
                    'cores': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
                    'load_average_at_end': os.getloadavg()},
        'llm': trainer.backend.name, 'template': args.template, 'train': tc.__dict__,
        'adapter_parameters': result.parameters,
        'toy': {'colours': spec.colours, 'objects': [spec.min_objects, spec.max_objects],
                'false_positive_rate': spec.false_positive_rate, 'image_size': spec.image_size},
        'chance': {'colour': 1 / len(spec.colours), 'size': 1 / len(SIZES)},
        'held_out': {'scenes': len(held_out), 'prompt_only': prompt_only, 'adapter': adapter},
        'greedy': greedy,
        'training': {'steps': result.steps, 'seconds': round(result.seconds, 1),
                     'seconds_per_step': round(result.seconds_per_step, 2),
                     'first_loss': result.losses[0], 'final_loss': result.losses[-1],
                     'eval_during_training': result.eval},
        'total_seconds': round(total, 1)}
    print(f'\n{"":28s}{"colour":>8s}{"size":>8s}{"all":>8s}')
    for name, row in (('prompt-only (choice)', prompt_only), ('adapter (choice)', adapter)) + \
            tuple((f'{k} (greedy)', v) for k, v in greedy.items()):
        print(f'{name:28s}{row.get("accuracy_colour", 0):8.3f}{row.get("accuracy_size", 0):8.3f}'
              f'{row.get("accuracy", 0):8.3f}')
    print(f'chance{"":22s}{1 / len(spec.colours):8.3f}{1 / len(SIZES):8.3f}')
    print(f'training: {result.steps} steps in {result.seconds / 60:.1f} min '
          f'({result.seconds_per_step:.2f} s/step); total {total / 60:.1f} min')
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
