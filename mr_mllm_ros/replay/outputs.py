"""What a replay writes into its output folder, and how it stays valid when killed.

`results.jsonl` is the source of truth: one JSON object per processed frame (decoded or
not), appended with ONE `os.write` per line on an O_APPEND descriptor, so a killed run
leaves whole lines only (a torn last line, possible only on power loss, is cut off on the
next start). `detections.csv` and `alerts.csv` are appended the same way, right after
the frame's JSON line, and are rebuilt from results.jsonl whenever a run starts (a kill
between the two writes is repaired then). Thumbnails and alert evidence images (thumbs/,
evidence/) are written before their frame's line. The output bags, the Foxglove MCAPs
and alert clips (foxglove/, clips/), report.html and summary.json are derived data:
built from results.jsonl at the end of every run (also after Ctrl-C),
into a temporary name that is then renamed over the previous one. A re-run into the same
folder skips the frames results.jsonl already has (identity: bag, topic, log time,
header stamp).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..core.geometry.json_fields import position_from_json, position_json
from ..core.types import (Alert, Box, Detection, DetectionSet, GroundedPhrase, GroundedText,
                          SceneDescription, Severity, Source)

log = logging.getLogger(__name__)

RESULTS = 'results.jsonl'
DETECTIONS_CSV = 'detections.csv'
ALERTS_CSV = 'alerts.csv'
REPORT = 'report.html'
SUMMARY = 'summary.json'
RUN_FILE = 'run.json'
BAGS_DIR = 'bags'
THUMBS_DIR = 'thumbs'
EVIDENCE_DIR = 'evidence'
FOXGLOVE_DIR = 'foxglove'
CLIPS_DIR = 'clips'
EVIDENCE_DIRS = (EVIDENCE_DIR, FOXGLOVE_DIR, CLIPS_DIR)  # alert evidence, Foxglove, clips

DETECTION_COLUMNS = ('bag', 'topic', 'log_time_ns', 'stamp_ns', 'frame_id', 'set', 'index',
                     'class_id', 'class_name', 'score', 'x1', 'y1', 'x2', 'y2', 'track_id',
                     'source', 'verified', 'original_class_name', 'original_score')
ALERT_COLUMNS = ('bag', 'topic', 'log_time_ns', 'stamp_ns', 'frame_id', 'severity', 'code',
                 'rule', 'raised_by', 'message', 'objects')

FrameKey = tuple[str, str, int, 'int | None']


def frame_key(record: dict) -> FrameKey:
    """A frame's identity: (bag path, topic, log time, header stamp)."""
    return (record['bag'], record['topic'], record['log_time_ns'], record.get('stamp_ns'))


# ---------------------------------------------------------------- core types <-> JSON

def detection_json(d: Detection) -> dict:
    return {'class_id': int(d.class_id), 'class_name': d.class_name, 'score': float(d.score),
            'box': [float(d.box.x1), float(d.box.y1), float(d.box.x2), float(d.box.y2)],
            'track_id': int(d.track_id), 'source': d.source.value, 'verified': bool(d.verified),
            'original_class_name': d.original_class_name,
            'original_score': None if d.original_score is None else float(d.original_score),
            **position_json(d.position, d.position_spread), **_looks_json(d)}


def _looks_json(d: Detection | DetectionSet) -> dict:
    """The looker's labels (and a person's posture) when it looked: keys only then."""
    out = {'looks_like': [[n, float(p)] for n, p in d.looks_like]} if d.looks_like else {}
    if getattr(d, 'posture', ''):
        out.update(posture=d.posture, posture_score=float(d.posture_score))
    return out


def _looks_from_json(j: dict) -> tuple[tuple[str, float], ...]:
    return tuple((str(n), float(p)) for n, p in j.get('looks_like', ()))


def detection_from_json(j: dict) -> Detection:  # no 'position' key: no position (no depth)
    return Detection(j['class_id'], j['class_name'], j['score'], Box(*j['box']), j['track_id'],
                     Source(j['source']), j['verified'], j['original_class_name'],
                     j['original_score'], *position_from_json(j),
                     looks_like=_looks_from_json(j), posture=j.get('posture', ''),
                     posture_score=j.get('posture_score', 0.0))


def _timings(timings: Any) -> dict:
    return {str(k): float(v) for k, v in dict(timings or {}).items()}


def detection_set_json(ds: DetectionSet) -> dict:
    return {'model_name': ds.model_name, 'image_width': int(ds.image_width),
            'image_height': int(ds.image_height),
            'items': [detection_json(d) for d in ds.detections],
            'timings_ms': _timings(ds.timings_ms), **_looks_json(ds)}


def detection_set_from_json(j: dict, stamp_ns: int, frame_id: str) -> DetectionSet:
    return DetectionSet(tuple(detection_from_json(d) for d in j['items']), j['image_width'],
                        j['image_height'], stamp_ns, frame_id, j['model_name'],
                        j.get('timings_ms', {}), looks_like=_looks_from_json(j))


def phrases_json(phrases: Iterable[GroundedPhrase]) -> list:
    return [{'text': p.text, 'start': int(p.start), 'end': int(p.end),
             'objects': [int(i) for i in p.indices]} for p in phrases]


def phrases_from_json(j: list) -> tuple[GroundedPhrase, ...]:
    return tuple(GroundedPhrase(p['text'], p['start'], p['end'], tuple(p['objects']))
                 for p in j)


def description_json(sd: SceneDescription) -> dict:
    gt = sd.grounded_text
    return {'text': gt.text, 'raw_text': gt.raw_text, 'grounded': bool(gt.grounded),
            'problems': list(gt.problems), 'phrases': phrases_json(gt.phrases),
            'objects': [detection_json(d) for d in sd.detections.detections],
            'detector_model': sd.detector_model, 'mllm_model': sd.mllm_model,
            'fusion_adapter': sd.fusion_adapter, 'prompt_tokens': int(sd.prompt_tokens),
            'generated_tokens': int(sd.generated_tokens), 'timings_ms': _timings(sd.timings_ms)}


def description_from_json(j: dict, stamp_ns: int, frame_id: str) -> SceneDescription:
    ds = DetectionSet(tuple(detection_from_json(d) for d in j['objects']), 0, 0, stamp_ns,
                      frame_id, j['detector_model'])
    gt = GroundedText(j['text'], j['raw_text'], phrases_from_json(j['phrases']),
                      j['grounded'], tuple(j.get('problems', ())))
    return SceneDescription(gt, ds, j['detector_model'], j['mllm_model'], j['fusion_adapter'],
                            j['prompt_tokens'], j['generated_tokens'], j.get('timings_ms', {}))


def alert_json(a: Alert, evidence: str = '') -> dict:
    """`evidence`: the name of the alert's evidence JPEG under evidence/ ('' = none); the
    bytes are not in the JSON."""
    return {'severity': a.severity.name, 'code': a.code, 'rule': a.rule,
            'raised_by': a.raised_by, 'message': a.message, 'stamp_ns': int(a.stamp_ns),
            'frame_id': a.frame_id, 'objects': [detection_json(d) for d in a.detections],
            'phrases': phrases_json(a.phrases),
            'window_stamps_ns': [int(t) for t in a.window_stamps_ns],
            'values': [[str(k), str(v)] for k, v in a.values], 'rationale': a.rationale,
            'evidence': evidence}


def alert_from_json(j: dict, evidence_dir: Path | None = None) -> Alert:
    """The Alert of alert_json; its evidence JPEG is read from `evidence_dir` when given."""
    jpeg = b''
    if evidence_dir is not None and j.get('evidence'):
        path = evidence_dir / j['evidence']
        jpeg = path.read_bytes() if path.is_file() else b''
    return Alert(Severity[j['severity']], j['code'], j['rule'], j['raised_by'], j['message'],
                 j['stamp_ns'], j['frame_id'],
                 tuple(detection_from_json(d) for d in j['objects']),
                 phrases_from_json(j['phrases']), tuple(j.get('window_stamps_ns', ())),
                 tuple((k, v) for k, v in j.get('values', ())), j.get('rationale', ''), jpeg)


def alerts_json(record: dict, alerts: Iterable[Alert]) -> tuple[list[dict], dict[str, bytes]]:
    """A frame's alerts as JSON, and their evidence files (name under evidence/ -> JPEG),
    named after the frame's identity."""
    stem = thumb_name(record).rsplit('.', 1)[0]
    out, files = [], {}
    for k, a in enumerate(alerts):
        name = f'{stem}_{k}.jpg' if a.evidence_jpeg else ''
        if name:
            files[name] = a.evidence_jpeg
        out.append(alert_json(a, name))
    return out, files


def strip_timings(obj: Any) -> Any:
    """`obj` without any `timings_ms` entry (what differs between two identical runs)."""
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items() if k != 'timings_ms'}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    return obj


# ------------------------------------------------------------------ append-safe files

def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:  # one write for a regular file; the loop only guards short writes
        n = os.write(fd, view)
        view = view[n:]


class Appender:
    """A file appended to in whole lines: one os.write per call (O_APPEND)."""

    def __init__(self, path: Path, header: str = ''):
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if new and header:
            _write_all(self.fd, header.encode())

    def write(self, text: str) -> None:
        if text:
            _write_all(self.fd, text.encode('utf-8'))

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(',', ':'))


def json_line(record: dict) -> str:
    return _ENCODER.encode(record) + '\n'


def repair_results(path: Path) -> int:
    """Cut a torn last line (a write interrupted by a power loss); returns bytes cut."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, 'rb+') as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b'\n':
            return 0
        # Find the last newline, scanning back in blocks.
        pos = size
        keep = 0
        while pos > 0:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            i = block.rfind(b'\n')
            if i >= 0:
                keep = pos + i + 1
                break
        f.truncate(keep)
    log.warning('%s: cut a torn last line (%d bytes) left by an interrupted run', path,
                size - keep)
    return size - keep


def iter_results(path: Path) -> Iterator[dict]:
    """Records of results.jsonl in file order; an unparsable line is skipped with a
    warning (it cannot come from this writer, but the file may have been edited)."""
    if not path.exists():
        return
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            if not line.endswith('\n'):
                break  # torn tail: not a finished frame
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                log.warning('%s line %d is not JSON (%s); ignored', path, n, e)


def done_frames(path: Path) -> Counter:
    """How many times each frame key is already in results.jsonl."""
    return Counter(frame_key(r) for r in iter_results(path))


# ------------------------------------------------------------------------------ CSV

def _csv_text(rows: list) -> str:
    if not rows:
        return ''
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator='\n')
    for row in rows:
        w.writerow(['' if v is None else v for v in row])
    return buf.getvalue()


def detection_rows(record: dict) -> list[list]:
    rows = []
    base = [record['bag'], record['topic'], record['log_time_ns'], record.get('stamp_ns'),
            record.get('frame_id', '')]
    for which in ('detections', 'refined'):
        ds = record.get(which)
        if not ds:
            continue
        for i, d in enumerate(ds['items']):
            rows.append(base + [which, i, d['class_id'], d['class_name'], d['score'],
                                *d['box'], d['track_id'], d['source'], d['verified'],
                                d['original_class_name'], d['original_score']])
    return rows


def alert_rows(record: dict) -> list[list]:
    base = [record['bag'], record['topic'], record['log_time_ns'], record.get('stamp_ns'),
            record.get('frame_id', '')]
    return [base + [a['severity'], a['code'], a['rule'], a['raised_by'], a['message'],
                    '; '.join(f'obj{i} {d["class_name"]} {d["score"]:.2f}'
                              for i, d in enumerate(a['objects']))]
            for a in record.get('alerts', ())]


def rebuild_csvs(out: Path) -> None:
    """detections.csv and alerts.csv from results.jsonl (atomic replace)."""
    targets = ((DETECTIONS_CSV, DETECTION_COLUMNS, detection_rows),
               (ALERTS_CSV, ALERT_COLUMNS, alert_rows))
    tmp = {name: out / f'.{name}.tmp' for name, _, _ in targets}
    files = {name: open(tmp[name], 'w', encoding='utf-8', newline='')
             for name, _, _ in targets}
    try:
        for name, columns, _ in targets:
            files[name].write(_csv_text([columns]))
        for record in iter_results(out / RESULTS):
            for name, _, rows in targets:
                files[name].write(_csv_text(rows(record)))
    finally:
        for f in files.values():
            f.close()
    for name, _, _ in targets:
        os.replace(tmp[name], out / name)


class OutputWriter:
    """Appends one frame at a time to results.jsonl and the two CSVs; stores thumbnails."""

    def __init__(self, out: Path):
        self.out = out
        (out / THUMBS_DIR).mkdir(parents=True, exist_ok=True)
        self.results = Appender(out / RESULTS)
        self.detections = Appender(out / DETECTIONS_CSV, _csv_text([DETECTION_COLUMNS]))
        self.alerts = Appender(out / ALERTS_CSV, _csv_text([ALERT_COLUMNS]))
        self.written = 0

    def write(self, record: dict, thumbnail: bytes | None = None,
              evidence: dict[str, bytes] | None = None) -> None:
        if thumbnail:
            write_atomic(self.out / THUMBS_DIR / thumb_name(record), thumbnail)
        for name, jpeg in (evidence or {}).items():
            (self.out / EVIDENCE_DIR).mkdir(exist_ok=True)
            write_atomic(self.out / EVIDENCE_DIR / name, jpeg)
        self.results.write(json_line(record))  # the frame counts as done from here on
        self.detections.write(_csv_text(detection_rows(record)))
        self.alerts.write(_csv_text(alert_rows(record)))
        self.written += 1

    def close(self) -> None:
        for a in (self.results, self.detections, self.alerts):
            a.close()


def thumb_name(record: dict) -> str:
    import hashlib
    key = '|'.join(str(v) for v in frame_key(record))
    return hashlib.sha1(key.encode()).hexdigest()[:20] + '.jpg'


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, (json.dumps(obj, indent=1, ensure_ascii=False) + '\n').encode())


# ------------------------------------------------------------------------ output bags

def result_namespace(topics: Iterable[str]) -> dict[str, str]:
    """Input image topic -> namespace of its result topics: the topic without its last
    name (and without a trailing `compressed`), e.g. /front/image_raw -> /front; topics
    that would share a namespace keep their full name instead."""
    def ns(topic: str) -> str:
        parts = [p for p in topic.strip('/').split('/') if p]
        if parts and parts[-1] == 'compressed':
            parts = parts[:-1]
        return '/' + '/'.join(parts[:-1]) if len(parts) > 1 else ''
    topics = sorted(set(topics))
    first = {t: ns(t) for t in topics}
    taken = Counter(first.values())
    return {t: first[t] if taken[first[t]] == 1 else '/' + t.strip('/') for t in topics}


def output_bag_names(bags: Iterable[str]) -> dict[str, str]:
    """Input bag path -> folder name under bags/ (its own name; _2, _3 on collisions)."""
    names: dict[str, str] = {}
    used: Counter = Counter()
    for bag in sorted(set(bags)):
        p = Path(bag)
        base = (p.stem if p.is_file() or p.suffix in ('.db3', '.mcap') else p.name) or 'bag'
        used[base] += 1
        names[bag] = base if used[base] == 1 else f'{base}_{used[base]}'
    return names


def cleanup_partial(out: Path) -> None:
    """Remove what an interrupted finalisation left (temporary bag folders, tmp files)."""
    for name in (f'.{FOXGLOVE_DIR}.tmp', f'.{CLIPS_DIR}.tmp'):
        if (out / name).exists():
            shutil.rmtree(out / name)
    for name in (f'.{BAGS_DIR}.tmp', f'.{BAGS_DIR}.old'):
        if (out / name).exists():
            if name.endswith('.old') and not (out / BAGS_DIR).exists():
                os.replace(out / name, out / BAGS_DIR)  # died between the two renames
            else:
                shutil.rmtree(out / name)
    for tmp in out.glob('.*.tmp'):
        if tmp.is_file():
            tmp.unlink()
