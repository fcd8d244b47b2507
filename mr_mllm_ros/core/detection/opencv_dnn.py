"""What the OpenCV DNN detectors share: device set-up, warm-up, input checks, and one
`detect` that runs preprocess -> infer -> postprocess with per-stage timings (ms).

A subclass loads its network and label map, then calls `_start`; it provides
`_preprocess` (RGB frame -> input blob) and `_decode` (network outputs -> candidate boxes
in image pixels, scores and indexes into `class_names`). Class-aware non-maximum
suppression at `detector.iou` and the backend-independent tail (confidence / class
filters, clipping, `max_detections`) are the same for every model.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..errors import BackendError, ImageConversionError, ModelLoadError
from ..types import DetectionSet, Frame
from .detector import StageTimer, finalize_detections, make_detection_set

#: (boxes (N, 4) xyxy float pixels, scores (N,), class indexes (N,) into class_names)
Candidates = tuple[np.ndarray, np.ndarray, np.ndarray]


def cv_error_line(e: cv2.error) -> str:
    """The informative last line of an OpenCV error (the rest is a C++ location)."""
    lines = str(e).strip().splitlines()
    return lines[-1] if lines else repr(e)


def check_rgb(image: object) -> np.ndarray:
    """A frame's pixels as the detectors need them, or a clear error."""
    if not isinstance(image, np.ndarray):
        raise ImageConversionError(f'detector input must be a numpy array, got '
                                   f'{type(image).__name__}')
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageConversionError(f'detector input must be an (H, W, 3) uint8 RGB image, got '
                                   f'shape {image.shape} dtype {image.dtype}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageConversionError(f'detector input is empty: shape {image.shape}')
    return image


class OpenCvDnnDetector:
    """Base of the OpenCV DNN backends (not a backend itself)."""

    #: backend name, as in detector.backend; used in messages and `name`
    backend = ''

    def _start(self, net: cv2.dnn.Net, class_names: Sequence[str], model_stem: str,
               settings) -> None:
        self._net = net
        self.class_names: Sequence[str] = list(class_names)
        self.settings = settings
        self.name = f'{model_stem} ({self.backend})'
        self._out_names = net.getUnconnectedOutLayersNames()
        self._configure_device(settings.device, settings.half)
        if settings.warmup:
            try:
                self._infer(self._preprocess(np.zeros((settings.imgsz, settings.imgsz, 3),
                                                      np.uint8)))
            except cv2.error as e:
                raise ModelLoadError(f'{self.name}: warm-up inference failed: '
                                     f'{cv_error_line(e)}') from e

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

    # ------------------------------------------------------------ model-specific parts
    def _preprocess(self, rgb: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _decode(self, outputs: list[np.ndarray], frame: Frame) -> Candidates:
        raise NotImplementedError

    # ---------------------------------------------------------------------- shared
    def _infer(self, blob: np.ndarray) -> list[np.ndarray]:
        self._net.setInput(blob)
        return list(self._net.forward(self._out_names))

    def detect(self, frame: Frame) -> DetectionSet:
        timer = StageTimer()
        det = self.settings
        rgb = check_rgb(frame.image)
        try:
            with timer.stage('preprocess'):
                blob = self._preprocess(rgb)
            with timer.stage('infer'):
                outputs = self._infer(blob)
        except cv2.error as e:
            raise BackendError(f'{self.name} inference failed: {cv_error_line(e)}') from e
        with timer.stage('postprocess'):
            boxes, scores, class_ids = self._decode(outputs, frame)
            keep = scores >= det.conf
            boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
            idx: Sequence[int] = []
            if len(boxes):
                xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
                idx = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(),
                                              class_ids.tolist(), det.conf, det.iou)
            idx = np.asarray(idx, dtype=int).reshape(-1)
            detections = finalize_detections(
                boxes[idx], scores[idx], class_ids[idx], self.class_names, frame,
                conf=det.conf, max_detections=det.max_detections, allowed=det.classes)
        return make_detection_set(detections, frame, self.name, timer.ms)

    def supports_text_classes(self) -> bool:
        return False

    def set_text_classes(self, names: Sequence[str]) -> None:
        raise BackendError(f'the {self.backend} detector has a fixed label map; '
                           'open-vocabulary classes need ultralytics YOLO-World/YOLOE')

    def close(self) -> None:
        self._net = None
