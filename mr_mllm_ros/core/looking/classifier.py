"""The looker's classifier: EfficientNet-Lite3 (ImageNet-1k, int8 TFLite, 280x280) on
image regions. preprocess (crop with context, pad to a square, resize) -> infer -> the
probabilities of the 1000 classes."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import ModelLoadError
from ..types import Box
from .imagenet_coco import read_labels, short_name
from .tflite import TfliteModel

#: grey that fills the square around a crop (the ImageNet mean, roughly)
PAD_VALUE = 124


def square_crop(image: np.ndarray, box: Box | None, margin: float) -> np.ndarray:
    """The box plus `margin` of its size on each side (clipped to the image), padded to a
    square with PAD_VALUE so the model sees the object's true shape (a tall person stays
    tall); box None = the whole image."""
    h, w = image.shape[:2]
    if box is None:
        x1, y1, x2, y2 = 0, 0, w, h
    else:
        mx, my = box.width * margin, box.height * margin
        x1, y1 = int(max(0, box.x1 - mx)), int(max(0, box.y1 - my))
        x2, y2 = int(min(w, np.ceil(box.x2 + mx))), int(min(h, np.ceil(box.y2 + my)))
        if x2 <= x1 or y2 <= y1:
            x1, y1, x2, y2 = 0, 0, w, h
    crop = image[y1:y2, x1:x2]
    ch, cw = crop.shape[:2]
    side = max(ch, cw)
    if ch == cw:
        return crop
    out = np.full((side, side, 3), PAD_VALUE, np.uint8)
    oy, ox = (side - ch) // 2, (side - cw) // 2
    out[oy:oy + ch, ox:ox + cw] = crop
    return out


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> size (height, width); area averaging when shrinking."""
    h, w = size
    interp = cv2.INTER_AREA if image.shape[0] > h or image.shape[1] > w else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (w, h), interpolation=interp))


class ImageClassifier:
    """ImageNet-1k probabilities for square RGB crops."""

    def __init__(self, model_path: str | Path, labels_path: str | Path, threads: int = 0):
        self.model = TfliteModel(model_path, threads)
        self.labels = read_labels(labels_path)
        self.names = tuple(short_name(label) for label in self.labels)
        probe = self.model.run(np.zeros((*self.model.input_size, 3), np.uint8))
        if len(probe) != 1 or probe[0].shape[-1] != len(self.labels):
            raise ModelLoadError(
                f'classifier {model_path}: {probe[0].shape[-1]} outputs but '
                f'{len(self.labels)} labels in {labels_path}')

    def classify(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, n_labels) float32 probabilities for N crops ((H, W, 3) uint8 RGB, any
        size; square ones keep their shape)."""
        out = np.zeros((len(crops), len(self.labels)), np.float32)
        for i, crop in enumerate(crops):
            (probs,) = self.model.run(resize_to(crop, self.model.input_size))
            out[i] = probs.reshape(-1)
        return out

    def top(self, probs: np.ndarray, k: int) -> tuple[tuple[str, float], ...]:
        """The k most probable (short name, probability), best first."""
        order = np.argsort(-probs)[:k]
        return tuple((self.names[i], round(float(probs[i]), 4)) for i in order)
