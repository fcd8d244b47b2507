"""The replay's result bags: one rosbag2 per input bag under bags/, rebuilt from
results.jsonl at the end of every run (replay.outputs), with the nodes' result topics in
the input's namespaces, recorded with the QoS the nodes publish them with, so that
`ros2 bag play` offers them as the live graph would.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .outputs import (BAGS_DIR, EVIDENCE_DIR, RESULTS, alert_from_json, description_from_json,
                      detection_set_from_json, iter_results, output_bag_names,
                      result_namespace)


def offered_qos(name: str) -> list:
    """The QoS the nodes publish a result topic with (ros/qos.py: reliable; alerts also
    transient local, depth 50), recorded so `ros2 bag play` offers the same."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)
    latched = name == 'alerts'
    default = QosTime(0, 0)  # deadline, lifespan, lease: unspecified (rmw default)
    return [Qos(QosHistory.KEEP_LAST, 50 if latched else 10, QosReliability.RELIABLE,
                QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
                default, default, QosLiveliness.AUTOMATIC, default, False)]


def frame_result_messages(record: dict, out: Path | None = None) -> list[tuple[str, Any]]:
    """(result topic name, rosbags message) for one results.jsonl record (`out`: the
    output folder, where the alerts' evidence images are)."""
    from . import result_messages as rm
    if record.get('status') != 'ok':
        return []
    stamp, frame_id = record['stamp_ns'], record['frame_id']
    ds = detection_set_from_json(record['detections'], stamp, frame_id)
    msgs = [('detections', rm.detection_array_msg(ds)), *rm.marker_messages(ds)]
    if record.get('refined') is not None:
        msgs.append(('detections_refined', rm.detection_array_msg(
            detection_set_from_json(record['refined'], stamp, frame_id))))
    if record.get('description') is not None:
        msgs.append(('scene_description', rm.scene_description_msg(
            description_from_json(record['description'], stamp, frame_id))))
    evidence = out / EVIDENCE_DIR if out is not None else None
    msgs += [('alerts', rm.alert_msg(alert_from_json(a, evidence)))
             for a in record.get('alerts', ())]
    return msgs


def write_result_bags(out: Path, storages: dict[str, str]) -> dict[str, dict]:
    """One bag per input bag under bags/, rebuilt from results.jsonl, in the input bag's
    storage format (`storages`: bag path -> sqlite3|mcap; default sqlite3). Returns
    bag path -> {'path', 'messages': {topic: count}}."""
    from . import result_messages as rm
    from .bag_writer import open_writer
    topics_of: dict[str, set] = {}
    for record in iter_results(out / RESULTS):
        if record.get('status') == 'ok':
            topics_of.setdefault(record['bag'], set()).add(record['topic'])
    names = output_bag_names(topics_of)
    tmp_root = out / f'.{BAGS_DIR}.tmp'
    if tmp_root.exists():
        shutil.rmtree(tmp_root)
    tmp_root.mkdir()
    writers: dict[str, Any] = {}
    conns: dict[tuple[str, str], Any] = {}
    namespaces = {bag: result_namespace(t) for bag, t in topics_of.items()}
    info: dict[str, dict] = {}
    msgtypes = rm.RESULT_MSGTYPES
    try:
        for record in iter_results(out / RESULTS):
            bag = record['bag']
            msgs = frame_result_messages(record, out)
            if not msgs:
                continue
            if bag not in writers:
                storage = 'mcap' if storages.get(bag) == 'mcap' else 'sqlite3'
                writers[bag] = open_writer(tmp_root / names[bag], storage)
                info[bag] = {'path': str(out / BAGS_DIR / names[bag]),
                             'storage': storage, 'messages': {}}
            for name, msg in msgs:
                topic = f'{namespaces[bag][record["topic"]]}/{name}'
                conn = conns.get((bag, topic))
                if conn is None:
                    conn = conns[(bag, topic)] = writers[bag].add_connection(
                        topic, msgtypes[name], offered_qos_profiles=offered_qos(name),
                        **rm.connection_args(msgtypes[name]))
                writers[bag].write(conn, record['log_time_ns'], rm.serialize(msg))
                counts = info[bag]['messages']
                counts[topic] = counts.get(topic, 0) + 1
    finally:
        for w in writers.values():
            w.close()
    final = out / BAGS_DIR
    old = out / f'.{BAGS_DIR}.old'
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp_root, final)
    if old.exists():
        shutil.rmtree(old)
    return info
