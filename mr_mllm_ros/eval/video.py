"""`mr-mllm eval video`: does the detector find a class (people, by default) in every frame
of a real video, and how many? Runs the perception half of the pipeline (detector +
tracker, core.pipeline.PerceptionPipeline, the code path of perception_node) on each
decoded frame, stamped at the video's frame rate.

Counts labelled by hand, optional (`--labels`): {"frames_labelled": {"<frame index>":
{"count": n}}} (frame index 0-based in decode order; for the class person the key may be
"people", as in a street-video label file), compared with the boxes found there.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..core.config import Config
from ..core.errors import ConfigError
from ..core.pipeline import PerceptionPipeline
from ..core.types import Frame
from . import result_files
from .tasks import _percentiles, _progress

log = logging.getLogger(__name__)


def _labelled_counts(path: str | None, class_name: str) -> dict[int, int]:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding='utf-8'))
        frames = data['frames_labelled']
        keys = ('count', 'people') if class_name == 'person' else ('count',)
        return {int(k): int(next(v[key] for key in keys if key in v))
                for k, v in frames.items()}
    except OSError as e:
        raise ConfigError(f'cannot read video labels {path}: {e.strerror}') from e
    except (ValueError, KeyError, TypeError, StopIteration, AttributeError) as e:
        raise ConfigError(f'video labels {path}: expected {{"frames_labelled": {{"<frame>": '
                          f'{{"count": n}}}}}} ({type(e).__name__}: {e})') from e


def run_video(config: Config, *, video: str, class_name: str, labels: str | None,
              limit: int | None, overrides: list[str]) -> tuple[dict, str, list]:
    counts_true = _labelled_counts(labels, class_name)
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise ConfigError(f'cannot open video {video!r} (OpenCV could not decode it)')
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    perception = PerceptionPipeline(config)
    log.info('detector: %s', perception.detector.name)
    found: list[int] = []
    tracks: set[int] = set()
    ms: list[float] = []
    try:
        while limit is None or len(found) < limit:
            ok, bgr = cap.read()
            if not ok:
                break
            k = len(found)
            _progress(k, limit or int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 'frames')
            frame = Frame(np.ascontiguousarray(bgr[..., ::-1]), int(k * 1e9 / fps), 'video')
            ds = perception.detect(frame)
            mine = [d for d in ds if d.class_name == class_name]
            found.append(len(mine))
            tracks |= {d.track_id for d in mine if d.track_id >= 0}
            ms.append(ds.timings_ms.get('total', 0.0))
    finally:
        cap.release()
        perception.detector.close()
    if not found:
        raise ConfigError(f'video {video!r} has no frames OpenCV can decode')
    at_labels = [{'frame': f, 'labelled': n, 'found': found[f]}
                 for f, n in sorted(counts_true.items()) if f < len(found)]
    with_class = sum(1 for n in found if n)
    result: dict[str, Any] = {
        'task': 'video', 'video': str(video), 'class': class_name, 'frames': len(found),
        'fps': fps, 'models': {'detector': perception.detector.name},
        'config_overrides': overrides,
        'frames_with_class': with_class, 'share_with_class': with_class / len(found),
        'mean_count': float(np.mean(found)), 'max_count': int(max(found)),
        'track_ids': len(tracks), 'labelled_frames': at_labels,
        'count_mean_abs_error': float(np.mean([abs(a['found'] - a['labelled'])
                                               for a in at_labels])) if at_labels else None,
        'per_frame_counts': found,
        'timing': {'perception': _percentiles(ms)},
    }
    return result, _markdown(result), []


def _markdown(r: dict) -> str:
    c = r['class']
    rows = [[f'frames with at least one {c}', f'{r["frames_with_class"]} / {r["frames"]} '
             f'({100 * r["share_with_class"]:.1f} %)'],
            [f'{c} boxes per frame (mean / max)', f'{r["mean_count"]:.2f} / {r["max_count"]}'],
            [f'{c} track ids', r['track_ids']]]
    if r['labelled_frames']:
        rows.append(['count error at the labelled frames (mean |found - labelled|)',
                     r['count_mean_abs_error']])
    out = result_files.table(['metric', 'value'], rows)
    if r['labelled_frames']:
        out += '\n\n' + result_files.table(
            ['frame', f'{c} labelled', f'{c} found'],
            [[a['frame'], a['labelled'], a['found']] for a in r['labelled_frames']])
    return (out + f'\n\n{r["frames"]} frames of {r["video"]} at {r["fps"]:g} fps, detector '
            f'{r["models"]["detector"]}.\n')
