"""MLLM core costs on this machine (CPU).

    bash scripts/with_env.sh python benchmarks/bench_mllm.py [--json out.json]

1. Prompt tokens per description vs number of detections (SmolLM2 tokenizer; the
   object block is capped by mllm.object_token_budget / max_objects).
2. Tokens/s per backend: transformers_llm with SmolLM2-135M (real weights), and the tiny
   random VLM families (plumbing speed only).
3. Prefix KV reuse: time per description with reuse vs recompute, same frames.
4. Constrained decoding overhead per token: the same forced number of new tokens with
   and without the reference processor.
Numbers are ratios measured in one run where compared; nothing asserts on time.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'test'))
from measure import arguments, write_json  # noqa: E402

from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402

apply_offline_env()

import torch  # noqa: E402

from mr_mllm_ros.core.assets.sample_images import load_sample  # noqa: E402
from mr_mllm_ros.core.config import load_config, with_changes  # noqa: E402
from mr_mllm_ros.core.pipeline import PerceptionPipeline  # noqa: E402
from mr_mllm_ros.core.reasoning.scene import SceneReasoner  # noqa: E402
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame  # noqa: E402

CLASSES = ['person', 'car', 'dog', 'bicycle', 'chair', 'bottle', 'truck', 'tie']


def synthetic(n: int, rng) -> DetectionSet:
    dets = []
    for i in range(n):
        x, y = rng.uniform(0, 560), rng.uniform(0, 400)
        dets.append(Detection(i % len(CLASSES), CLASSES[i % len(CLASSES)],
                              float(rng.uniform(0.25, 0.99)), Box(x, y, x + 80, y + 80)))
    dets.sort(key=lambda d: -d.score)
    return DetectionSet(tuple(dets), 640, 480, 1, 'cam', 'synthetic')


def prompt_tokens(reasoner: SceneReasoner) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(0)
    rows = []
    for n in (0, 1, 2, 5, 10, 20, 50):
        req = reasoner.prompts.describe(synthetic(n, rng))
        total = reasoner.backend.count_tokens(reasoner.backend.prompt_text(req))
        rows.append((n, len(req.extra['object_indices']), total))
    return rows


def timed_describe(reasoner, frames, repeats=1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeats):
        for frame, ds in frames:
            reasoner.describe(frame, ds)
    return (time.perf_counter() - t0) / (repeats * len(frames))


def time_to_first_token(reasoner, frames, repeats=3) -> float:
    """Prefill cost: a description request cut to one new token."""
    t = 0.0
    for _ in range(repeats):
        for frame, ds in frames:
            req = reasoner.prompts.describe(ds)
            req = type(req)(**{**req.__dict__, 'max_new_tokens': 1})
            t0 = time.perf_counter()
            reasoner.backend.generate(req)
            t += time.perf_counter() - t0
    return t / (repeats * len(frames))


def tokens_per_s(backend, reasoner, frames, max_new=32) -> float:
    """Greedy generation of exactly max_new tokens (no early stop), decode rate."""
    tok = 0
    t = 0.0
    for frame, ds in frames:
        req = reasoner.prompts.describe(ds)
        req = type(req)(**{**req.__dict__, 'max_new_tokens': max_new, 'stop': (),
                           'allowed_indices': None})
        t0 = time.perf_counter()
        g = backend.generate(req)
        t += time.perf_counter() - t0
        tok += g.generated_tokens
    return tok / t


def constrained_overhead(backend, reasoner, frames, max_new=40) -> tuple[float, float]:
    """Seconds per generated token without and with the reference processor, forcing the
    same length (min_new_tokens) so only the processor differs."""
    from transformers import LogitsProcessorList

    from mr_mllm_ros.core.reasoning.grounding import ObjectReferenceLogitsProcessor
    model, tokenizer = backend.model, backend.tokenizer
    results = []
    for constrained in (False, True, False, True):
        t = 0.0
        for frame, ds in frames:
            req = reasoner.prompts.describe(ds)
            ids = torch.tensor([tokenizer(backend.prompt_text(req),
                                          add_special_tokens=False)['input_ids']])
            kw = dict(max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False,
                      temperature=None, top_p=None, top_k=None,
                      pad_token_id=tokenizer.eos_token_id)
            if constrained:
                kw['logits_processor'] = LogitsProcessorList([ObjectReferenceLogitsProcessor(
                    tokenizer, req.allowed_indices, ids.shape[1], req.answer_prefix)])
            t0 = time.perf_counter()
            with torch.inference_mode():
                model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
            t += time.perf_counter() - t0
        results.append(t / (len(frames) * max_new))
    # interleaved twice; report the better of each (the machine is shared)
    return min(results[0], results[2]), min(results[1], results[3])


def tiny_vlm_rates() -> dict[str, float]:
    from helpers.make_tiny_models import VLM_FAMILIES, make_tiny_model  # test fixture builders
    rates = {}
    rgb = load_sample('grace_hopper')
    ds = synthetic(3, np.random.default_rng(1))
    with tempfile.TemporaryDirectory() as tmp:
        for family in VLM_FAMILIES:
            path = make_tiny_model(family, Path(tmp) / family)
            cfg = load_config(overrides={'mllm.backend': 'transformers_vlm',
                                         'mllm.model': str(path)})
            reasoner = SceneReasoner(cfg)
            frames = [(Frame(rgb, 1, 'c'), ds)] * 3
            rates[family] = tokens_per_s(reasoner.backend, reasoner, frames, max_new=16)
            reasoner.close()
    return rates


def main() -> int:
    ap = arguments(__doc__)
    ap.add_argument('--skip-vlm', action='store_true')
    args = ap.parse_args()
    out: dict = {'machine': f'{platform.machine()}, {os.cpu_count()} CPUs, torch '
                            f'{torch.__version__}, threads {torch.get_num_threads()}'}
    print(out['machine'])
    config = load_config()
    reasoner = SceneReasoner(config)
    backend = reasoner.backend
    perception = PerceptionPipeline(config)
    frames = []
    for name in ('motorcycle', 'camera', 'grace_hopper', 'coffee'):
        f = Frame(load_sample(name), 1, name)
        frames.append((f, perception.detect(f)))

    rows = prompt_tokens(reasoner)
    out['prompt_tokens'] = rows
    print('\n1. prompt tokens vs detections (SmolLM2 tokenizer, describe task)')
    print('   detections  in prompt  prompt tokens')
    for n, used, total in rows:
        print(f'   {n:10d} {used:10d} {total:14d}')

    rate = tokens_per_s(backend, reasoner, frames)
    out['smollm2_tokens_per_s'] = rate
    print(f'\n2. decode rate, transformers_llm SmolLM2-135M (real weights): {rate:.1f} tok/s')
    if not args.skip_vlm:
        for family, r in tiny_vlm_rates().items():
            out[f'tiny_{family}_tokens_per_s'] = r
            print(f'   transformers_vlm tiny random {family:12s}: {r:7.1f} tok/s (plumbing)')

    timed_describe(reasoner, frames)  # warm the prefix cache and the token tables
    reuse = timed_describe(reasoner, frames, repeats=2)
    ttft_reuse = time_to_first_token(reasoner, frames)
    reasoner.backend.config = with_changes(config, {'mllm.kv_reuse': False})
    recompute = timed_describe(reasoner, frames, repeats=2)
    ttft_recompute = time_to_first_token(reasoner, frames)
    reasoner.backend.config = config
    out['kv'] = {'reuse_s': reuse, 'recompute_s': recompute, 'speedup': recompute / reuse,
                 'ttft_reuse_s': ttft_reuse, 'ttft_recompute_s': ttft_recompute,
                 'ttft_speedup': ttft_recompute / ttft_reuse}
    print(f'\n3. prefix KV reuse vs recompute, same frames:\n'
          f'   whole description {reuse:.2f} s vs {recompute:.2f} s per frame: '
          f'{recompute / reuse:.2f}x\n'
          f'   prefill (time to first token) {ttft_reuse * 1e3:.0f} ms vs '
          f'{ttft_recompute * 1e3:.0f} ms: {ttft_recompute / ttft_reuse:.2f}x')

    free, constrained = constrained_overhead(backend, reasoner, frames)
    out['constrained'] = {'free_ms_per_token': free * 1e3,
                          'constrained_ms_per_token': constrained * 1e3,
                          'overhead': constrained / free - 1}
    print(f'\n4. per generated token: free {free * 1e3:.1f} ms, constrained '
          f'{constrained * 1e3:.1f} ms: overhead {(constrained / free - 1) * 100:+.1f} %')
    write_json(args.json, out)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
