#!/usr/bin/env python3
"""Replay benchmark: what `mr-mllm replay` costs beyond reading the bag, how fast the
offline default models replay, and how Ray scales on 2 workers. Prints numbers (and
writes them as JSON with --json); asserts nothing.

(a) Overhead excluding model inference. The same N VGA rgb8 frames (a real photo,
    shifted per frame) in a sqlite3 and an mcap bag, each measured as:
    - raw decode: rosbags Reader + deserialize_cdr + core.image_codecs (image_from_raw, to_rgb8):
      the least any reader of these frames must do;
    - replay loop: the replay's per-frame path (UnitProcessor: read, identity check,
      decode, Pipeline.process with a detector stub returning nothing, no MLLM, alert
      rules off) + OutputWriter (results.jsonl + CSV appends), as run_replay runs it;
    - replay loop with the default alert rules (frame statistics per frame: pipeline
      work the nodes do too, reported separately);
    - end to end: run_replay (open, plan, loop, result bag, report.html, summary).
    Runs are interleaved; the minimum of --repeat runs is the cost (the median is
    printed too). Ratios are to the raw decode of the same bag; target: loop <= 1.10.
    Then the per-frame cost of each step, in microseconds.
(b) Frames/s with the offline default models (YOLOv3-tiny OpenCV DNN; + SmolLM2-135M
    descriptions): the six sample photos cycled, replay end to end.
(c) Ray: two bags with the default detector: serial (OpenCV's own threads, and 1
    thread), --ray with 1 and 2 workers (1 CPU each); Ray start-up measured alone.

(d) A long bag: `--long-minutes` (10) of a 30 Hz JPEG camera made of the sample photos
    (320 px, each photo 20 s in turn: a scene change every 20 s), replayed end to end
    with the offline default models, `--no-describe` and then with descriptions at the
    default schedule (core.reasoning.schedule, in message time): wall time of each, their ratio
    (target <= 2), frames/s and the MLLM reasoning steps by trigger.

The load average is printed with each line, because this machine is shared. Example:

    bash scripts/with_env.sh python benchmarks/bench_replay.py --json output/bench_replay.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mr_mllm_ros.core import image_codecs  # noqa: E402
from mr_mllm_ros.core.assets.sample_images import SAMPLES, load_sample  # noqa: E402
from mr_mllm_ros.core.config import load_config, with_changes  # noqa: E402
from mr_mllm_ros.core.pipeline import Pipeline  # noqa: E402
from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402
from mr_mllm_ros.core.types import DetectionSet  # noqa: E402
from mr_mllm_ros.replay import outputs as o  # noqa: E402
from mr_mllm_ros.replay.bag_reader import open_bag  # noqa: E402
from mr_mllm_ros.replay.bag_writer import image_message  # noqa: E402
from mr_mllm_ros.replay.bag_writer import write_bag as bag_writer  # noqa: E402
from mr_mllm_ros.replay.processing import UnitProcessor  # noqa: E402
from mr_mllm_ros.replay.result_messages import result_typestore  # noqa: E402
from mr_mllm_ros.replay.runner import ReplayOptions, plan_units, run_replay  # noqa: E402

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


class NullDetector:
    """A Detector that finds nothing in no time: isolates the replay's own cost."""

    name = 'null (benchmark stub)'
    class_names: tuple = ()
    settings = None

    def detect(self, frame) -> DetectionSet:
        return DetectionSet((), frame.width, frame.height, frame.stamp_ns, frame.frame_id,
                            self.name, {})

    def supports_text_classes(self) -> bool:
        return False

    def set_text_classes(self, names) -> None:
        pass

    def close(self) -> None:
        pass


def write_bag(path: Path, storage: str, frames: list[np.ndarray], topic='/cam/image',
              period_s=1 / 30) -> Path:
    msgs = [image_message(rgb, 'rgb8', T0 + round(i * period_s * NS), 'cam')
            for i, rgb in enumerate(frames)]
    return bag_writer(path, {topic: msgs}, storage, start_ns=T0, period_s=period_s)


def vga_frames(n: int) -> list[np.ndarray]:
    import cv2
    base = cv2.resize(load_sample('astronaut'), (640, 480), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(np.roll(base, i * 3, axis=1)) for i in range(n)]


def photo_frames(n: int) -> list[np.ndarray]:
    photos = [load_sample(name) for name in SAMPLES]
    return [photos[i % len(photos)] for i in range(n)]


def load() -> str:
    return '/'.join(f'{x:.1f}' for x in os.getloadavg())


# ------------------------------------------------------------------------------- (a)

def raw_decode(bag: Path) -> int:
    from rosbags.rosbag2 import Reader
    ts = result_typestore()
    n = 0
    with Reader(bag) as reader:
        for conn, _, data in reader.messages():
            msg = ts.deserialize_cdr(data, conn.msgtype)
            array = image_codecs.image_from_raw(msg.encoding, msg.height, msg.width, msg.step,
                                                msg.is_bigendian, msg.data)
            image_codecs.to_rgb8(array, msg.encoding)
            n += 1
    return n


def replay_loop(bag: Path, out: Path, config, rules: bool) -> float:
    """Seconds of run_replay's serial per-frame loop (read, identity check, decode,
    Pipeline.process, results.jsonl + CSV appends), set-up and close excluded: the bag
    is opened by the loop itself, as the raw decode opens it."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    info = open_bag(bag)
    units = plan_units([info], ReplayOptions(bags=(str(bag),), out=str(out)))
    processor = UnitProcessor(config, describe=False, pipeline=Pipeline(
        config, detector=NullDetector(), with_mllm=False))
    writer = o.OutputWriter(out)
    t0 = time.perf_counter()
    for unit in units:
        for fo in processor.run(unit, info):
            writer.write(fo.record, fo.thumbnail)
    elapsed = time.perf_counter() - t0
    writer.close()
    assert rules or not fo.record['alerts']
    return elapsed


def bench_overhead(tmp: Path, n: int, repeat: int) -> dict:
    frames = vga_frames(n)
    no_rules = load_config(overrides={'mllm.backend': 'none', 'alerts.enabled': False})
    rules = load_config(overrides={'mllm.backend': 'none'})
    results = {}
    for storage in ('sqlite3', 'mcap'):
        bag = write_bag(tmp / f'vga_{storage}', storage, frames)
        raw_decode(bag)  # warm the page cache

        def end_to_end():
            out = tmp / 'e2e'
            if out.exists():
                shutil.rmtree(out)
            t0 = time.perf_counter()
            run_replay(ReplayOptions(bags=(str(bag),), out=str(out), describe=False,
                                     progress=False), no_rules,
                       pipeline=Pipeline(no_rules, detector=NullDetector(), with_mllm=False))
            return time.perf_counter() - t0

        def timed_raw():
            t0 = time.perf_counter()
            raw_decode(bag)
            return time.perf_counter() - t0

        # Interleaved, so a burst of load on this shared machine hits every variant alike;
        # the minimum is the cost, the median what a run sees.
        runs = {'raw': [], 'loop': [], 'rules': [], 'e2e': []}
        for _ in range(repeat):
            runs['raw'].append(timed_raw())
            runs['loop'].append(replay_loop(bag, tmp / 'loop', no_rules, False))
            runs['rules'].append(replay_loop(bag, tmp / 'loop', rules, True))
            runs['e2e'].append(end_to_end())
        best = {k: min(v) for k, v in runs.items()}
        med = {k: statistics.median(v) for k, v in runs.items()}
        results[storage] = r = {
            'frames': n, 'load': load(), 'runs_s': runs,
            'raw_decode_s': best['raw'], 'raw_fps': n / best['raw'],
            'replay_loop_s': best['loop'], 'loop_ratio': best['loop'] / best['raw'],
            'loop_ratio_median': med['loop'] / med['raw'],
            'loop_overhead_ms_per_frame': (best['loop'] - best['raw']) / n * 1e3,
            'replay_loop_rules_s': best['rules'],
            'loop_rules_ratio': best['rules'] / best['raw'],
            'end_to_end_s': best['e2e'], 'end_to_end_ratio': best['e2e'] / best['raw']}
        print(f'(a) {storage:7s} {n} VGA frames, min of {repeat}: raw decode '
              f'{best["raw"]:.3f} s ({r["raw_fps"]:.0f} fps) | replay loop {best["loop"]:.3f} s'
              f' = {r["loop_ratio"]:.2f}x (median {r["loop_ratio_median"]:.2f}x; '
              f'{r["loop_overhead_ms_per_frame"] * 1e3:+.0f} us/frame) | + default alert '
              f'rules {best["rules"]:.3f} s = {r["loop_rules_ratio"]:.2f}x | end to end '
              f'{best["e2e"]:.3f} s = {r["end_to_end_ratio"]:.2f}x  [load {r["load"]}]',
              flush=True)
    return results


def bench_components(tmp: Path, n: int = 300) -> dict:
    """Microseconds per VGA frame of each step of the replay loop (best of 3)."""
    from rosbags.rosbag2 import Reader

    from mr_mllm_ros.replay.bag_reader import decode, header_of, iter_raw
    cfg = load_config(overrides={'mllm.backend': 'none', 'alerts.enabled': False})
    bag = tmp / 'vga_sqlite3'
    if not bag.exists():
        write_bag(bag, 'sqlite3', vga_frames(n))
    info = open_bag(bag)
    raws = list(iter_raw(info, ['/cam/image']))
    pipeline = Pipeline(cfg, detector=NullDetector(), with_mllm=False)
    proc = UnitProcessor(cfg, describe=False, pipeline=pipeline)
    frames = [decode(r).frame for r in raws]
    outs = [proc.process(str(bag), r, header_of(r.data), frozenset()) for r in raws]
    writer = o.OutputWriter(tmp / 'components')

    def per_frame(fn) -> float:
        best = float('inf')
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best / len(raws) * 1e6

    def read_only():
        with Reader(bag) as r:
            for _ in r.messages():
                pass
    steps = {
        'rosbags read (sqlite3)': per_frame(read_only),
        'raw decode baseline (read + deserialize_cdr + core.images)':
            per_frame(lambda: raw_decode(bag)),
        'replay decode (direct CDR parse + core.images)':
            per_frame(lambda: [decode(r) for r in raws]),
        'Pipeline.process, stub detector, rules off':
            per_frame(lambda: [pipeline.process(f, 1.0) for f in frames]),
        'decode + Pipeline.process + record (UnitProcessor.process)':
            per_frame(lambda: [proc.process(str(bag), r, header_of(r.data), frozenset())
                               for r in raws]),
        'results.jsonl line + CSV append (OutputWriter.write)':
            per_frame(lambda: [writer.write(x.record) for x in outs]),
    }
    writer.close()
    for k, v in steps.items():
        print(f'(a) per frame: {v:7.1f} us  {k}', flush=True)
    return steps


# ------------------------------------------------------------------------------- (b)

def bench_models(tmp: Path, n: int, n_describe: int) -> dict:
    config = load_config()
    out = {}
    bag = write_bag(tmp / 'photos', 'sqlite3', photo_frames(n), period_s=0.5)
    for describe, count in ((False, n), (True, n_describe)):
        target = tmp / f'models_{describe}'
        if target.exists():
            shutil.rmtree(target)
        t0 = time.perf_counter()
        # every frame described: the cost of a description per frame (the default
        # schedule describes far fewer, see (d))
        res = run_replay(ReplayOptions(bags=(str(bag),), out=str(target), describe=describe,
                                       end_s=count * 0.5 - 0.25, progress=False),
                         with_changes(config, {'scene.describe_every_frame': True}))
        wall = time.perf_counter() - t0
        recs = list(o.iter_results(target / o.RESULTS))
        frame_s = [sum(r['timings_ms'].values()) / 1e3 for r in recs]
        key = 'with_descriptions' if describe else 'detections_and_rules'
        out[key] = {'frames': len(recs), 'wall_s': wall, 'fps_end_to_end': len(recs) / wall,
                    'fps_processing': len(recs) / sum(frame_s),
                    'median_frame_ms': statistics.median(frame_s) * 1e3, 'load': load(),
                    'models': recs[0].get('models')}
        r = out[key]
        print(f'(b) {key}: {r["frames"]} frames in {wall:.1f} s = {r["fps_end_to_end"]:.2f} '
              f'fps end to end (model load included), {r["fps_processing"]:.2f} fps '
              f'processing, median {r["median_frame_ms"]:.0f} ms/frame, models '
              f'{r["models"]}  [load {r["load"]}]', flush=True)
        assert res.frames_ok == len(recs)
    return out


# ------------------------------------------------------------------------------- (c)

def bench_ray(tmp: Path, n: int) -> dict:
    import cv2
    config = load_config(overrides={'mllm.backend': 'none'})
    bags = [write_bag(tmp / f'ray_{k}', 'sqlite3', photo_frames(n)) for k in range(2)]
    out = {}

    def run(name, ray, threads=None):
        target = tmp / f'ray_out_{name}'
        if target.exists():
            shutil.rmtree(target)
        before = cv2.getNumThreads()
        if threads:
            cv2.setNumThreads(threads)
        t0 = time.perf_counter()
        try:
            res = run_replay(ReplayOptions(bags=tuple(map(str, bags)), out=str(target),
                                           describe=False, progress=False), config, ray=ray)
        finally:
            cv2.setNumThreads(before)
        wall = time.perf_counter() - t0
        out[name] = {'frames': res.frames, 'wall_s': wall, 'fps': res.frames / wall,
                     'load': load()}
        return target

    serial = run('serial', None)
    run('serial_1_thread', None, threads=1)
    import ray as ray_module
    t0 = time.perf_counter()
    ray_module.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                    address='local')
    ray_module.shutdown()
    startup = time.perf_counter() - t0
    for workers in (1, 2):
        target = run(f'ray_{workers}', {'workers': workers})
        same = [json.dumps(o.strip_timings(r)) for r in o.iter_results(serial / o.RESULTS)] \
            == [json.dumps(o.strip_timings(r)) for r in o.iter_results(target / o.RESULTS)]
        out[f'ray_{workers}']['identical_to_serial'] = same
    out['ray_startup_s'] = startup
    base = out['serial']['wall_s']
    for name in ('serial', 'serial_1_thread', 'ray_1', 'ray_2'):
        r = out[name]
        extra = '' if not name.startswith('ray') else \
            f' | without Ray start-up {r["frames"] / max(r["wall_s"] - startup, 1e-9):.1f} ' \
            f'fps, identical results: {r["identical_to_serial"]}'
        print(f'(c) {name:15s} {r["frames"]} frames (2 bags) in {r["wall_s"]:.1f} s = '
              f'{r["fps"]:.1f} fps, speed-up {base / r["wall_s"]:.2f}x{extra}  '
              f'[load {r["load"]}]', flush=True)
    r1, r2 = out['ray_1']['wall_s'] - startup, out['ray_2']['wall_s'] - startup
    out['ray_2_vs_1_without_startup'] = r1 / r2
    print(f'(c) local Ray start + shutdown alone: {startup:.1f} s; 2 workers vs 1 worker, '
          f'start-up excluded: {r1 / r2:.2f}x', flush=True)
    return out


# ------------------------------------------------------------------------------- (d)

def bench_long(tmp: Path, minutes: float, rate_hz: float = 30.0) -> dict:
    from mr_mllm_ros.eval.datasets import photo_scenes
    from mr_mllm_ros.eval.datasets import write_bag as write_photo_bag
    bag = tmp / 'long'
    t0 = time.perf_counter()
    write_photo_bag(bag, '/cam/image/compressed', photo_scenes(minutes * 60, rate_hz, 20.0),
                    rate_hz=rate_hz, compressed=True)
    print(f'(d) wrote a {minutes:g} min {rate_hz:g} Hz JPEG bag in '
          f'{time.perf_counter() - t0:.0f} s', flush=True)
    config = load_config()
    out = {}
    for describe in (False, True):
        target = tmp / f'long_{describe}'
        t0 = time.perf_counter()
        res = run_replay(ReplayOptions(bags=(str(bag),), out=str(target), describe=describe),
                         config)
        wall = time.perf_counter() - t0
        key = 'with_descriptions' if describe else 'no_describe'
        out[key] = r = {'frames': res.frames_ok, 'wall_s': wall, 'fps': res.frames_ok / wall,
                        'mllm_calls': res.mllm_calls, 'load': load()}
        print(f'(d) {key}: {r["frames"]} frames in {wall:.0f} s = {r["fps"]:.1f} frames/s, '
              f'MLLM reasoning steps {sum(res.mllm_calls.values())} {res.mllm_calls}  '
              f'[load {r["load"]}]', flush=True)
    out['ratio'] = out['with_descriptions']['wall_s'] / out['no_describe']['wall_s']
    print(f'(d) with descriptions / --no-describe: {out["ratio"]:.2f}x (target <= 2)',
          flush=True)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--frames', type=int, default=300, help='VGA frames for (a)')
    p.add_argument('--repeat', type=int, default=7)
    p.add_argument('--model-frames', type=int, default=60, help='frames for (b) without MLLM')
    p.add_argument('--describe-frames', type=int, default=6, help='frames for (b) with MLLM')
    p.add_argument('--ray-frames', type=int, default=100, help='frames per bag for (c)')
    p.add_argument('--long-minutes', type=float, default=10.0, help='bag length for (d)')
    p.add_argument('--only', choices=('a', 'b', 'c', 'd'), nargs='+',
                   default=['a', 'b', 'c', 'd'])
    p.add_argument('--json', help='write the numbers here')
    args = p.parse_args()
    apply_offline_env()
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    results = {'machine': f'{platform.machine()}, {os.cpu_count()} CPUs, '
                          f'{platform.platform()}, Python {platform.python_version()}'}
    print(results['machine'])
    tmp = Path(tempfile.mkdtemp(prefix='bench_replay_'))
    try:
        if 'a' in args.only:
            results['overhead'] = bench_overhead(tmp, args.frames, args.repeat)
            results['components_us'] = bench_components(tmp, args.frames)
        if 'b' in args.only:
            results['models'] = bench_models(tmp, args.model_frames, args.describe_frames)
        if 'c' in args.only:
            results['ray'] = bench_ray(tmp, args.ray_frames)
        if 'd' in args.only:
            results['long_bag'] = bench_long(tmp, args.long_minutes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
