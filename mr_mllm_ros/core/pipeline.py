"""The one processing path shared by the nodes, replay and the CLI.

perception: Frame -> DetectionSet (detector)
scene:      Frame + DetectionSet -> SceneDescription (core.scene)
A node, `mr-mllm replay` and `mr-mllm describe` call these same objects, so they cannot
drift apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .config import Config
from .detection import Detector, create_detector
from .mllm import MllmBackend
from .scene import SceneReasoner
from .types import DetectionSet, Frame, SceneDescription


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


@dataclass(frozen=True)
class FrameResult:
    """Everything the pipeline produced for one frame."""

    frame: Frame
    detections: DetectionSet
    description: SceneDescription | None = None


class Pipeline:
    """Detection + scene reasoning in one process: `mr-mllm describe`, replay, the demo.
    The nodes split the same stages across perception_node and scene_node."""

    def __init__(self, config: Config, *, detector: Detector | None = None,
                 backend: MllmBackend | None = None, with_mllm: bool = True):
        self.config = config
        self.perception = PerceptionPipeline(config, detector)
        self.scene: SceneReasoner | None = None
        if with_mllm and (backend is not None or config.mllm.backend != 'none'):
            self.scene = SceneReasoner(config, backend)

    @property
    def model_names(self) -> dict[str, str]:
        names = {'detector': self.perception.detector.name}
        if self.scene is not None:
            names['mllm'] = self.scene.model_name
        return names

    def process(self, frame: Frame, describe: bool = True) -> FrameResult:
        detections = self.perception.detect(frame)
        description = self.scene.describe(frame, detections) \
            if describe and self.scene is not None else None
        return FrameResult(frame, detections, description)

    def close(self) -> None:
        self.perception.close()
        if self.scene is not None:
            self.scene.close()
