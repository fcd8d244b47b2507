"""The one processing path shared by the nodes, replay and the CLI.

perception: Frame -> DetectionSet (detector)
Later stages (scene description, reinforcement, alerts) are added as further stages of
the same objects, so a node, `mr-mllm replay` and `mr-mllm describe` cannot drift apart.
"""

from __future__ import annotations

import time

from .config import Config
from .detection import Detector, create_detector
from .types import DetectionSet, Frame


class PerceptionPipeline:
    """Frame in, DetectionSet out, with per-stage timings (ms) including 'total'."""

    def __init__(self, config: Config, detector: Detector | None = None):
        self.config = config
        self.detector = detector if detector is not None else create_detector(config)

    def detect(self, frame: Frame) -> DetectionSet:
        t0 = time.perf_counter()
        result = self.detector.detect(frame)
        timings = dict(result.timings_ms)
        timings['total'] = (time.perf_counter() - t0) * 1e3
        return result.with_detections(result.detections, timings_ms=timings)

    def update_config(self, config: Config) -> None:
        """Apply run-time changeable settings (thresholds, class filter) to the next frame."""
        self.config = config
        self.detector.settings = config.detector

    def close(self) -> None:
        self.detector.close()
