"""Does the fusion adapter's re-scoring head help the MLLM -> perception check?

    bash scripts/with_env.sh python benchmarks/fusion_rescore.py [--steps 60] [--json out.json]
    bash scripts/with_env.sh python benchmarks/fusion_rescore.py --adapter DIR   # no training

The toy scenes of benchmarks/fusion_toy.py (coloured shapes, jittered detector boxes)
hold a false detection on empty background in ~30 % of the scenes (`correct: false`,
score 0.3-0.6; right boxes score 0.5-0.95). An adapter is trained on the frozen offline
default LLM (SmolLM2-135M-Instruct) with the usual recipe (LM loss + the head's BCE), then
on held-out scenes every box goes through Reinforcer's check (uncertain band widened to
all scores) three ways: the MLLM's P(yes) alone (fusion_weight 0, what a text LLM can say
from the box list), the head alone (fusion_weight 1), and the default blend (the
packaged reinforce.fusion_weight). Reported: ROC AUC of right vs wrong boxes for each (and
for the detector score), and how many wrong / right boxes the packaged reject threshold
drops.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from measure import arguments, write_json  # noqa: E402

from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402

apply_offline_env()

from mr_mllm_ros.core.config import load_config, with_changes  # noqa: E402
from mr_mllm_ros.core.fusion.data import ToySpec, toy_scenes  # noqa: E402
from mr_mllm_ros.core.fusion.train import TrainConfig, Trainer  # noqa: E402
from mr_mllm_ros.core.mllm import create_backend  # noqa: E402
from mr_mllm_ros.core.reasoning.reinforce import Reinforcer  # noqa: E402
from mr_mllm_ros.core.reasoning.scene import SceneReasoner  # noqa: E402
from mr_mllm_ros.core.types import Frame  # noqa: E402

TEMPLATE = 'scene_fusion_compact_v1'


def roc_auc(right: list[float], wrong: list[float]) -> float:
    """P(a random right box scores above a random wrong one); ties count half."""
    if not right or not wrong:
        return float('nan')
    wins = sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def print_table(rows: dict[str, dict]) -> None:
    print(f'\n{"":28s}{"AUC":>7s}{"wrong dropped":>15s}{"right dropped":>15s}')
    for name, row in rows.items():
        print(f'{name:28s}{row["auc"]:7.3f}'
              f'{row.get("wrong_dropped", "-")!s:>9s}/{row["wrong"]:<5d}'
              f'{row.get("right_dropped", "-")!s:>9s}/{row["right"]:<5d}')


def main() -> int:
    p = arguments(__doc__)
    p.add_argument('--steps', type=int, default=60)
    p.add_argument('--adapter', help='a trained toy adapter folder (skips training)')
    p.add_argument('--train-scenes', type=int, default=2000)
    p.add_argument('--eval-scenes', type=int, default=100, help='held-out scenes')
    p.add_argument('--out', default=str(ROOT / 'output' / 'fusion_rescore'),
                   help='adapter folder when training')
    args = p.parse_args()
    t_start = time.perf_counter()
    config = with_changes(load_config(), {'mllm.prompt_template': TEMPLATE})
    spec = ToySpec(colours=('red', 'green', 'blue', 'yellow'))
    held_out = toy_scenes(args.eval_scenes, seed=2, spec=spec)
    backend = create_backend(config)
    training = None
    adapter = args.adapter
    if adapter is None:
        # fusion_toy.py's recipe, shorter
        tc = TrainConfig(steps=args.steps, scenes_per_step=6, questions_per_scene=2, lr=2e-3,
                         warmup_steps=min(20, args.steps // 10), eval_every=0, eval_scenes=0,
                         save_every=0, prompt_template=TEMPLATE)
        result = Trainer(config, tc, backend).run(toy_scenes(args.train_scenes, seed=1,
                                                             spec=spec), args.out,
                                                  eval_scenes=[])
        training = {'steps': result.steps, 'seconds': round(result.seconds, 1),
                    'final_loss': result.losses[-1]}
        adapter = args.out
        print(f'trained {result.steps} steps in {result.seconds / 60:.1f} min', flush=True)
    base_weight = config.reinforce.fusion_weight
    wide = {'reinforce.verify_min_score': 0.0, 'reinforce.verify_max_score': 1.0,
            'reinforce.max_checks': 100, 'fusion.adapter_path': str(adapter)}
    reasoner = SceneReasoner(with_changes(config, wide), backend)
    blend = f'blend (fusion_weight {base_weight:g})'
    ways = ('detector score', 'mllm alone', 'head alone', blend)
    scores: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in ways}
    mllm_only = Reinforcer(with_changes(config, {**wide, 'reinforce.fusion_weight': 0.0}),
                           backend, reasoner.prompts, rescorer=reasoner.rescore)
    blended = Reinforcer(reasoner.config, backend, reasoner.prompts, rescorer=reasoner.rescore)
    t0 = time.perf_counter()
    for scene in held_out:
        frame = Frame(scene.image, 0, scene.id)
        ds = scene.detections
        per_way = {'detector score': {i: d.score for i, d in enumerate(ds)},
                   'mllm alone': mllm_only.refine(frame, ds).checked,
                   'head alone': reasoner.rescore(frame, ds),
                   blend: blended.refine(frame, ds).checked}
        for name, checked in per_way.items():
            for i, right in enumerate(scene.correct):
                if i in checked:
                    scores[name][0 if right else 1].append(checked[i])
    reject = config.reinforce.reject_probability
    rows = {}
    for name, (right, wrong) in scores.items():
        rows[name] = {'auc': round(roc_auc(right, wrong), 3), 'right': len(right),
                      'wrong': len(wrong)}
        if name != 'detector score':
            rows[name]['wrong_dropped'] = sum(w < reject for w in wrong)
            rows[name]['right_dropped'] = sum(r < reject for r in right)
    out = {'machine': {'cpu': platform.processor() or platform.machine(),
                       'cores': os.cpu_count(), 'load_average_at_end': os.getloadavg()},
           'llm': backend.name, 'adapter': str(adapter), 'training': training,
           'held_out_scenes': len(held_out), 'reject_probability': reject, 'results': rows,
           'check_seconds': round(time.perf_counter() - t0, 1),
           'total_seconds': round(time.perf_counter() - t_start, 1)}
    print_table(rows)
    write_json(args.json, out)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
