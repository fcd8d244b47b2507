"""Object detection backends behind one protocol (`Detector`), chosen by detector.backend."""

from __future__ import annotations

from ..config import Config
from ..runtime.lazy_import import load_class
from .detector import Detector, StageTimer

__all__ = ['Detector', 'StageTimer', 'create_detector']

#: detector.backend -> 'module:Class' in this package
BACKENDS = {'opencv_ssd': 'opencv_ssd:OpenCvSsdDetector',
            'opencv_darknet': 'opencv_darknet:OpenCvDarknetDetector',
            'ultralytics': 'ultralytics_backend:UltralyticsDetector'}


def create_detector(config: Config) -> Detector:
    """Load the configured detector; raises ModelLoadError with a clear message when the
    weights are missing or unusable. Imports the heavy backend only when chosen."""
    return load_class(__package__, BACKENDS, config.detector.backend)(config)
