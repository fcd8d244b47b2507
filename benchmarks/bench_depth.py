"""Cost per frame of the 3D step (core.geometry + core.depth_images) on VGA depth.

    bash scripts/with_env.sh python benchmarks/bench_depth.py [--frames 300] [--json F]

Real depth: the Middlebury motorcycle's ground truth (core.assets.rgbd_sample) resized to
640 x 480 (nearest, NaN holes kept) with its K scaled. Per frame, as perception_node
does it: decode the depth message (16UC1 raw, 32FC1 raw, compressedDepth 16UC1 PNG), then
`locate` N boxes (1, 10, 30; realistic sizes from 5 % to 40 % of the image). And the
path without depth: PerceptionPipeline.detect(frame) vs detect(frame, depth) with a stub
detector that returns the same 10 boxes at no cost, so the difference is the 3D step
alone. p50/p95 in ms over --frames runs. Nothing asserts on time.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from measure import arguments, call_times_ms, write_json  # noqa: E402

from mr_mllm_ros.core import depth_images  # noqa: E402
from mr_mllm_ros.core.assets.rgbd_sample import motorcycle_rgbd  # noqa: E402
from mr_mllm_ros.core.config import load_config  # noqa: E402
from mr_mllm_ros.core.detection.detector import Detector  # noqa: E402
from mr_mllm_ros.core.geometry import CameraIntrinsics, DepthFrame, locate  # noqa: E402
from mr_mllm_ros.core.pipeline import PerceptionPipeline  # noqa: E402
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame  # noqa: E402

W, H = 640, 480


def vga_sample():
    """The motorcycle cropped to 4:3 (667 x 500, centred) and resized to 640 x 480."""
    s = motorcycle_rgbd()
    k = s.intrinsics
    cw = round(k.height * W / H)
    x0 = (k.width - cw) // 2
    crop = CameraIntrinsics(k.fx, k.fy, k.cx - x0, k.cy, cw, k.height)
    depth = cv2.resize(s.depth_m[:, x0:x0 + cw], (W, H), interpolation=cv2.INTER_NEAREST)
    rgb = cv2.resize(s.rgb[:, x0:x0 + cw], (W, H), interpolation=cv2.INTER_AREA)
    return rgb, depth, crop.scaled(W, H)


def boxes(n: int, seed: int = 0) -> list[Box]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        share = rng.uniform(0.05, 0.4)
        w = np.sqrt(share * W * H * rng.uniform(0.5, 2.0))
        h = share * W * H / w
        x, y = rng.uniform(0, W - min(w, W - 1)), rng.uniform(0, H - min(h, H - 1))
        out.append(Box(x, y, min(W, x + w), min(H, y + h)))
    return out


def stats(ms: list[float]) -> dict:
    return {'p50_ms': round(float(np.percentile(ms, 50)), 3),
            'p95_ms': round(float(np.percentile(ms, 95)), 3), 'n': len(ms)}


def timed(fn, frames: int) -> dict:
    return stats(call_times_ms(fn, frames))


class _FixedDetector(Detector):
    """Returns the same detections for every frame, at no cost (the 3D step alone)."""

    def __init__(self, dets):
        self.dets = tuple(dets)
        self.name = 'fixed boxes (benchmark)'
        self.settings = None

    def detect(self, frame: Frame) -> DetectionSet:
        return DetectionSet(self.dets, frame.width, frame.height, frame.stamp_ns,
                            frame.frame_id, self.name)

    def close(self) -> None:
        pass


def main() -> int:
    ap = arguments(__doc__)
    ap.add_argument('--frames', type=int, default=300)
    args = ap.parse_args()
    settings = load_config().depth
    rgb, depth, k = vga_sample()
    results: dict = {'machine': f'{platform.processor() or platform.machine()}, '
                                f'{os.cpu_count()} CPUs (shared)', 'frames': args.frames}
    raw16 = depth_images.depth_to_raw(depth, '16UC1')
    raw32 = depth_images.depth_to_raw(depth, '32FC1')
    fmt, png = depth_images.encode_compressed_depth(depth, '16UC1')
    results['decode'] = {
        '16UC1 raw': timed(lambda: depth_images.depth_from_raw(
            '16UC1', H, W, raw16.step, False, raw16.data), args.frames),
        '32FC1 raw': timed(lambda: depth_images.depth_from_raw(
            '32FC1', H, W, raw32.step, False, raw32.data), args.frames),
        'compressedDepth 16UC1 PNG': timed(lambda: depth_images.depth_from_compressed(
            fmt, png), args.frames)}
    frame = DepthFrame(depth, k)
    results['locate'] = {}
    for n in (1, 10, 30):
        ds = DetectionSet(tuple(Detection(0, 'thing', 0.9, b) for b in boxes(n)), W, H)
        results['locate'][f'{n} boxes'] = timed(lambda: locate(ds, frame, settings),
                                                args.frames)
    dets = [Detection(0, 'thing', 0.9, b) for b in boxes(10)]
    pipeline = PerceptionPipeline(load_config(overrides={'tracker.kind': 'none'}),
                                  detector=_FixedDetector(dets))
    f = Frame(rgb, 1, 'cam')
    results['detect 10 boxes'] = {
        'without depth': timed(lambda: pipeline.detect(f), args.frames),
        'with depth (16UC1 decode + locate)': timed(lambda: pipeline.detect(f, DepthFrame(
            depth_images.depth_from_raw('16UC1', H, W, raw16.step, False, raw16.data), k)),
            args.frames)}
    for section in ('decode', 'locate', 'detect 10 boxes'):
        print(section)
        for name, s in results[section].items():
            print(f'  {name:40s} p50 {s["p50_ms"]:8.3f} ms   p95 {s["p95_ms"]:8.3f} ms')
    write_json(args.json, results)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
