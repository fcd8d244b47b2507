"""Object detection backends behind one protocol (`Detector`), chosen by detector.backend."""

from __future__ import annotations

from ..config import Config
from .base import Detector, StageTimer

__all__ = ['Detector', 'StageTimer', 'create_detector']


def create_detector(config: Config) -> Detector:
    """Load the configured detector; raises ModelLoadError with a clear message when the
    weights are missing or unusable. Imports the heavy backend only when chosen."""
    backend = config.detector.backend
    if backend == 'opencv_ssd':
        from .opencv_ssd import OpenCvSsdDetector
        return OpenCvSsdDetector(config)
    if backend == 'opencv_darknet':
        from .opencv_darknet import OpenCvDarknetDetector
        return OpenCvDarknetDetector(config)
    if backend == 'ultralytics':
        from .ultralytics_backend import UltralyticsDetector
        return UltralyticsDetector(config)
    raise ValueError(f'unknown detector backend {backend!r}')  # config validation prevents it
