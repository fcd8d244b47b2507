"""The looker's runtime and cost per reasoning step (core.looking).

    bash scripts/with_env.sh python benchmarks/bench_looker.py [--runs 10] [--json F]

1. Runtime: EfficientNet-Lite3 int8 and MoveNet Lightning through LiteRT (ai-edge-litert)
   and through OpenCV's TFLite importer (cv2.dnn.readNetFromTFLite): does each load, what
   does it say on the coffee and chelsea photos (correctness), how long per image.
2. Cost per reasoning step: Looker.look on a 640x480 frame (the package photos tiled)
   with N box crops (0, 1, 4, 8 = looker.max_crops) plus the whole frame, crops batched
   in one call, with and without posture (all boxes people: the worst case). p50/p95 ms
   over --runs, per LiteRT thread count. Nothing asserts on time.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from measure import arguments, call_times_ms, write_json  # noqa: E402

from mr_mllm_ros.core.assets.sample_images import load_sample  # noqa: E402
from mr_mllm_ros.core.config import load_config, with_changes  # noqa: E402
from mr_mllm_ros.core.looking.classifier import ImageClassifier, resize_to  # noqa: E402
from mr_mllm_ros.core.looking.looker import Looker  # noqa: E402
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame  # noqa: E402


def pct(values: list[float]) -> dict:
    s = sorted(values)
    return {'p50': round(statistics.median(s), 1),
            'p95': round(s[min(len(s) - 1, round(0.95 * (len(s) - 1)))], 1)}


def runtimes(config, runs: int) -> dict:
    """Both runtimes on both models: loads?, top-1 on two photos, ms per image."""
    model = config.resolve_model_path(config.looker.model)
    labels = config.resolve_model_path(config.looker.labels)
    pose = config.resolve_model_path(config.looker.posture_model)
    photos = {name: resize_to(load_sample(name), (280, 280)) for name in ('coffee', 'chelsea')}
    out = {}
    clf = ImageClassifier(model, labels, threads=2)
    out['litert_efficientnet'] = {
        'loads': True,
        'top1': {n: clf.top(clf.classify([im])[0], 1)[0] for n, im in photos.items()},
        'ms_per_image': pct(call_times_ms(lambda: clf.classify([photos['coffee']]), runs))}
    looker = Looker(config)
    square = resize_to(load_sample('camera'), (192, 192))
    out['litert_movenet'] = {'loads': True, 'ms_per_image': pct(call_times_ms(
        lambda: looker.posture.keypoints(square), runs))}
    for key, path, size in (('opencv_efficientnet', model, 280), ('opencv_movenet', pose, 192)):
        try:
            net = cv2.dnn.readNetFromTFLite(str(path))
            net.setInput(cv2.dnn.blobFromImage(np.zeros((size, size, 3), np.uint8)))
            net.forward()
            out[key] = {'loads': True}
        except cv2.error as e:
            out[key] = {'loads': False, 'error': str(e).strip().splitlines()[-1][:200]}
    return out


def frame_and_boxes() -> tuple[np.ndarray, list[Box]]:
    """640x480: the six package photos tiled 3 x 2; boxes = the tiles, then halves."""
    tiles = [cv2.resize(load_sample(n), (213, 240), interpolation=cv2.INTER_AREA)
             for n in ('astronaut', 'coffee', 'chelsea', 'motorcycle', 'camera',
                       'grace_hopper')]
    image = np.zeros((480, 640, 3), np.uint8)
    boxes = []
    for k, t in enumerate(tiles):
        x, y = 213 * (k % 3), 240 * (k // 3)
        image[y:y + 240, x:x + 213] = t
        boxes.append(Box(x, y, x + 213, y + 240))
    boxes += [Box(b.x1, b.y1, b.x2, (b.y1 + b.y2) / 2) for b in boxes]
    return image, boxes


def per_step(config, runs: int, threads: int) -> dict:
    image, boxes = frame_and_boxes()
    frame = Frame(image, 0, 'cam')
    out = {}
    for posture in (False, True):
        looker = Looker(with_changes(config, {'looker.threads': threads,
                                              'looker.posture': posture}))
        for n in (0, 1, 4, 8):
            ds = DetectionSet(tuple(Detection(0, 'person', 0.9, b) for b in boxes[:n]),
                              640, 480)
            key = f'{n} crops + frame{", posture" if posture else ""}'
            out[key] = pct(call_times_ms(lambda: looker.look(frame, ds), runs))
    return out


def main() -> None:
    p = arguments(__doc__)
    p.add_argument('--runs', type=int, default=10)
    args = p.parse_args()
    config = load_config()
    result = {'machine': f'{platform.processor() or platform.machine()}, '
                         f'{os.cpu_count()} CPUs (shared)',
              'runs': args.runs, 'runtimes': runtimes(config, args.runs),
              'per_step_ms': {f'{t} threads': per_step(config, args.runs, t)
                              for t in (1, 2)}}
    print(json.dumps(result, indent=1))
    write_json(args.json, result)


if __name__ == '__main__':
    main()
