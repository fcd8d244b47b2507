"""memory.db of a replay: the scene memory (core.memory) rebuilt from results.jsonl at the
end of every run, like the result bags - into a temporary file renamed over the old one.
One run per bag (track ids restart in each bag); the camera of a frame is its image
topic's namespace (the result bags' naming); time is the header stamp (the log time when
a frame has none). Observations point at the frame's thumbnail when the replay kept one.
Positions (depth) are stored in the odometry frame when the bag has odometry (bag_poses,
memory.camera_mount), else in the camera's optical frame.
`mr-mllm memory ask --db OUT/memory.db "..."` questions it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..core.config import MemoryConfig
from ..core.geometry import mount_from_list
from ..core.geometry.json_fields import position_from_json
from ..core.memory import (AlertRecord, DescriptionRecord, FrameSeen, Observation,
                           SceneMemory)
from ..core.memory.writer import NewRun
from .bag_poses import bag_poses
from .outputs import RESULTS, THUMBS_DIR, iter_results, result_namespace, thumb_name

MEMORY_DB = 'memory.db'


def _remove_db(path: Path) -> None:
    for suffix in ('', '-wal', '-shm'):
        Path(f'{path}{suffix}').unlink(missing_ok=True)


def _cameras(out: Path) -> dict[tuple[str, str], str]:
    topics: dict[str, set] = {}
    for r in iter_results(out / RESULTS):
        topics.setdefault(r['bag'], set()).add(r['topic'])
    names = {}
    for bag, ts in topics.items():
        for topic, ns in result_namespace(ts).items():
            names[(bag, topic)] = ns.strip('/') or topic.strip('/')
    return names


def _records(record: dict, camera: str, out: Path, poses=None, mount=None):
    stamp = record['stamp_ns'] if record.get('stamp_ns') is not None else record['log_time_ns']
    pose = poses.at(stamp) if poses is not None else None
    to_world = pose.compose(mount) if pose is not None else None
    yield FrameSeen(stamp, camera)
    ds = record['detections']
    thumb = out / THUMBS_DIR / thumb_name(record)
    thumbnail = str(thumb) if thumb.is_file() else ''
    for d in ds['items']:
        position, frame = position_from_json(d)[0], record.get('frame_id') or camera
        if position is not None and to_world is not None:
            position = tuple(round(c, 4) for c in to_world.apply(position))
            frame = poses.frame_id or 'odom'
        yield Observation(stamp, camera, int(d['track_id']), d['class_name'], float(d['score']),
                          tuple(d['box']), thumbnail, position,
                          frame if position is not None else '',
                          position is not None and to_world is not None,
                          image_w=int(ds['image_width']), image_h=int(ds['image_height']))
    desc = record.get('description')
    if desc is not None:
        objs = desc['objects']
        grounding = tuple({'text': p['text'], 'objects': [
            {k: objs[i][k] for k in ('class_name', 'track_id', 'score', 'box')}
            for i in p['objects'] if 0 <= i < len(objs)]} for p in desc['phrases'])
        yield DescriptionRecord(stamp, camera, desc['text'], desc['mllm_model'], grounding)
    for a in record.get('alerts', ()):
        yield AlertRecord(stamp, camera, a['severity'], a['code'], a['rule'], a['message'],
                          tuple({k: o[k] for k in ('class_name', 'track_id', 'score', 'box')}
                                for o in a['objects']))


def fill_memory(out: Path, memory: SceneMemory, config: MemoryConfig | None = None) -> None:
    """Record every processed frame of OUT/results.jsonl into `memory` (any store);
    with `config`, positions go into the odometry frame of bags that have odometry."""
    cameras = _cameras(out)
    bag, poses = None, None
    mount = mount_from_list(config.camera_mount) if config is not None else None
    for record in sorted(iter_results(out / RESULTS),
                         key=lambda r: (r['bag'], r['topic'], r['log_time_ns'])):
        if record.get('status') != 'ok':
            continue
        if bag is not None and record['bag'] != bag:
            memory.record(NewRun(f'replay {record["bag"]}'), block=True)
        if record['bag'] != bag and mount is not None:
            poses = bag_poses(record['bag'], int(config.max_pose_gap_s * 1e9))
        bag = record['bag']
        memory.record(*_records(record, cameras[(record['bag'], record['topic'])], out, poses,
                                mount), block=True)
    memory.flush(600)


def write_memory_db(out: Path, config: MemoryConfig) -> Path:
    target, tmp = out / MEMORY_DB, out / f'.{MEMORY_DB}.tmp'
    _remove_db(tmp)
    memory = SceneMemory.open(config, url=str(tmp), run_label='replay')
    try:
        fill_memory(out, memory, config)
    finally:
        memory.close()
    con = sqlite3.connect(tmp)  # one self-contained file: fold the WAL in
    con.execute('PRAGMA wal_checkpoint(TRUNCATE)')
    con.execute('PRAGMA journal_mode=DELETE')
    con.close()
    _remove_db(target)
    os.replace(tmp, target)
    return target
