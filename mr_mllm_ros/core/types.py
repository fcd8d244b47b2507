"""Plain data types shared by every stage: frames, detections, grounded text, alerts.

All are frozen dataclasses (safe to hand between threads) with no ROS dependency;
conversions to and from messages live in mr_mllm_ros.ros.
Boxes are in image pixels, (x1, y1) top-left, (x2, y2) bottom-right, x to the right.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes: the project's one IoU."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
             + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter)
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in pixels, corners (x1, y1) <= (x2, y2)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @classmethod
    def from_center_size(cls, cx: float, cy: float, w: float, h: float) -> 'Box':
        return cls(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)

    @property
    def width(self) -> float:
        return max(0.0, self.x2 - self.x1)

    @property
    def height(self) -> float:
        return max(0.0, self.y2 - self.y1)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)

    def clip(self, width: int, height: int) -> 'Box':
        """The part of the box inside a width x height image."""
        return Box(min(max(self.x1, 0.0), width), min(max(self.y1, 0.0), height),
                   min(max(self.x2, 0.0), width), min(max(self.y2, 0.0), height))

    def corners(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    def iou(self, other: 'Box') -> float:
        return box_iou(self.corners(), other.corners())

    def overlap_share(self, other: 'Box') -> float:
        """Share of the smaller box's area that lies inside the other one (a box drawn
        inside another: a duplicate of one object, or what a crop is also about)."""
        ix = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        smaller = min(self.area, other.area)
        return ix * iy / smaller if smaller > 0 else 0.0

    def normalized_1000(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Corners scaled to 0..1000 (the integer box format of the prompts, as in ChatRex
        and Qwen-VL): resolution-independent and short in tokens."""
        sx, sy = 1000.0 / max(width, 1), 1000.0 / max(height, 1)
        b = self.clip(width, height)
        return (round(b.x1 * sx), round(b.y1 * sy), round(b.x2 * sx), round(b.y2 * sy))


class Source(str, enum.Enum):
    """Which side of the mutual reinforcement produced a detection."""

    DETECTOR = 'detector'
    MLLM = 'mllm'
    #: named by the looker (core.looking): what the whole frame shows and no box explains
    LOOKER = 'looker'


@dataclass(frozen=True)
class Detection:
    class_id: int
    class_name: str
    score: float
    box: Box
    track_id: int = -1
    source: Source = Source.DETECTOR
    verified: bool = False
    # The detector's own label and score when the MLLM changed them; None = unchanged.
    original_class_name: str | None = None
    original_score: float | None = None
    # Where it is (core.geometry): (x, y, z) in metres in the camera's optical frame (the
    # DetectionSet's frame_id; x right, y down, z forward) from aligned depth, and the
    # spread (m) of the depth inside its box; None = no position (no depth, or too few
    # valid depth pixels).
    position: tuple[float, float, float] | None = None
    position_spread: float = 0.0
    # What the looker (core.looking, in the reasoning step) saw in the box's crop: its top
    # ImageNet labels (short name, probability), best first; () = not looked at. The
    # posture of a person ('upright' | 'sitting' | 'lying', '' = not estimated) and the
    # weakest keypoint score it rests on.
    looks_like: tuple[tuple[str, float], ...] = ()
    posture: str = ''
    posture_score: float = 0.0

    def replace(self, **changes) -> 'Detection':
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Frame:
    """One camera image. `image` is (H, W, 3) uint8 RGB, C-contiguous (see core.images)."""

    image: np.ndarray
    stamp_ns: int
    frame_id: str
    camera: str = ''

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class DetectionSet:
    """All detections of one frame; `detections[i]` is the object prompts call <obj{i}>."""

    detections: tuple[Detection, ...]
    image_width: int
    image_height: int
    stamp_ns: int = 0
    frame_id: str = ''
    model_name: str = ''
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    #: what the looker saw in the whole frame (short name, probability), best first
    looks_like: tuple[tuple[str, float], ...] = ()

    def __len__(self) -> int:
        return len(self.detections)

    def __iter__(self):
        return iter(self.detections)

    def __getitem__(self, i: int) -> Detection:
        return self.detections[i]

    def class_names(self) -> set[str]:
        return {d.class_name for d in self.detections}

    def with_detections(self, detections: Iterable[Detection], **changes) -> 'DetectionSet':
        return dataclasses.replace(self, detections=tuple(detections), **changes)


@dataclass(frozen=True)
class GroundedPhrase:
    """A span [start, end) of a plain text, linked to detection indices (ChatRex <objN>)."""

    text: str
    start: int
    end: int
    indices: tuple[int, ...]


@dataclass(frozen=True)
class GroundedText:
    """Model output parsed against the grounding grammar (core.reasoning.grounding).

    `grounded` is False when the output did not follow the grammar; `text` is then the
    output with stray markup removed, and `problems` says what was wrong."""

    text: str
    raw_text: str
    phrases: tuple[GroundedPhrase, ...] = ()
    grounded: bool = True
    problems: tuple[str, ...] = ()

    def cited_indices(self) -> set[int]:
        return {i for p in self.phrases for i in p.indices}


@dataclass(frozen=True)
class Generation:
    """What an MLLM backend returns for one request."""

    text: str
    prompt_tokens: int = 0
    generated_tokens: int = 0
    timings_ms: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SceneDescription:
    """A grounded description of one frame; phrase indices refer to `detections`."""

    grounded_text: GroundedText
    detections: DetectionSet
    detector_model: str
    mllm_model: str
    fusion_adapter: str = ''
    prompt_tokens: int = 0
    generated_tokens: int = 0
    timings_ms: Mapping[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.grounded_text.text


class Severity(enum.IntEnum):
    INFO = 0
    WARN = 1
    CRITICAL = 2


@dataclass(frozen=True)
class Alert:
    """A corner case. `detections` are the objects it is about; phrase indices refer to them."""

    severity: Severity
    code: str
    rule: str
    raised_by: str
    message: str
    stamp_ns: int = 0
    frame_id: str = ''
    detections: tuple[Detection, ...] = ()
    phrases: tuple[GroundedPhrase, ...] = ()
    # The proof: stamps of the frames where the condition held in the debounce window
    # (oldest first; the last is stamp_ns), the condition's values as (key, value) pairs,
    # a sentence for people, and the triggering frame as JPEG with its boxes drawn
    # (core.alerts.evidence; empty when no frame was at hand, e.g. a stale camera).
    window_stamps_ns: tuple[int, ...] = ()
    values: tuple[tuple[str, str], ...] = ()
    rationale: str = ''
    evidence_jpeg: bytes = field(default=b'', repr=False)


@dataclass(frozen=True)
class Answer:
    """Answer to a visual question about one frame."""

    question: str
    grounded_text: GroundedText
    detections: DetectionSet
    mllm_model: str
    latency_s: float = 0.0

    @property
    def text(self) -> str:
        return self.grounded_text.text
