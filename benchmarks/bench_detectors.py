"""The offline detectors side by side: time per frame, stage by stage, in one run.

    bash scripts/with_env.sh python benchmarks/bench_detectors.py [--frames 120]
        [--config NAME=FILE ...] [--json FILE]

Each detector (default: the offline default of config/mr_mllm.yaml, SSD-MobileNet-v2, and
YOLOv3-tiny through config/detector_yolov3_tiny.yaml) is loaded once and warmed up; then
the same VGA frames (the six sample photos resized to 640x480, cycled) go through every
detector in turn, frame by frame (A, B, A, B, ...), so a load change on a shared machine
hits all of them alike. Times are the detector's own stages (preprocess, infer,
postprocess) and the wall time of `Detector.detect` (no tracker). Prints p50 / p95 per
stage and the ratio of the p50 totals; nothing asserts on time.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from measure import arguments, write_json  # noqa: E402

from mr_mllm_ros.core.assets.sample_images import SAMPLES, load_sample  # noqa: E402
from mr_mllm_ros.core.config import load_config  # noqa: E402
from mr_mllm_ros.core.detection import create_detector  # noqa: E402
from mr_mllm_ros.core.types import Frame  # noqa: E402

DEFAULT_RUNS = {'default': None,
                'yolov3-tiny': str(REPO / 'config' / 'detector_yolov3_tiny.yaml')}


def vga_frames(n: int) -> list[np.ndarray]:
    import cv2
    photos = [cv2.resize(load_sample(s), (640, 480), interpolation=cv2.INTER_AREA)
              for s in SAMPLES]
    return [photos[i % len(photos)] for i in range(n)]


def pct(values: list[float]) -> tuple[float, float]:
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def main() -> int:
    ap = arguments(__doc__)
    ap.add_argument('--frames', type=int, default=120)
    ap.add_argument('--config', action='append', default=[], metavar='NAME=FILE',
                    help='a detector to compare: a config YAML merged over the defaults '
                         '(default: the offline default and YOLOv3-tiny)')
    args = ap.parse_args()
    runs = dict(item.split('=', 1) for item in args.config) if args.config else DEFAULT_RUNS
    detectors = {}
    for name, path in runs.items():
        config = load_config(path) if path else load_config()
        t0 = time.perf_counter()
        detectors[name] = create_detector(config)
        print(f'{name}: {detectors[name].name}, imgsz {config.detector.imgsz}, loaded + '
              f'warmed up in {time.perf_counter() - t0:.2f} s', flush=True)
    frames = vga_frames(args.frames)
    stages: dict[str, dict[str, list[float]]] = {n: {} for n in detectors}
    for i, rgb in enumerate(frames):
        for name, det in detectors.items():
            t0 = time.perf_counter()
            ds = det.detect(Frame(rgb, i, 'cam'))
            wall = (time.perf_counter() - t0) * 1e3
            for stage, ms in {**ds.timings_ms, 'detect (wall)': wall}.items():
                stages[name].setdefault(stage, []).append(ms)
    print(f'\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
          f'load {os.getloadavg()[0]:.1f}; {args.frames} VGA frames, interleaved\n')
    print('| detector | ' + ' | '.join(f'{s} p50 / p95 ms' for s in
                                         stages[next(iter(stages))]) + ' |')
    print('|---|' + '---:|' * len(stages[next(iter(stages))]))
    result = {}
    for name, by_stage in stages.items():
        cells = {s: pct(v) for s, v in by_stage.items()}
        result[name] = {'model': detectors[name].name,
                        **{s: {'p50': round(a, 1), 'p95': round(b, 1)}
                           for s, (a, b) in cells.items()}}
        print(f'| {name} ({detectors[name].name}) | '
              + ' | '.join(f'{a:.1f} / {b:.1f}' for a, b in cells.values()) + ' |')
    first = next(iter(result))
    for name in list(result)[1:]:
        ratio = result[name]['detect (wall)']['p50'] / result[first]['detect (wall)']['p50']
        print(f'\n{name} / {first} (p50 detect wall time): {ratio:.2f}')
    for det in detectors.values():
        det.close()
    write_json(args.json, {'frames': args.frames, 'load': os.getloadavg(),
                           'detectors': result})
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
