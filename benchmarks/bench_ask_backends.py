"""Time to first token and whole-answer latency of a visual question, per MLLM backend,
in-process (the path scene_node's MLLM thread runs: SceneReasoner.answer with a
TokenStream; no ROS).

    bash scripts/with_env.sh python benchmarks/bench_ask_backends.py [--runs 5]
        [--backends transformers_llm,llama_cpp,openai,template] [--json out.json]

The frame is grace_hopper with the offline default detector's detections; the question
is answered by the model's own words ("What is the person doing?") and, for comparison,
by the grounding plan ("How many people are there?": the model words only connectors).
Time to first token = from the call to the first readable answer text; "stop" = from a
cancel issued after the first text to the call's end (GenerationCancelled).
transformers_llm and llama_cpp run the offline default SmolLM2-135M (llama_cpp only when
llama-cpp-python is installed); openai talks to the local stub server
(test/helpers/openai_stub_server.py) streaming one word every --stub-token-s seconds, so
its numbers are the client's own overhead over a server of that speed; template has no
model. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'test'))

from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402

apply_offline_env()

from mr_mllm_ros.core.assets.sample_images import load_sample  # noqa: E402
from mr_mllm_ros.core.config import load_config  # noqa: E402
from mr_mllm_ros.core.mllm.streaming import GenerationCancelled  # noqa: E402
from mr_mllm_ros.core.pipeline import PerceptionPipeline  # noqa: E402
from mr_mllm_ros.core.reasoning.scene import SceneReasoner  # noqa: E402
from mr_mllm_ros.core.reasoning.vqa import AnswerProgress  # noqa: E402
from mr_mllm_ros.core.runtime.cpu_threads import apply_cpu_threads, node_threads  # noqa: E402
from mr_mllm_ros.core.types import Frame  # noqa: E402

QUESTIONS = {'free': 'What is the person doing?', 'planned': 'How many people are there?'}
STUB_REPLY = ('The person in the photo is standing in front of the camera wearing a dark '
              'uniform with a tie, looking straight ahead.')


def ask_once(reasoner, frame, ds, question, cancel_after_text=False):
    """(seconds to the first text or None, seconds to the end, cancel->end or None)."""
    t0 = time.perf_counter()
    progress = AnswerProgress(clock=time.perf_counter)
    stream = progress.stream()
    cancel_at = []
    if cancel_after_text:
        def on_change():
            if progress.first_text_s is not None and not cancel_at:
                cancel_at.append(time.perf_counter())
                threading.Thread(target=stream.cancel).start()
        progress.on_change = on_change
    try:
        reasoner.answer(frame, ds, question, stream)
    except GenerationCancelled:
        pass
    end = time.perf_counter()
    first = progress.first_text_s
    return (first - t0 if first is not None else None, end - t0,
            end - cancel_at[0] if cancel_at else None)


def p50(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def measure(name, reasoner, frame, ds, runs):
    ask_once(reasoner, frame, ds, QUESTIONS['free'])  # warm-up (first-call costs)
    row = {'backend': name, 'model': reasoner.model_name}
    for kind, question in QUESTIONS.items():
        samples = [ask_once(reasoner, frame, ds, question) for _ in range(runs)]
        row[f'{kind}_ttft_s'] = p50(s[0] for s in samples)
        row[f'{kind}_total_s'] = p50(s[1] for s in samples)
    stops = [ask_once(reasoner, frame, ds, QUESTIONS['free'], True)[2] for _ in range(runs)]
    row['stop_after_cancel_s'] = p50(stops)
    row['stop_after_cancel_max_s'] = round(max(s for s in stops if s is not None), 3) \
        if any(s is not None for s in stops) else None
    print(json.dumps(row), flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--backends', default='transformers_llm,llama_cpp,openai,template')
    ap.add_argument('--stub-token-s', type=float, default=0.02)
    ap.add_argument('--json')
    args = ap.parse_args()
    base = load_config()
    # scene_node's thread budget (scene.threads; 0 = half the CPUs): a 2-thread torch pool
    # on 2 shared cores decodes several times slower than one thread
    n_threads = node_threads(base.scene.threads)
    image = load_sample('grace_hopper')
    frame = Frame(image, 1, 'cam')
    perception = PerceptionPipeline(base)
    ds = perception.detect(frame)
    perception.close()
    print(f'frame: grace_hopper, {len(ds)} detections by {ds.model_name}', flush=True)
    threads = ''

    rows = []
    for name in args.backends.split(','):
        if name == 'llama_cpp' and importlib.util.find_spec('llama_cpp') is None:
            print('llama_cpp: skipped (llama-cpp-python is not installed)')
            continue
        overrides = {'mllm.backend': name}
        stub = None
        if name == 'openai':
            from helpers.openai_stub_server import StubOpenAiServer, reply
            stub = StubOpenAiServer(default=reply(STUB_REPLY, token_s=args.stub_token_s))
            stub.start()
            overrides.update({'mllm.openai_base_url': stub.url, 'mllm.model': 'stub'})
        reasoner = SceneReasoner(load_config(overrides=overrides))
        threads = apply_cpu_threads(n_threads)  # torch is loaded now
        try:
            rows.append(measure(name, reasoner, frame, ds, args.runs))
        finally:
            reasoner.close()
            if stub is not None:
                stub.stop()
    meta = {'machine': f'{platform.machine()}, {os.cpu_count()} CPUs (shared)',
            'threads': threads, 'load_avg_end': os.getloadavg(),
            'python': platform.python_version(), 'runs': args.runs,
            'stub_token_s': args.stub_token_s}
    if args.json:
        Path(args.json).write_text(json.dumps({'meta': meta, 'rows': rows}, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
