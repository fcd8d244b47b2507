"""Replay orchestration: plan work units, run them (processing.py; serially or as Ray
tasks, ray_fanout.py), write the outputs.

Work is split into *units*: one (bag, image topic, time segment). Units are processed in
a fixed order - bags by path, then topic, then time - each with fresh scene state (alert
debounce/cooldown, scene-change memory, reasoning schedule; loaded models are kept), so a
unit's results depend on that unit alone. That is what makes the Ray fan-out write a
results.jsonl identical to the serial run's, timings aside; it also means alert debounce
and the schedule start afresh at every segment boundary (`segment_s`; 0 = never split)
and at every topic, as they do in a node per camera.

MLLM reasoning follows the live schedule (core.reasoning.schedule) in message time: a step on
change, at `scene.description_rate_hz`, never closer than the minimum interval; every
record says what triggered its step (`trigger`), and summary.json, run.json and the
report count them (`mllm_calls`). `scene.describe_every_frame` (`--describe-every-frame`)
reasons on every frame instead. A resumed unit's schedule starts again at the resume point.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from ..core.config import Config
from ..core.errors import BagError, MrMllmError
from ..core.pipeline import Pipeline
from ..core.reasoning.schedule import TRIGGERS
from ..core.runtime.progress import progress
from . import outputs as o
from .bag_reader import NS, BagInfo, ReadLog, open_bag
from .memory_db import write_memory_db
from .processing import Unit, UnitProcessor, UnitResult
from .ray_fanout import run_units_on_ray
from .result_bags import write_result_bags

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay and how; the defaults here are the command line's too."""

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
    progress: bool | None = None  # None: a bar on a terminal, else a line per N frames

    def fingerprint(self, config: Config) -> dict:
        """What must not change between a run and its resume in the same folder."""
        return {'config': config.as_dict(), 'describe': self.describe, 'every': self.every,
                'start_s': self.start_s, 'end_s': self.end_s, 'segment_s': self.segment_s}


#: ReplayOptions' defaults by field name (for the command line).
OPTION_DEFAULTS = {f.name: f.default for f in fields(ReplayOptions)}


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
    mllm_calls: dict = field(default_factory=dict)  # trigger -> reasoning steps
    looker: dict = field(default_factory=dict)  # the looker's votes: kind -> boxes


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
        fp = json.loads(json.dumps(fingerprint))
        previous = json.loads(run_file.read_text())
        changed = sorted(_diff({k: previous.get(k) for k in fp}, fp))
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
        bar = _progress_bar(sum(u.estimate for u in units), options.progress)
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
    triggers: Counter = Counter()  # MLLM reasoning steps by what started them
    looker: Counter = Counter()  # the looker's votes over the reasoning steps
    for rec in o.iter_results(out / o.RESULTS):
        if rec['bag'] not in storages:  # a bag of an earlier run into this folder
            try:
                from .bag_reader import detect_storage
                storages[rec['bag']] = detect_storage(rec['bag'])
            except MrMllmError:
                storages[rec['bag']] = 'sqlite3'
        if rec['bag'] in bag_reports:
            result.frames += 1
            if rec.get('trigger'):
                triggers[rec['trigger']] += 1
            looker.update(rec.get('looker') or {})
            if rec.get('status') == 'ok':
                result.frames_ok += 1
            else:
                result.skipped[rec.get('reason', '?')] = \
                    result.skipped.get(rec.get('reason', '?'), 0) + 1
    result.result_bags = write_result_bags(out, storages)
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
    result.mllm_calls = {k: triggers.get(k, 0) for k in (*TRIGGERS, 'question')}
    result.looker = dict(looker)
    run_file = out / o.RUN_FILE
    if run_file.exists():
        o.write_json_atomic(run_file, {**json.loads(run_file.read_text()),
                                       'mllm_calls': result.mllm_calls})
    summary = {'bags': result.bags, 'frames': result.frames, 'frames_ok': result.frames_ok,
               'mllm_calls': result.mllm_calls, 'looker': result.looker,
               'new_frames': result.new_frames, 'resumed_frames': result.resumed_frames,
               'skipped': result.skipped, 'interrupted': result.interrupted,
               'options': {'topics': options.topics, 'start_s': options.start_s,
                           'end_s': options.end_s, 'every': options.every,
                           'describe': options.describe, 'segment_s': options.segment_s}}
    o.write_json_atomic(out / o.SUMMARY, summary)
    write_report(out, summary)


#: Without a terminal, the progress is one log line per this many frames.
PROGRESS_LINE_FRAMES = 1000


def _progress_bar(total: int, enabled: bool | None):
    """A tqdm bar (frames, rate, ETA) when enabled, or by default on a terminal; by
    default elsewhere, a log line per PROGRESS_LINE_FRAMES frames; `enabled` False:
    nothing."""
    return progress(total, 'replay', 'frame', log, enabled, PROGRESS_LINE_FRAMES,
                    approximate=True)
