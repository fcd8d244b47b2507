"""Replay outputs that Foxglove draws: foxglove/<bag>.mcap, foxglove/layout.json and a
short MCAP clip around every alert under clips/.

Derived data like the result bags: rebuilt from results.jsonl at the end of every run.
The frames are read again from the input bags (results.jsonl holds no pixels) and
written as JPEG `foxglove.CompressedImage`; a frame with detections gets a
`foxglove.ImageAnnotations` on the same timestamp (viz.foxglove_messages has the topics),
and one with positioned objects (depth) a `foxglove.SceneUpdate` of them in 3D.
A clip is cut from its bag's MCAP with the `mcap` library: every message logged from
clip_before_s before the alert's frame to clip_after_s after it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from pathlib import Path

from ..core import images
from ..core.errors import MrMllmError
from . import outputs as o
from .bag_reader import ReadLog, decode, header_of, iter_raw, open_bag

log = logging.getLogger(__name__)

FOXGLOVE_DIR, CLIPS_DIR = o.FOXGLOVE_DIR, o.CLIPS_DIR
LAYOUT = 'layout.json'
JPEG_QUALITY = 85
MAX_CLIPS = 1000


def clip_name(record: dict) -> str:
    """clips/ file of the alerts of a frame (they share one clip)."""
    return o.thumb_name(record).rsplit('.', 1)[0] + '.mcap'


def _frame_records(out: Path) -> dict[str, dict[tuple, dict]]:
    """bag -> (topic, log time, stamp) -> record, for decoded frames."""
    by_bag: dict[str, dict[tuple, dict]] = {}
    for r in o.iter_results(out / o.RESULTS):
        if r.get('status') == 'ok':
            by_bag.setdefault(r['bag'], {})[(r['topic'], r['log_time_ns'], r['stamp_ns'])] = r
    return by_bag


def _write_bag_mcap(path: Path, bag: str, records: dict[tuple, dict], namespaces: dict,
                    out: Path, max_pixels: int | None) -> dict:
    """One input bag's frames and results into an MCAP; returns counts."""
    from foxglove import Context, open_mcap

    from ..viz.foxglove_messages import CameraChannels
    info = open_bag(bag)
    context = Context()
    writer = open_mcap(path, allow_overwrite=True, context=context)
    cameras = {topic: CameraChannels(context, namespaces[topic])
               for topic in {k[0] for k in records}}
    counts = {'images': 0, 'annotations': 0, 'scene_updates': 0, 'descriptions': 0,
              'alerts': 0}
    try:
        for raw in iter_raw(info, sorted(cameras), readlog=ReadLog()):
            head = header_of(raw.data)
            record = records.get((raw.topic, raw.log_time_ns, head[0] if head else None))
            if record is None:
                continue  # not processed (--every, --start/--end) or skipped
            msg = decode(raw, max_pixels=max_pixels)
            if not msg.ok:
                continue
            _log_frame(cameras[raw.topic], record, msg.frame, out, counts)
    finally:
        writer.close()
    return counts


def _log_frame(cam, record: dict, frame, out: Path, counts: dict) -> None:
    stamp, frame_id, t = record['stamp_ns'], record['frame_id'], record['log_time_ns']
    stamp = t if stamp is None else stamp
    cam.log_image(images.jpeg(frame.image, JPEG_QUALITY), stamp, frame_id,
                  t)
    counts['images'] += 1
    described = record.get('description') is not None
    shown_json = record['refined'] if described and record.get('refined') is not None \
        else record['detections']
    shown = o.detection_set_from_json(shown_json, stamp, frame_id)
    alerts = [o.alert_from_json(a, out / o.EVIDENCE_DIR) for a in record.get('alerts', ())]
    description = o.description_from_json(record['description'], stamp, frame_id) \
        if described else None
    if len(shown):
        phrases = description.grounded_text.phrases if description is not None else ()
        cam.log_annotations(shown, stamp, t, phrases, alerts)
        counts['annotations'] += 1
        counts['scene_updates'] += cam.log_scene(shown, stamp, t)
    if description is not None:
        cam.log_description(description, t)
        counts['descriptions'] += 1
    if alerts:
        cam.log_alerts(alerts, t)
        counts['alerts'] += len(alerts)


def cut_clip(source: Path, target: Path, start_ns: int, end_ns: int) -> int:
    """Copy the messages of `source` logged in [start_ns, end_ns] into a new MCAP with the
    same schemas and channels; returns the number of messages."""
    from mcap.reader import make_reader

    from .bag_writer import open_mcap_writer
    n = 0
    schemas: dict[int, int] = {}
    channels: dict[int, int] = {}
    with open(source, 'rb') as fin, open(target, 'wb') as fout:
        reader = make_reader(fin)
        writer = open_mcap_writer(fout, 'mr_mllm_ros clip')
        for schema, channel, message in reader.iter_messages(
                starting_at=start_ns, ending_at=end_ns, log_time_order=True):
            if schema is not None and schema.id not in schemas:
                schemas[schema.id] = writer.register_schema(schema.name, schema.encoding,
                                                            schema.data)
            if channel.id not in channels:
                channels[channel.id] = writer.register_channel(
                    channel.topic, channel.message_encoding,
                    schemas.get(channel.schema_id, 0), channel.metadata)
            writer.add_message(channels[channel.id], message.log_time, message.data,
                               message.publish_time, message.sequence)
            n += 1
        writer.finish()
    return n


def write_foxglove_outputs(out: Path, clip_before_s: float, clip_after_s: float,
                           max_pixels: int | None = None) -> dict[str, dict]:
    """foxglove/<bag>.mcap + layout.json and clips/, rebuilt from results.jsonl (replaced
    atomically like bags/). Returns bag path -> {'path', counts..., 'clips'}."""
    from ..viz.layout import foxglove_layout
    by_bag = _frame_records(out)
    names = o.output_bag_names(by_bag)
    tmp, tmp_clips = out / f'.{FOXGLOVE_DIR}.tmp', out / f'.{CLIPS_DIR}.tmp'
    for d in (tmp, tmp_clips):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
    info: dict[str, dict] = {}
    annotated: Counter = Counter()  # namespace -> frames with detections (for the layout)
    clips = 0
    for bag, records in sorted(by_bag.items()):
        namespaces = o.result_namespace({k[0] for k in records})
        annotated.update(namespaces[k[0]] for k, r in records.items()
                         if r['detections']['items'] or (r.get('refined') or {}).get('items'))
        annotated.update({ns: 0 for ns in namespaces.values()})
        path = tmp / f'{names[bag]}.mcap'
        try:
            counts = _write_bag_mcap(path, bag, records, namespaces, out, max_pixels)
        except (MrMllmError, OSError) as e:
            log.warning('no Foxglove MCAP for %s: %s', bag, e)
            continue
        info[bag] = {'path': str(out / FOXGLOVE_DIR / path.name), **counts, 'clips': 0}
        for r in records.values():
            if r.get('alerts') and clips < MAX_CLIPS:
                t = r['log_time_ns']
                cut_clip(path, tmp_clips / clip_name(r),
                         t - round(clip_before_s * 1e9), t + round(clip_after_s * 1e9))
                info[bag]['clips'] += 1
                clips += 1
    # The layout shows the camera with the most annotated frames (sorted: ties by name).
    busiest = max(sorted(annotated), key=lambda ns: annotated[ns], default='')
    (tmp / LAYOUT).write_text(foxglove_layout(busiest), encoding='utf-8')
    for d, final in ((tmp, out / FOXGLOVE_DIR), (tmp_clips, out / CLIPS_DIR)):
        if final.exists():
            shutil.rmtree(final)
        os.replace(d, final)
    return info
