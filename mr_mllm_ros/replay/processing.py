"""One replay work unit through the core Pipeline: the per-frame path shared by the serial
run (runner.py) and every Ray worker (ray_fanout.py).

A unit is (bag, image topic, time segment). Each starts with fresh scene state (alert
debounce/cooldown, scene-change memory, reasoning schedule; loaded models are kept), so
its results depend on that unit alone. Per frame: `Pipeline.process(frame, now_s=<log
time in s>)`, the object the nodes run: the bag is reasoned on (core.reasoning.schedule) and
debounced in message time, as it was live. `every` keeps every N-th message of a unit.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

from ..core.images import annotated_jpeg
from ..core.config import Config
from ..core.errors import MrMllmError, reason_key
from ..core.pipeline import Pipeline, StepFailed
from ..core.geometry import check_view, find_depth_topics
from ..core.types import DetectionSet, Frame
from . import outputs as o
from .bag_depth import DepthPairing, PairedDepth
from .bag_reader import NS, BagInfo, ReadLog, decode, header_of, iter_raw

TRACK_IDS_PER_UNIT = 1_000_000

@dataclass(frozen=True)
class Unit:
    bag: str
    topic: str
    start_ns: int | None
    stop_ns: int | None
    segment: int
    estimate: int  # frames expected (progress bar only)


@dataclass
class FrameOutput:
    record: dict
    thumbnail: bytes | None = None
    evidence: dict = field(default_factory=dict)  # evidence/ file name -> alert JPEG


@dataclass
class UnitResult:
    unit: Unit
    outputs: list[FrameOutput]
    problems: list[str]
    messages_read: int


class UnitProcessor:
    """Runs units through one Pipeline (models loaded once; scene state per unit)."""

    def __init__(self, config: Config, *, describe: bool = True, every: int = 1,
                 thumb_side: int = 320, pipeline: Pipeline | None = None):
        self.config = config
        self.every = max(1, int(every))
        self.thumb_side = thumb_side
        self.pipeline = pipeline if pipeline is not None else Pipeline(config,
                                                                       with_mllm=describe)
        self.models = dict(self.pipeline.model_names)

    def close(self) -> None:
        self.pipeline.close()

    def run(self, unit: Unit, info: BagInfo, done: Counter | None = None,
            readlog: ReadLog | None = None) -> Iterator[FrameOutput]:
        """FrameOutputs of the unit's frames that `done` does not already count."""
        done = done if done is not None else Counter()
        readlog = readlog if readlog is not None else ReadLog()
        self.pipeline.reset()
        # Track ids restart per unit, in a range of the unit's own: Ray-identical, unique.
        self.pipeline.perception.reset_tracking(unit.segment * TRACK_IDS_PER_UNIT + 1)
        previous_classes: frozenset | None = None
        index = -1
        # An RGB-D camera's depth and camera_info are read in the same pass (bag_depth).
        found = find_depth_topics(info.topics).get(unit.topic)
        pairing = DepthPairing(found, self.config.depth, self.config.max_image_pixels) \
            if found is not None else None
        raws = iter_raw(info, [unit.topic, *(pairing.input_topics if pairing else ())],
                        unit.start_ns, unit.stop_ns, readlog)
        for raw in pairing.pair(raws, header_of) if pairing is not None else raws:
            index += 1
            if index % self.every:
                continue
            head = header_of(raw.data)
            key = (info.path, raw.topic, raw.log_time_ns, head[0] if head else None)
            if done.get(key, 0) > 0:
                done[key] -= 1
                continue
            depth = pairing.take(head[0] if head else None) if pairing is not None else None
            output = self.process(info.path, raw, head, previous_classes, depth)
            if output.record['status'] == 'ok':
                previous_classes = frozenset(
                    d['class_name'] for d in output.record['detections']['items'])
            yield output

    def process(self, bag: str, raw, head: tuple[int, str] | None,
                previous_classes: frozenset | None,
                depth: PairedDepth | None = None) -> FrameOutput:
        """One message: decode, Pipeline.process, the results.jsonl record (+ thumbnail
        when something happened). `head`: header_of(raw.data), the frame's identity;
        `depth`: its paired depth (positions), when the camera has one."""
        t0 = time.perf_counter()
        msg = decode(raw, max_pixels=self.config.max_image_pixels)
        decode_ms = (time.perf_counter() - t0) * 1e3
        record = {'bag': bag, 'topic': raw.topic, 'log_time_ns': raw.log_time_ns,
                  'stamp_ns': head[0] if head else None, 'frame_id': msg.frame_id,
                  'msgtype': raw.msgtype, 'encoding': msg.encoding, 'width': msg.width,
                  'height': msg.height}
        if not msg.ok:
            record.update(status='skipped', stage='decode', error=msg.error,
                          reason=reason_key(msg.error), timings_ms={'decode': decode_ms})
            return FrameOutput(record)
        if depth is not None and depth.depth is not None:
            try:
                check_view(depth.depth, msg.frame.width, msg.frame.height)
            except MrMllmError as e:
                depth = PairedDepth(None, depth.topic, depth.stamp_ns, str(e))
        if depth is not None:
            record['depth'] = depth.record()
        try:
            result = self.pipeline.process(msg.frame, now_s=raw.log_time_ns / NS,
                                           depth=depth.depth if depth is not None else None)
        except MrMllmError as e:  # a backend failure on this frame: count it, go on
            record.update(status='skipped', stage='pipeline', error=str(e),
                          reason=reason_key(str(e)), timings_ms={'decode': decode_ms},
                          trigger=e.trigger if isinstance(e, StepFailed) else None)
            return FrameOutput(record)
        described = result.description is not None
        alerts, evidence = o.alerts_json(record, result.alerts)
        record.update(
            status='ok', models=self.models,
            detections=o.detection_set_json(result.detections),
            refined=o.detection_set_json(result.refined)
            if described and result.refined is not None else None,
            description=o.description_json(result.description) if described else None,
            alerts=alerts, trigger=result.trigger,
            timings_ms={'decode': decode_ms, **result.timings_ms})
        if result.looker_counts:  # the looker's votes in this frame's reasoning step
            record['looker'] = dict(result.looker_counts)
        classes = frozenset(d.class_name for d in result.detections)
        thumb = None
        if result.alerts or described or classes != previous_classes:
            shown = result.refined if described and result.refined is not None \
                else result.detections
            flagged = {d for a in result.alerts for d in a.detections}
            highlight = {i for i, d in enumerate(shown) if d in flagged}
            thumb = thumbnail(msg.frame, shown, highlight, self.thumb_side)
        return FrameOutput(record, thumb, evidence)

    def run_unit(self, unit: Unit, info: BagInfo, done: Counter | None = None) -> UnitResult:
        readlog = ReadLog()
        outs = list(self.run(unit, info, done, readlog))
        return UnitResult(unit, outs, readlog.problems, readlog.messages_read)


def thumbnail(frame: Frame, ds: DetectionSet, highlight: set[int], side: int) -> bytes:
    """JPEG of the frame scaled to `side` px on its longer side, boxes drawn (highlighted:
    the objects an alert is about)."""
    return annotated_jpeg(frame.image, ds, highlight, max_side=side, quality=80,
                          enlarge=True)
