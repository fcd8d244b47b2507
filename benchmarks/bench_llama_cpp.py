"""llama.cpp vs transformers for the offline default SmolLM2-135M-Instruct: the same
prompts in one process, the two backends' calls interleaved (A, B, A, B, ...) so that both
see the same load on a shared machine.

    bash scripts/with_env.sh python benchmarks/bench_llama_cpp.py [--repeats N] [--json F]

Per backend: load time; RSS the process grew by when the backend loaded; decode tokens/s
(a 40-token minus an 8-token reply to the same answer prompt, greedy, n-gram guard and
constrained decoding on, as in production); time per grounded description (the grounding
plan over the detections of four sample photos, as scene_node runs it), first and
warm. transformers_llm loads the de-quantized fp32 folder (`mr-mllm models prepare`),
llama_cpp the Q4_1 GGUF it came from. Nothing asserts on time; docs/BENCHMARKS.md records
the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402

apply_offline_env()

BACKENDS = ('transformers_llm', 'llama_cpp')
SAMPLES = ('grace_hopper', 'motorcycle', 'camera', 'coffee')
QUESTION = 'What is the person doing?'
DECODE_LONG, DECODE_SHORT = 40, 8


def _rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def run(repeats: int) -> list[dict]:
    from mr_mllm_ros.core.assets.sample_images import load_sample
    from mr_mllm_ros.core.config import load_config
    from mr_mllm_ros.core.pipeline import PerceptionPipeline
    from mr_mllm_ros.core.reasoning.scene import SceneReasoner
    from mr_mllm_ros.core.types import Frame

    config = load_config()
    perception = PerceptionPipeline(config)
    scenes = []
    for k, name in enumerate(SAMPLES):
        frame = Frame(load_sample(name), k, name)
        scenes.append((frame, perception.detect(frame)))
    perception.close()
    rows = {}
    for backend in BACKENDS:
        rss, t0 = _rss_mb(), time.perf_counter()
        reasoner = SceneReasoner(load_config(overrides={'mllm.backend': backend}))
        rows[backend] = {'backend': backend, 'model': reasoner.backend.name,
                         'load_s': time.perf_counter() - t0, 'rss_load_mb': _rss_mb() - rss,
                         'reasoner': reasoner, 'tokens': 0, 'gen_s': 0.0, 'first': [],
                         'warm': [], 'descriptions': []}
    for r in rows.values():  # warm-up: one answer each
        r['reasoner'].backend.generate(r['reasoner'].prompts.answer(scenes[0][1], QUESTION))
    # Decode rate: a 40-token and an 8-token reply to the same prompt (no stop string);
    # the difference removes the prefill, which the backends' prefix caches treat
    # differently.
    for _ in range(repeats):
        for r in rows.values():
            request = r['reasoner'].prompts.answer(scenes[0][1], QUESTION)
            long, short = (r['reasoner'].backend.generate(dataclasses.replace(
                request, stop=(), max_new_tokens=n)) for n in (DECODE_LONG, DECODE_SHORT))
            r['tokens'] += long.generated_tokens - short.generated_tokens
            r['gen_s'] += (long.timings_ms['generate'] - short.timings_ms['generate']) / 1e3
    for k in range(1 + repeats):
        for frame, ds in scenes:
            for r in rows.values():
                t = time.perf_counter()
                sd = r['reasoner'].describe(frame, ds)
                (r['first'] if k == 0 else r['warm']).append(time.perf_counter() - t)
                if k == 0:
                    r['descriptions'].append(sd.text)
    out = []
    for r in rows.values():
        r['reasoner'].close()
        out.append({'backend': r['backend'], 'model': r['model'],
                    'load_s': round(r['load_s'], 2), 'rss_load_mb': round(r['rss_load_mb']),
                    'decode_tokens_per_s': round(r['tokens'] / r['gen_s'], 1),
                    'describe_first_s': round(sum(r['first']) / len(r['first']), 3),
                    'describe_warm_s': round(sum(r['warm']) / max(len(r['warm']), 1), 3),
                    'descriptions': r['descriptions']})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--json')
    ap.add_argument('--repeats', type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = run(args.repeats)
    print(f'machine: {platform.node()} {os.cpu_count()} cores, {time.strftime("%Y-%m-%d %H:%M")}'
          f', load average {os.getloadavg()[0]:.1f}, {time.perf_counter() - t0:.0f} s')
    print('| backend | load s | RSS on load MB | decode tok/s | describe first s | '
          'describe warm s |')
    print('|---|---:|---:|---:|---:|---:|')
    for r in rows:
        print(f'| {r["model"]} | {r["load_s"]} | {r["rss_load_mb"]} | '
              f'{r["decode_tokens_per_s"]} | {r["describe_first_s"]} | {r["describe_warm_s"]} |')
    for r in rows:
        print(f'{r["backend"]} descriptions: {r["descriptions"]}')
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
