"""llama.cpp vs transformers for the offline default SmolLM2-135M-Instruct, same prompts,
one run (each backend in its own child process, so peak RSS is its own).

    bash scripts/with_env.sh python benchmarks/bench_llama_cpp.py [--json out.json]

Per backend: load time; decode tokens/s (the same free answer request, greedy, n-gram
guard and constrained decoding on, as in production); time per grounded description (the
grounding plan over the detections of the sample photos, as scene_node runs it), first
call and warm; peak RSS of the process. transformers_llm loads the de-quantized fp32
folder (`mr-mllm models prepare`), llama_cpp the Q4_1 GGUF it came from.
Nothing asserts on time; docs/BENCHMARKS.md records the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mr_mllm_ros.core.offline import apply_offline_env  # noqa: E402

apply_offline_env()

BACKENDS = ('transformers_llm', 'llama_cpp')
SAMPLES = ('grace_hopper', 'motorcycle', 'camera', 'coffee')
QUESTION = 'What is the person doing?'


def measure(backend: str, repeats: int) -> dict:
    """One backend, in this process."""
    from mr_mllm_ros.core.config import load_config
    from mr_mllm_ros.core.pipeline import PerceptionPipeline
    from mr_mllm_ros.core.sample_images import load_sample
    from mr_mllm_ros.core.scene import SceneReasoner
    from mr_mllm_ros.core.types import Frame

    config = load_config(overrides={'mllm.backend': backend})
    perception = PerceptionPipeline(config)
    scenes = []
    for k, name in enumerate(SAMPLES):
        frame = Frame(load_sample(name), k, name)
        scenes.append((frame, perception.detect(frame)))
    perception.close()
    t0 = time.perf_counter()
    reasoner = SceneReasoner(config)
    load_s = time.perf_counter() - t0
    backend_obj = reasoner.backend
    # Decode rate: the same answer request, its own reply (max_new_tokens of the config).
    request = reasoner.prompts.answer(scenes[0][1], QUESTION)
    backend_obj.generate(request)  # warm-up
    gen_tokens = gen_s = 0.0
    for _ in range(repeats):
        g = backend_obj.generate(request)
        gen_tokens += g.generated_tokens
        gen_s += g.timings_ms['generate'] / 1e3
    described = []
    first = []
    for frame, ds in scenes:
        t = time.perf_counter()
        sd = reasoner.describe(frame, ds)
        first.append(time.perf_counter() - t)
        described.append(sd.text)
    warm = []
    for _ in range(repeats):
        for frame, ds in scenes:
            t = time.perf_counter()
            reasoner.describe(frame, ds)
            warm.append(time.perf_counter() - t)
    reasoner.close()
    return {'backend': backend, 'model': backend_obj.name, 'load_s': round(load_s, 2),
            'decode_tokens_per_s': round(gen_tokens / gen_s, 1) if gen_s else None,
            'describe_first_s': round(sum(first) / len(first), 3),
            'describe_warm_s': round(sum(warm) / len(warm), 3),
            'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            'descriptions': described}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--json')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--backend', choices=BACKENDS, help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    if args.backend:
        print(json.dumps(measure(args.backend, args.repeats)))
        return 0
    rows = []
    for backend in BACKENDS:
        out = subprocess.run([sys.executable, __file__, '--backend', backend,
                              '--repeats', str(args.repeats)], capture_output=True, text=True,
                             timeout=1800, env=os.environ)
        if out.returncode != 0:
            print(f'{backend}: failed: {out.stderr.strip().splitlines()[-1:]}')
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f'machine: {platform.node()} {os.cpu_count()} cores, {time.strftime("%Y-%m-%d")}')
    print('| backend | load s | decode tok/s | describe first s | describe warm s | '
          'peak RSS MB |')
    print('|---|---:|---:|---:|---:|---:|')
    for r in rows:
        print(f'| {r["model"]} | {r["load_s"]} | {r["decode_tokens_per_s"]} | '
              f'{r["describe_first_s"]} | {r["describe_warm_s"]} | {r["peak_rss_mb"]} |')
    for r in rows:
        print(f'{r["backend"]} descriptions: {r["descriptions"]}')
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
