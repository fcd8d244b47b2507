"""Replay orchestration: plan work units, run the core Pipeline on each frame, write.

Work is split into *units*: one (bag, image topic, time segment). Units are processed in
a fixed order - bags by path, then topic, then time - each with fresh scene state (alert
debounce/cooldown, scene-change memory; loaded models are kept), so a unit's results
depend on that unit alone. That is what makes the Ray fan-out (ray_fanout.py, one task
per unit) write a results.jsonl identical to the serial run's, timings aside; it also
means alert debounce starts afresh at every segment boundary (`segment_s`, 300 s by
default; 0 = never split) and at every topic, as it does in a node per camera.

Per frame: `Pipeline.process(frame, now_s=<log time in s>)`, the same object the nodes
run, so the bag debounces as it did live. `every` keeps every N-th message of a unit.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2

from ..core.annotate import draw_detections
from ..core.config import Config
from ..core.errors import BagError, MrMllmError
from ..core.pipeline import Pipeline, ScenePipeline
from ..core.types import Box, DetectionSet, Frame
from . import outputs as o
from .bag_reader import NS, BagInfo, ReadLog, decode, header_of, iter_raw, open_bag, reason_key
from .memory_db import write_memory_db

log = logging.getLogger(__name__)
TRACK_IDS_PER_UNIT = 1_000_000


@dataclass(frozen=True)
class ReplayOptions:
    bags: tuple[str, ...]
    out: str
    topics: tuple[str, ...] | None = None  # None: every Image/CompressedImage topic
    start_s: float | None = None  # offsets from each bag's first message
    end_s: float | None = None
    every: int = 1
    describe: bool = True
    segment_s: float = 300.0
    thumb_side: int = 320
    restart: bool = False
    progress: bool | None = None  # None: when stderr is a terminal

    def fingerprint(self, config: Config) -> dict:
        """What must not change between a run and its resume in the same folder."""
        return {'config': config.as_dict(), 'describe': self.describe, 'every': self.every,
                'start_s': self.start_s, 'end_s': self.end_s, 'segment_s': self.segment_s}


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


@dataclass
class ReplayResult:
    out: Path
    frames: int = 0          # records of the replayed bags in results.jsonl
    frames_ok: int = 0
    new_frames: int = 0      # processed by this run
    resumed_frames: int = 0  # already in results.jsonl, skipped
    skipped: dict = field(default_factory=dict)  # reason -> count (whole results)
    problems: list[str] = field(default_factory=list)
    bags: list[dict] = field(default_factory=list)
    result_bags: dict = field(default_factory=dict)
    interrupted: bool = False
    wall_s: float = 0.0


# ------------------------------------------------------------------------------ plan

def plan_units(infos: list[BagInfo], options: ReplayOptions) -> list[Unit]:
    units: list[Unit] = []
    for info in sorted(infos, key=lambda i: i.path):
        if info.start_ns is None or info.end_ns is None:
            continue  # no messages
        lo = info.start_ns + round(options.start_s * NS) if options.start_s is not None \
            else info.start_ns
        hi = info.start_ns + round(options.end_s * NS) if options.end_s is not None \
            else info.end_ns
        hi = min(hi, info.end_ns)
        if hi <= lo:
            continue
        seg = round(options.segment_s * NS) if options.segment_s > 0 else 0
        bounds = [(lo, hi)] if not seg or hi - lo <= seg else \
            [(t, min(t + seg, hi)) for t in range(lo, hi, seg)]
        share = (hi - lo) / max(info.end_ns - info.start_ns, 1)
        for topic in info.image_topics(options.topics):
            count = info.topics[topic].count or 0
            for k, (a, b) in enumerate(bounds):
                est = count * share * (b - a) / max(hi - lo, 1) / options.every
                units.append(Unit(info.path, topic, a, b, k, max(1, round(est))))
    return units


# ------------------------------------------------------------------------ processing

class UnitProcessor:
    """Runs units through one Pipeline (models loaded once; scene state per unit). The
    same class runs in the serial loop and inside every Ray worker."""

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

    def _fresh_scene_state(self) -> None:
        # A new ScenePipeline on the same MLLM backend: alert debounce, cooldowns and the
        # scene-change memory start empty; no model is reloaded.
        old = self.pipeline.scene
        backend = old.reasoner.backend if old.reasoner is not None else None
        self.pipeline.scene = ScenePipeline(old.config, backend=backend)

    def run(self, unit: Unit, info: BagInfo, done: Counter | None = None,
            readlog: ReadLog | None = None) -> Iterator[FrameOutput]:
        """FrameOutputs of the unit's frames that `done` does not already count."""
        done = done if done is not None else Counter()
        readlog = readlog if readlog is not None else ReadLog()
        self._fresh_scene_state()
        # Track ids restart per unit, in a range of the unit's own: Ray-identical, unique.
        self.pipeline.perception.reset_tracking(unit.segment * TRACK_IDS_PER_UNIT + 1)
        previous_classes: frozenset | None = None
        index = -1
        for raw in iter_raw(info, [unit.topic], unit.start_ns, unit.stop_ns, readlog):
            index += 1
            if index % self.every:
                continue
            head = header_of(raw.data)
            key = (info.path, raw.topic, raw.log_time_ns, head[0] if head else None)
            if done.get(key, 0) > 0:
                done[key] -= 1
                continue
            output = self.process(info.path, raw, head, previous_classes)
            if output.record['status'] == 'ok':
                previous_classes = frozenset(
                    d['class_name'] for d in output.record['detections']['items'])
            yield output

    def process(self, bag: str, raw, head: tuple[int, str] | None,
                previous_classes: frozenset | None) -> FrameOutput:
        """One message: decode, Pipeline.process, the results.jsonl record (+ thumbnail
        when something happened). `head`: header_of(raw.data), the frame's identity."""
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
        try:
            result = self.pipeline.process(msg.frame, now_s=raw.log_time_ns / NS)
        except MrMllmError as e:  # a backend failure on this frame: count it, go on
            record.update(status='skipped', stage='pipeline', error=str(e),
                          reason=reason_key(str(e)), timings_ms={'decode': decode_ms})
            return FrameOutput(record)
        described = result.description is not None
        alerts, evidence = o.alerts_json(record, result.alerts)
        record.update(
            status='ok', models=self.models,
            detections=o.detection_set_json(result.detections),
            refined=o.detection_set_json(result.refined)
            if described and result.refined is not None else None,
            description=o.description_json(result.description) if described else None,
            alerts=alerts,
            timings_ms={'decode': decode_ms, **result.timings_ms})
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
    h, w = frame.image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA if scale < 1
                       else cv2.INTER_NEAREST)
    scaled = ds.with_detections(d.replace(box=Box(d.box.x1 * scale, d.box.y1 * scale,
                                                  d.box.x2 * scale, d.box.y2 * scale))
                                for d in ds)
    drawn = draw_detections(small, scaled, highlight or None)
    ok, jpg = cv2.imencode('.jpg', drawn[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
    return jpg.tobytes() if ok else b''


# ---------------------------------------------------------------------------- driver

class _Lock:
    """One replay at a time per output folder (a second one would interleave lines)."""

    def __init__(self, out: Path):
        self.f = open(out / '.lock', 'w')
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.f.close()
            raise BagError(f'another replay is writing into {out}') from None

    def release(self) -> None:
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def _clear_outputs(out: Path) -> None:
    for name in (o.RESULTS, o.DETECTIONS_CSV, o.ALERTS_CSV, o.REPORT, o.SUMMARY, o.RUN_FILE):
        (out / name).unlink(missing_ok=True)
    for name in (o.BAGS_DIR, o.THUMBS_DIR, *o.EVIDENCE_DIRS):
        if (out / name).exists():
            shutil.rmtree(out / name)


def _check_fingerprint(out: Path, fingerprint: dict) -> None:
    run_file = out / o.RUN_FILE
    has_results = (out / o.RESULTS).exists() and (out / o.RESULTS).stat().st_size > 0
    if has_results and run_file.exists():
        previous = json.loads(run_file.read_text())
        fp = json.loads(json.dumps(fingerprint))
        changed = sorted(_diff(previous, fp))
        if changed:
            raise BagError(
                f'{out} holds results of a run with other settings (changed: '
                f'{", ".join(changed[:6])}); resuming would mix them. Use another --out, '
                'or --restart to replace them')
    o.write_json_atomic(run_file, fingerprint)


def _diff(a, b, prefix: str = '') -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return [d for k in keys for d in _diff(a.get(k), b.get(k), f'{prefix}{k}.')]
    return [] if a == b else [prefix.rstrip('.')]


def run_replay(options: ReplayOptions, config: Config, *, pipeline: Pipeline | None = None,
               ray: dict | None = None,
               on_unit: Callable[[UnitResult], None] | None = None) -> ReplayResult:
    """Replay `options.bags` into `options.out`. `ray`: None = serial in this process,
    else keyword arguments of ray_fanout.run_units_on_ray (address, workers, ...).
    `pipeline`: a ready Pipeline to use (benchmarks inject a stub detector; serial only).
    Ctrl-C finalises what was done (bags, report) and sets `interrupted`."""
    t_start = time.monotonic()
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = _Lock(out)
    result = ReplayResult(out)
    try:
        o.cleanup_partial(out)
        if options.restart:
            _clear_outputs(out)
        _check_fingerprint(out, options.fingerprint(config))
        o.repair_results(out / o.RESULTS)
        o.rebuild_csvs(out)  # CSVs agree with results.jsonl before we append to both
        done = o.done_frames(out / o.RESULTS)
        infos, bag_reports = [], {}
        for bag in dict.fromkeys(str(Path(b).expanduser().resolve()) for b in options.bags):
            path = bag
            try:
                info = open_bag(bag)
            except MrMllmError as e:
                bag_reports[path] = {'path': path, 'problems': [str(e)], 'reader': 'none'}
                result.problems.append(str(e))
                log.error('%s', e)
                continue
            infos.append(info)
            bag_reports[info.path] = {'path': info.path, 'storage': info.storage,
                                      'reader': info.reader, 'problems': list(info.problems),
                                      'messages_in_bag': info.message_count,
                                      'messages_read': 0,
                                      'image_topics': info.image_topics(options.topics)}
            if options.topics:
                missing = sorted(set(map(_norm, options.topics)) - set(
                    info.image_topics(options.topics)))
                if missing:
                    bag_reports[info.path]['problems'].append(
                        f'no image topic {", ".join(missing)} in this bag')
        units = plan_units(infos, options)
        by_path = {i.path: i for i in infos}
        progress = options.progress if options.progress is not None else sys.stderr.isatty()
        bar = _progress_bar(sum(u.estimate for u in units), progress)
        writer = o.OutputWriter(out)

        def emit(ur: UnitResult) -> None:
            report = bag_reports[ur.unit.bag]
            report['messages_read'] += ur.messages_read
            for p in ur.problems:
                if p not in report['problems']:
                    report['problems'].append(p)
            for fo in ur.outputs:
                writer.write(fo.record, fo.thumbnail, fo.evidence)
            result.new_frames += len(ur.outputs)
            if on_unit is not None:
                on_unit(ur)

        result.resumed_frames = sum(done.values())
        try:
            if ray is not None:
                from .ray_fanout import run_units_on_ray
                run_units_on_ray(units, by_path, config, options, done, emit,
                                 progress=bar, **ray)
            else:
                processor = UnitProcessor(config, describe=options.describe,
                                          every=options.every, thumb_side=options.thumb_side,
                                          pipeline=pipeline)
                try:
                    for unit in units:
                        readlog = ReadLog()
                        for fo in processor.run(unit, by_path[unit.bag], done, readlog):
                            emit(UnitResult(unit, [fo], [], 0))
                            bar.update(1)
                        emit(UnitResult(unit, [], readlog.problems, readlog.messages_read))
                finally:
                    if pipeline is None:
                        processor.close()
        except KeyboardInterrupt:
            result.interrupted = True
            log.warning('interrupted: writing what was processed so far')
        finally:
            bar.close()
            writer.close()
        write_memory_db(out, config.memory)  # before the report: its timeline reads it
        _finalize(out, result, bag_reports, infos, options, config)
    finally:
        lock.release()
    result.wall_s = time.monotonic() - t_start
    return result


def _norm(topic: str) -> str:
    return '/' + topic.strip('/')


def _finalize(out: Path, result: ReplayResult, bag_reports: dict, infos: list[BagInfo],
              options: ReplayOptions, config: Config) -> None:
    """Derived outputs from results.jsonl: output bags, Foxglove MCAPs and alert clips,
    summary.json, report.html."""
    from .foxglove_outputs import write_foxglove_outputs
    from .report import write_report
    storages = {i.path: i.storage for i in infos}
    for rec in o.iter_results(out / o.RESULTS):
        if rec['bag'] not in storages:  # a bag of an earlier run into this folder
            try:
                from .bag_reader import detect_storage
                storages[rec['bag']] = detect_storage(rec['bag'])
            except MrMllmError:
                storages[rec['bag']] = 'sqlite3'
        if rec['bag'] in bag_reports:
            result.frames += 1
            if rec.get('status') == 'ok':
                result.frames_ok += 1
            else:
                result.skipped[rec.get('reason', '?')] = \
                    result.skipped.get(rec.get('reason', '?'), 0) + 1
    result.result_bags = o.write_result_bags(out, storages)
    foxglove = write_foxglove_outputs(out, config.alerts.clip_before_s,
                                      config.alerts.clip_after_s, config.max_image_pixels)
    for path, report in bag_reports.items():
        if path in result.result_bags:
            report['result_bag'] = result.result_bags[path]['path']
            report['result_messages'] = result.result_bags[path]['messages']
        if path in foxglove:
            report['foxglove'] = foxglove[path]
        result.problems += [p for p in report['problems'] if p not in result.problems]
    result.bags = list(bag_reports.values())
    summary = {'bags': result.bags, 'frames': result.frames, 'frames_ok': result.frames_ok,
               'new_frames': result.new_frames, 'resumed_frames': result.resumed_frames,
               'skipped': result.skipped, 'interrupted': result.interrupted,
               'options': {'topics': options.topics, 'start_s': options.start_s,
                           'end_s': options.end_s, 'every': options.every,
                           'describe': options.describe, 'segment_s': options.segment_s}}
    o.write_json_atomic(out / o.SUMMARY, summary)
    write_report(out, summary)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, unit='frame', file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1, desc='replay')
