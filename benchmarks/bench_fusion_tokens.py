"""What the image costs the LLM: K fusion soft tokens vs a VLM's own image tokens.

    bash scripts/with_env.sh python benchmarks/bench_fusion_tokens.py [--json out.json]

1. Image tokens per frame at real camera sizes (VGA, 720p, 1080p) from the real image
   processors of SmolVLM (Idefics3: resize to <= 2048 px, 512 px tiles of 64 tokens + a
   global view) and Qwen2-VL (14 px patches merged 2x2, min/max pixels of the released
   processor), built in code (no download), with mllm.image_max_side as configured (768)
   and uncapped; vs the adapter's soft tokens: H = 4 learned hint tokens + K scene tokens
   (num_queries, 8 by default) = 12.
2. LLM prefill time for the describe prompt (scene_fusion_v1, 3 objects) plus either the
   image tokens or the H + K soft tokens, with SmolLM2-135M (the language model inside
   SmolVLM-256M; real weights, CPU): the LLM side of the two ways to show it the image.
3. End to end on tiny random VLM configs (plumbing speed only): prefill of the tiny
   Idefics3 / Qwen2-VL with a real-size image vs the tiny text LLM + adapter (featurizer +
   adapter forward + prefill with K soft tokens).
Nothing asserts on time; the host is shared, so compare ratios measured in one run.
"""

from __future__ import annotations

import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'test'))  # the tests' helpers package
from measure import arguments, call_times_ms, write_json  # noqa: E402

from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402

apply_offline_env()

import torch  # noqa: E402

from mr_mllm_ros.core.config import load_config  # noqa: E402
from mr_mllm_ros.core.fusion.data import toy_scenes  # noqa: E402
from mr_mllm_ros.core.types import Box, Detection, DetectionSet  # noqa: E402

SIZES = {'VGA 640x480': (480, 640), '720p 1280x720': (720, 1280),
         '1080p 1920x1080': (1080, 1920)}


def smolvlm_tokens(h: int, w: int, max_side: int) -> int:
    """Image tokens SmolVLM-256M/500M-Instruct's processor makes for an h x w image."""
    from transformers import Idefics3ImageProcessor

    from mr_mllm_ros.core.mllm.transformers_vlm import _image_size_cap, downscale
    # SmolVLM-256M-Instruct preprocessor_config: longest_edge 2048, tiles of 512, 64 tokens
    proc = Idefics3ImageProcessor(size={'longest_edge': 2048},
                                  max_image_size={'longest_edge': 512}, do_image_splitting=True)
    pil = downscale(np.zeros((h, w, 3), np.uint8), max_side)
    out = proc(images=[pil], return_tensors='np', **_image_size_cap(proc, max_side))
    tiles = int(np.asarray(out['pixel_values']).shape[1])
    return tiles * 64


def qwen2vl_tokens(h: int, w: int, max_side: int) -> int:
    """Image tokens Qwen2-VL-Instruct's processor makes (min 56x56, max 12845056 pixels)."""
    from transformers import Qwen2VLImageProcessor

    from mr_mllm_ros.core.mllm.transformers_vlm import downscale
    proc = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=28 * 28 * 16384,
                                 patch_size=14, temporal_patch_size=2, merge_size=2)
    pil = downscale(np.zeros((h, w, 3), np.uint8), max_side)
    grid = proc(images=[pil], return_tensors='pt')['image_grid_thw'][0]
    return int(grid.prod()) // 4


def median_ms(fn, repeats: int) -> float:
    return statistics.median(call_times_ms(fn, repeats))


def detections(h: int, w: int) -> DetectionSet:
    return DetectionSet((Detection(0, 'person', 0.9, Box(0.1 * w, 0.2 * h, 0.4 * w, 0.9 * h)),
                         Detection(2, 'car', 0.8, Box(0.5 * w, 0.4 * h, 0.95 * w, 0.8 * h)),
                         Detection(16, 'dog', 0.6, Box(0.3 * w, 0.6 * h, 0.45 * w, 0.95 * h))),
                        w, h)


def llm_prefill(k: int, image_token_counts: dict, repeats: int) -> dict:
    """SmolLM2-135M prefill of the describe prompt + n extra input embeddings."""
    from mr_mllm_ros.core.mllm import create_backend
    from mr_mllm_ros.core.reasoning.prompts import PromptBuilder, load_template
    config = load_config()
    backend = create_backend(config)
    prompts = PromptBuilder(load_template('scene_fusion_v1'), config.mllm,
                            backend.count_tokens, False)
    request = prompts.describe(detections(480, 640), soft_tokens=torch.zeros(k, 576))
    text = backend.prompt_text(request)
    base = len(backend.encode(text.replace('<soft_tokens>', '')))
    emb = backend.model.get_input_embeddings()
    out = {'prompt_tokens_without_image': base}

    def prefill(n: int):
        ids = torch.tensor([backend.encode(text.replace('<soft_tokens>', '')) + [0] * n])
        x = emb(ids)

        def run():
            with torch.inference_mode():
                backend.model(inputs_embeds=x, use_cache=True)
        return median_ms(run, repeats)
    out['soft'] = {'tokens': k, 'prefill_ms': prefill(k)}
    for name, n in image_token_counts.items():
        out[name] = {'tokens': n, 'prefill_ms': prefill(n)}
    backend.close()
    return out


def tiny_end_to_end(k: int, repeats: int) -> dict:
    """Tiny random configs: VLM prefill with its own image tokens vs text LLM + adapter."""
    from helpers import make_tiny_models as maker

    from mr_mllm_ros.core.fusion import (
        AdapterConfig,
        FusionRuntime,
        SharedQueryFusion,
        save_adapter,
    )
    from mr_mllm_ros.core.mllm import create_backend
    from mr_mllm_ros.core.mllm.backend import MllmRequest
    out = {}
    image = toy_scenes(1, 0)[0].image
    frame = np.ascontiguousarray(np.resize(image, (480, 640, 3)))
    with tempfile.TemporaryDirectory() as tmp:
        paths = maker.make_all(Path(tmp), ('idefics3', 'qwen2_vl', 'llm'))
        for family in ('idefics3', 'qwen2_vl'):
            backend = create_backend(load_config(overrides={
                'mllm.backend': 'transformers_vlm', 'mllm.model': str(paths[family]),
                'mllm.image_max_side': 0}))
            req = MllmRequest(prefix=(), user='Describe.', image=frame, max_new_tokens=1)
            inputs = backend.model_inputs([req])
            n = int(inputs['input_ids'].shape[1])

            def run():
                with torch.inference_mode():
                    backend.model(**backend.model_inputs([req]))
            out[family] = {'input_tokens': n, 'prefill_ms': median_ms(run, repeats)}
            backend.close()
        backend = create_backend(load_config(overrides={
            'mllm.backend': 'transformers_llm', 'mllm.model': str(paths['llm'])}))
        save_adapter(SharedQueryFusion(AdapterConfig(llm_hidden=backend.hidden_size,
                                                     num_queries=k)), Path(tmp) / 'adapter')
        runtime = FusionRuntime(Path(tmp) / 'adapter', backend)
        ds = detections(480, 640)
        n = runtime.config.num_soft_tokens                     # H hint + K scene tokens
        ids = torch.tensor([backend.encode('Describe.') + [0] * n])

        def run_adapter():
            soft = runtime.soft_tokens(frame, ds)
            x = backend.model.get_input_embeddings()(ids).clone()
            x[0, -n:] = soft
            with torch.inference_mode():
                backend.model(inputs_embeds=x)
        out['llm + adapter'] = {'input_tokens': int(ids.shape[1]),
                                'prefill_ms': median_ms(run_adapter, repeats),
                                'adapter_ms': median_ms(lambda: runtime.soft_tokens(frame, ds),
                                                        repeats)}
        backend.close()
    return out


def main() -> int:
    p = arguments(__doc__)
    p.add_argument('--num-queries', type=int, default=8, help='K soft tokens')
    p.add_argument('--repeats', type=int, default=5)
    args = p.parse_args()
    from mr_mllm_ros.core.fusion import AdapterConfig
    k = args.num_queries
    # What the prompt really holds: the H learned hint tokens + the K scene tokens.
    n = AdapterConfig(llm_hidden=576, num_queries=k).num_soft_tokens
    torch.manual_seed(0)
    result = {'machine': f'{platform.machine()} {platform.processor() or ""}'.strip(),
              'torch_threads': torch.get_num_threads(), 'K': k, 'soft_tokens': n, 'tokens': {}}
    print(f'K = {k} scene tokens + {n - k} hint tokens = {n} soft tokens per frame\n')
    print(f'{"image":18s} {"max_side":>8s} {"SmolVLM":>8s} {"ratio":>6s} {"Qwen2-VL":>8s} '
          f'{"ratio":>6s}')
    counts = {}
    for name, (h, w) in SIZES.items():
        for max_side in (768, 0):
            s, q = smolvlm_tokens(h, w, max_side), qwen2vl_tokens(h, w, max_side)
            result['tokens'][f'{name} max_side {max_side}'] = {'smolvlm': s, 'qwen2_vl': q}
            print(f'{name:18s} {max_side or "none":>8} {s:8d} {s / n:5.0f}x {q:8d} {q / n:5.0f}x')
            if name.startswith('VGA'):
                counts[f'smolvlm VGA max_side {max_side}'] = s
                counts[f'qwen2_vl VGA max_side {max_side}'] = q
    print('\nSmolLM2-135M prefill (describe prompt + image representation), median of '
          f'{args.repeats}:')
    pre = llm_prefill(n, counts, args.repeats)
    result['prefill'] = pre
    print(f'  prompt without image: {pre["prompt_tokens_without_image"]} tokens')
    soft_ms = pre['soft']['prefill_ms']
    for name, row in pre.items():
        if isinstance(row, dict):
            print(f'  {name:28s} +{row["tokens"]:5d} tokens  {row["prefill_ms"]:8.1f} ms  '
                  f'({row["prefill_ms"] / soft_ms:.1f}x the soft-token prefill)')
    print('\nTiny random configs (plumbing speed), VGA frame, median:')
    tiny = tiny_end_to_end(k, args.repeats)
    result['tiny'] = tiny
    for name, row in tiny.items():
        extra = f', adapter {row["adapter_ms"]:.1f} ms' if 'adapter_ms' in row else ''
        print(f'  {name:14s} {row["input_tokens"]:5d} input tokens  {row["prefill_ms"]:7.1f} ms'
              f'{extra}')
    write_json(args.json, result)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
