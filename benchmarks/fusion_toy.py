"""Offline proof for the shared-query fusion adapter: it learns what the prompt cannot carry,
and it does so for every training seed and colour set, not in one lucky run.

    bash scripts/with_env.sh python benchmarks/fusion_toy.py [--steps 150] [--json out.json]
    bash scripts/with_env.sh python benchmarks/fusion_toy.py --seeds 5 \\
        --colour-sets 'red,green,blue,yellow;red,green,blue,purple' --diagnose

Synthetic scenes (core.fusion.data.toy_scenes): 2-4 coloured shapes (4 colours by
default; big or small) with jittered detector boxes whose size does not depend on the
object's, plus sometimes a false detection. Questions: "What colour is <objN>?" and
"Is <objN> big or small?", answered "<objN> is red" / "<objN> is big". The
perception-embedded prompt holds class (shape), score and box, so colour and size are
only in the pixels.

Three disjoint scene sets, each from its own seed: training (--data-seed), validation
(--val-seed: scored during training; with the recipe's keep_best the adapter kept is the
one with the lowest validation answer NLL) and held-out (--held-out-seed: scored once, at
the end). The adapter is trained on the frozen offline default LLM (SmolLM2-135M-Instruct,
CPU) with `core.fusion.train` and the compact fusion prompt, once per training seed
(--seed, --seed + 1, ... : --seeds N) and colour set, then measured on the held-out scenes:
- restricted choice: the answer clause whose colour/size word has the highest
  log-probability after the shared tokens ("<obj2> is"), among the colours or 2 sizes
  (chance 1/4 and 1/2 by default), prompt-only (no soft tokens) vs with the adapter;
- greedy (the run-time path, single runs only by default): SceneReasoner.answer with and
  without fusion.adapter_path, constrained decoding on; right = the reply starts with the
  expected answer clause;
- with --diagnose, linear probes (core.fusion.diagnostics) of colour and size on the RoI
  features and on the soft tokens: a broken feature vs a broken optimisation.
The summary gives each colour set's mean, spread, minimum and maximum held-out accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402

apply_offline_env()

import torch  # noqa: E402

from mr_mllm_ros.core.config import load_config, with_changes  # noqa: E402
from mr_mllm_ros.core.fusion.data import COLOURS, SIZES, ToySpec, toy_scenes  # noqa: E402
from mr_mllm_ros.core.fusion.diagnostics import diagnose  # noqa: E402
from mr_mllm_ros.core.fusion.train import TrainConfig, Trainer  # noqa: E402
from mr_mllm_ros.core.mllm import create_backend  # noqa: E402
from mr_mllm_ros.core.reasoning.scene import SceneReasoner  # noqa: E402
from mr_mllm_ros.core.types import Frame  # noqa: E402

TEMPLATE = 'scene_fusion_compact_v1'
TARGET = 0.9


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


def spread(values: list[float]) -> dict:
    return {'mean': round(statistics.fmean(values), 4),
            'std': round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
            'min': round(min(values), 4), 'max': round(max(values), 4), 'runs': len(values)}


def train_config(args, seed: int) -> TrainConfig:
    changes = {'steps': args.steps, 'scenes_per_step': args.scenes_per_step,
               'questions_per_scene': args.questions_per_scene, 'lr': args.lr,
               'warmup_steps': min(20, args.steps // 10), 'eval_every': args.eval_every,
               'eval_scenes': args.val_scenes, 'save_every': 0, 'seed': seed,
               'prompt_template': args.template,
               'adapter': {'num_queries': args.num_queries, **json.loads(args.adapter)}}
    if args.keep_best is not None:
        changes['keep_best'] = args.keep_best
    return TrainConfig(**changes)


def one_run(args, config, backend, spec: ToySpec, seed: int, data: dict, out: Path) -> dict:
    tc = train_config(args, seed)
    trainer = Trainer(config, tc, backend)
    print(f'--- colours {",".join(spec.colours)}, training seed {seed}: {tc.steps} steps, '
          f'{sum(p.numel() for p in trainer.module.parameters()) / 1e6:.2f} M parameters',
          flush=True)
    result = trainer.run(data['train'], out, eval_scenes=data['val'])
    adapter = trainer.evaluate(data['held_out'], with_adapter=True)
    print(f'adapter     (restricted choice): {json.dumps(adapter)}', flush=True)
    run = {'colours': spec.colours, 'seed': seed, 'held_out': adapter,
           'kept_step': result.kept_step,
           'training': {'steps': result.steps, 'seconds': round(result.seconds, 1),
                        'seconds_per_step': round(result.seconds_per_step, 2),
                        'first_loss': result.losses[0], 'final_loss': result.losses[-1],
                        'eval_during_training': result.eval}}
    if args.diagnose:
        run['diagnostics'] = diagnose(trainer, data['train'][:args.probe_scenes],
                                      data['held_out'])
        print(f'diagnostics: {json.dumps(run["diagnostics"])}', flush=True)
    if args.greedy:
        base = with_changes(config, {'mllm.prompt_template': args.template})
        plain = SceneReasoner(base, backend)
        fused = SceneReasoner(with_changes(base, {'fusion.adapter_path': str(out)}), backend)
        run['greedy'] = {'prompt_only': greedy_accuracy(plain, data['held_out'], args.greedy),
                         'adapter': greedy_accuracy(fused, data['held_out'], args.greedy)}
        print(f'greedy through SceneReasoner: {json.dumps(run["greedy"])}', flush=True)
    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=150)
    p.add_argument('--colours', default='red,green,blue,yellow',
                   help=f'one colour set, comma-separated, from {",".join(COLOURS)}')
    p.add_argument('--colour-sets', help='several colour sets separated by ";" '
                   '(overrides --colours)')
    p.add_argument('--seeds', type=int, default=1,
                   help='training seeds per colour set: --seed, --seed + 1, ...')
    p.add_argument('--seed', type=int, default=0, help='first training seed (adapter init, '
                   'batch order)')
    p.add_argument('--data-seed', type=int, default=1, help='seed of the training scenes')
    p.add_argument('--val-seed', type=int, default=3,
                   help='seed of the validation scenes scored during training')
    p.add_argument('--held-out-seed', type=int, default=2, help='seed of the held-out scenes')
    p.add_argument('--train-scenes', type=int, default=2000)
    p.add_argument('--val-scenes', type=int, default=24)
    p.add_argument('--eval-scenes', type=int, default=100, help='held-out scenes')
    p.add_argument('--eval-every', type=int, default=50, help='validation period (steps)')
    p.add_argument('--scenes-per-step', type=int, default=6)
    p.add_argument('--questions-per-scene', type=int, default=2)
    p.add_argument('--num-queries', type=int, default=8)
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--adapter', default='{}', metavar='JSON',
                   help='AdapterConfig fields to change, e.g. \'{"center_scene": false}\'')
    p.add_argument('--keep-best', dest='keep_best', action='store_true', default=None,
                   help='keep the adapter with the lowest validation NLL (recipe default: '
                   'config/fusion.yaml train.keep_best)')
    p.add_argument('--keep-last', dest='keep_best', action='store_false')
    p.add_argument('--greedy', type=int, default=None,
                   help='held-out questions answered greedily through SceneReasoner '
                   '(default 60 for a single run, 0 for several)')
    p.add_argument('--diagnose', action='store_true',
                   help='linear probes of colour and size on the RoI features and soft tokens')
    p.add_argument('--probe-scenes', type=int, default=150,
                   help='training scenes the probes are fitted on')
    p.add_argument('--threads', type=int, default=0, help='torch threads (0 = default)')
    p.add_argument('--template', default=TEMPLATE,
                   help='prompt template (name or YAML path) with a {soft_tokens} field')
    p.add_argument('--out', default=str(ROOT / 'output' / 'fusion_toy'),
                   help='adapter folder (adapter.safetensors, metrics.jsonl); one sub-folder '
                   'per run when there are several')
    p.add_argument('--json', help='write the results here')
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', datefmt='%H:%M:%S')
    if args.threads:
        torch.set_num_threads(args.threads)
    sets = [tuple(s.split(',')) for s in (args.colour_sets or args.colours).split(';')]
    unknown = sorted({c for s in sets for c in s} - set(COLOURS))
    if unknown:
        p.error(f'unknown colours {unknown}; known: {", ".join(COLOURS)}')
    seeds = [args.seed + i for i in range(args.seeds)]
    several = len(sets) * len(seeds) > 1
    if args.greedy is None:
        args.greedy = 0 if several else 60
    t_start = time.perf_counter()
    config = load_config()
    backend = create_backend(config)
    runs, prompt_only = [], {}
    for colours in sets:
        spec = ToySpec(colours=colours)
        data = {'train': toy_scenes(args.train_scenes, seed=args.data_seed, spec=spec),
                'val': toy_scenes(args.val_scenes, seed=args.val_seed, spec=spec),
                'held_out': toy_scenes(args.eval_scenes, seed=args.held_out_seed, spec=spec)}
        key = ','.join(colours)
        t0 = time.perf_counter()
        prompt_only[key] = Trainer(config, train_config(args, seeds[0]), backend).evaluate(
            data['held_out'], with_adapter=False)
        print(f'colours {key}: prompt-only (restricted choice): {json.dumps(prompt_only[key])}'
              f'  [{time.perf_counter() - t0:.0f} s]', flush=True)
        for seed in seeds:
            out = Path(args.out) / f'{"-".join(colours)}_seed{seed}' if several \
                else Path(args.out)
            runs.append(one_run(args, config, backend, spec, seed, data, out))

    summary = {}
    for key in prompt_only:
        mine = [r for r in runs if ','.join(r['colours']) == key]
        summary[key] = {m: spread([r['held_out'][f'accuracy{m}'] for r in mine])
                        for m in ('', '_colour', '_size')}
        summary[key]['at_target'] = sum(r['held_out']['accuracy'] >= TARGET for r in mine)
    every = [r['held_out']['accuracy'] for r in runs]
    summary['all'] = {'': spread(every), 'at_target': sum(a >= TARGET for a in every)}
    total = time.perf_counter() - t_start

    print(f'\n{"colours":24s}{"seed":>6s}{"colour":>8s}{"size":>8s}{"all":>8s}{"kept":>6s}'
          f'{"min":>6s}' + ('   probes roi/soft colour, size; scene share' if args.diagnose
                             else ''))
    for key, row in prompt_only.items():
        print(f'{key:24s}{"-":>6s}{row["accuracy_colour"]:8.3f}{row["accuracy_size"]:8.3f}'
              f'{row["accuracy"]:8.3f}   (prompt-only)')
    for r in runs:
        h = r['held_out']
        line = (f'{",".join(r["colours"]):24s}{r["seed"]:6d}{h["accuracy_colour"]:8.3f}'
                f'{h["accuracy_size"]:8.3f}{h["accuracy"]:8.3f}{r["kept_step"]:6d}'
                f'{r["training"]["seconds"] / 60:6.1f}')
        d = r.get('diagnostics')
        if d:
            roi, soft = d['probe_roi'], d['probe_soft']
            line += (f'   {roi.get("colour", 0):.2f}/{soft.get("colour", 0):.2f}'
                     f', {roi.get("size", 0):.2f}/{soft.get("size", 0):.2f}'
                     f'; {d["scene_share"]:.3f}')
        print(line)
    for key, s in summary.items():
        a = s['']
        print(f'{key:24s} all: mean {a["mean"]:.3f} +- {a["std"]:.3f}, min {a["min"]:.3f}, '
              f'max {a["max"]:.3f}; {s["at_target"]}/{a["runs"]} runs >= {TARGET}')
    print(f'total {total / 60:.1f} min')
    if args.json:
        out = {'machine': {'cpu': platform.processor() or platform.machine(),
                           'cores': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
                           'load_average_at_end': os.getloadavg()},
               'llm': backend.name, 'template': args.template,
               'train': train_config(args, args.seed).__dict__,
               'seeds': {'training': seeds, 'data': args.data_seed, 'validation': args.val_seed,
                         'held_out': args.held_out_seed},
               'scenes': {'train': args.train_scenes, 'validation': args.val_scenes,
                          'held_out': args.eval_scenes},
               'toy': {'colour_sets': sets, 'objects': [ToySpec.min_objects, ToySpec.max_objects],
                       'false_positive_rate': ToySpec.false_positive_rate},
               'chance': {'size': 1 / len(SIZES)},
               'prompt_only': prompt_only, 'runs': runs, 'summary': summary,
               'total_seconds': round(total, 1)}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
