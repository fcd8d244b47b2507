#!/usr/bin/env python3
"""A busy real street, end to end: tracks, scene changes, prompt tokens, replay time and
the live description age. Prints numbers (and writes them with --json); asserts nothing.

    bash scripts/with_env.sh python benchmarks/bench_streets.py \\
        --video /work/realdata/video/street.avi --json output/bench_streets.json

The video is any file OpenCV reads (kept outside the project; docs/BENCHMARKS.md used
OpenCV's vtest.avi: 795 frames, 10 fps, 768x576, a campus crossing). Parts (--parts):
- tracking: every frame through each detector (--detectors ssd,yolo) once, at conf 0.05;
  then the tracker of this code (config `tracker.*`) and the one before it (ultralytics'
  ByteTrack with its own defaults - fused scores, plain IoU, 30 frames - on boxes >=
  detector.conf) on those boxes: person tracks (all, and those lasting >= 2 s), and the
  reasoning steps the schedule would start by trigger with the scene change of this code
  (core.reasoning.scene_change) and the one before (a new track id or class set). The
  real-photo sequences with ground truth (eval.tracking_sequences): ID switches, IDF1 and
  tracks, through each detector and from noisy ground truth (the tracker alone).
- prompt: tokens per object of scene_v1 and scene_v2 on the video's detections.
- decode: SmolLM2's decode rate alone and beside a detector process at 10 Hz (the two
  model nodes of the graph without ROS), with each library's default threads (all cores
  each, as before) and with half the cores each (perception.threads / scene.threads 0).
- replay: the video written as a bag (CompressedImage JPEG, its frame rate) and replayed
  with `--no-describe` and with descriptions (the default schedule, message time): wall
  times and their ratio, steps by trigger, person track ids, descriptions cut, generation
  rate (generated tokens / generation ms, the MLLM alone in the process).
- live: perception_node + scene_node (NodeGroup, as `mr-mllm up` starts them), the video
  published at its frame rate (rgb8); frames that got detections, image -> detections
  latency, descriptions and their age (receive time - frame stamp; scene_node's own
  diagnostics too), generation rate in the graph. --live-alone first runs
  perception_node alone for the detection reference.
The load average is printed with each part: the development machine is shared.
"""

from __future__ import annotations

import collections
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from measure import arguments, write_json  # noqa: E402

from mr_mllm_ros.core.config import load_config  # noqa: E402
from mr_mllm_ros.core.runtime.cpu_threads import apply_inference_env  # noqa: E402
from mr_mllm_ros.core.runtime.offline import apply_offline_env  # noqa: E402
from mr_mllm_ros.core.types import DetectionSet, Frame  # noqa: E402

DETECTORS = {'ssd': [], 'yolo': [str(ROOT / 'config' / 'detector_yolov3_tiny.yaml')]}
LOW_CONF = 0.05


def load() -> str:
    return '/'.join(f'{x:.1f}' for x in os.getloadavg())


def video_frames(path: str):
    import cv2
    cap = cv2.VideoCapture(path)
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[..., ::-1]))
    if not frames:
        raise SystemExit(f'cannot read {path}')
    return frames, fps


def stamp(k: int, fps: float) -> int:
    return 1_000_000_000 + round(k * 1e9 / fps)


# ------------------------------------------------------------------------- tracking

def detect_all(frames, fps, config_files) -> tuple[list[DetectionSet], object]:
    from mr_mllm_ros.core.detection import create_detector
    config = load_config(*config_files, overrides={'detector.conf': LOW_CONF})
    detector = create_detector(config)
    sets = [detector.detect(Frame(f, stamp(k, fps), 'cam', 'cam')) for k, f in enumerate(frames)]
    detector.close()
    return sets, load_config(*config_files)


def before_tracker(conf: float):
    """The tracking this code replaced: ultralytics' ByteTrack defaults on boxes >= conf."""
    from ultralytics.trackers import BYTETracker

    from mr_mllm_ros.core.detection.tracking import _Boxes

    lib = BYTETracker(SimpleNamespace(tracker_type='bytetrack', track_high_thresh=0.25,
                                      track_low_thresh=0.1, new_track_thresh=0.25,
                                      track_buffer=30, match_thresh=0.8, fuse_score=True))

    def update(ds: DetectionSet) -> DetectionSet:
        kept = [d for d in ds if d.score >= conf]
        xyxy = np.array([d.box.corners() for d in kept], np.float64).reshape(len(kept), 4)
        boxes = _Boxes(np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2,
                                       xyxy[:, 2:] - xyxy[:, :2]], axis=1),
                       np.array([d.score for d in kept], np.float32),
                       np.array([d.class_id for d in kept], np.float32))
        ids = {int(r[7]): int(r[4]) for r in lib.update(boxes, None)}
        return ds.with_detections(d.replace(track_id=ids.get(i, -1))
                                  for i, d in enumerate(kept))
    return update


def now_tracker(config):
    from mr_mllm_ros.core.detection.tracking import Tracker
    tracker = Tracker(config.tracker, config.detector.conf)
    low = tracker.detector_conf(config.detector.conf)
    return lambda ds: tracker.update(ds.with_detections(d for d in ds if d.score >= low))


def old_change():
    signature = []

    def changed(ds, now_s):
        classes = frozenset(d.class_name for d in ds)
        tracks = frozenset(d.track_id for d in ds if d.track_id >= 0)
        before = signature[0] if signature else None
        signature[:] = [(classes, tracks)]
        return before is None or classes != before[0] or bool(tracks - before[1])
    return changed


def new_change(config):
    from mr_mllm_ros.core.reasoning.scene_change import SceneChanges
    changes = SceneChanges(config.scene)
    return lambda ds, now_s: bool(changes.update(ds, now_s))


def track_and_schedule(sets, fps, update, changed, config) -> dict:
    from mr_mllm_ros.core.reasoning.schedule import ReasoningSchedule
    schedule = ReasoningSchedule(config.scene, config.alerts)
    frames_of = collections.Counter()
    for k, ds in enumerate(sets):
        tracked = update(ds)
        frames_of.update(d.track_id for d in tracked
                         if d.track_id >= 0 and d.class_name == 'person')
        now = k / fps
        schedule.note_frame(k + 1, changed(tracked, now), now)
        if schedule.start(k + 1, now):
            schedule.succeeded()  # a step taking no time: the triggers alone
    counts = schedule.counts()
    return {'person_tracks': len(frames_of),
            'person_tracks_2s': sum(n >= 2 * fps for n in frames_of.values()),
            'steps': {k: counts[k] for k in ('change', 'rate')}}


def sequences_scores(config_files) -> dict:
    from mr_mllm_ros.core.detection import create_detector
    from mr_mllm_ros.eval.tracking_metrics import tracking_scores
    from mr_mllm_ros.eval.tracking_sequences import noisy_detections, sequences
    config = load_config(*config_files)
    detector = create_detector(load_config(*config_files,
                                           overrides={'detector.conf': LOW_CONF}))
    out = {}
    for seq in sequences():
        sources = {'detector': [detector.detect(f) for f in seq.frames]}
        sources.update((f'noisy truth {s}', noisy_detections(seq, s)) for s in range(3))
        for source, sets in sources.items():
            for name, make in (('before', lambda: before_tracker(config.detector.conf)),
                               ('now', lambda: now_tracker(config))):
                update = make()
                pred = [[(d.track_id, d.box.corners()) for d in update(ds)
                         if d.track_id >= 0 and d.class_name == 'person'] for ds in sets]
                s = tracking_scores(seq.truth, pred)
                key = f'{seq.name} / {source.split(" ")[0]} / {name}'
                r = out.setdefault(key, {'id_switches': 0, 'idf1': [], 'tracks': [],
                                         'people': seq.people})
                r['id_switches'] += s['id_switches']
                r['idf1'].append(s['idf1'] or 0.0)
                r['tracks'].append(len({t for f in pred for t, _ in f}))
    detector.close()
    for r in out.values():
        r['idf1'] = round(float(np.mean(r['idf1'])), 3)
    return out


def part_tracking(frames, fps, detectors) -> dict:
    out = {}
    for name in detectors:
        t0 = time.perf_counter()
        sets, config = detect_all(frames, fps, DETECTORS[name])
        r = out[name] = {'detect_s': time.perf_counter() - t0, 'load': load()}
        r['before'] = track_and_schedule(sets, fps, before_tracker(config.detector.conf),
                                         old_change(), config)
        r['now'] = track_and_schedule(sets, fps, now_tracker(config), new_change(config),
                                      config)
        r['sequences'] = sequences_scores(DETECTORS[name])
        print(f'tracking, {name}: person tracks before {r["before"]["person_tracks"]} '
              f'(>= 2 s: {r["before"]["person_tracks_2s"]}), now {r["now"]["person_tracks"]} '
              f'(>= 2 s: {r["now"]["person_tracks_2s"]}); steps before {r["before"]["steps"]}'
              f', now {r["now"]["steps"]}  [load {r["load"]}]')
        for key, s in r['sequences'].items():
            print(f'   {key}: {s["id_switches"]} switches, IDF1 {s["idf1"]}, tracks '
                  f'{s["tracks"]} for {s["people"]} people')
        out[name]['sets'] = sets
    return out


# --------------------------------------------------------------------------- prompt

def part_prompt(sets) -> dict:
    from transformers import AutoTokenizer

    from mr_mllm_ros.core.reasoning.prompts import PromptBuilder, load_template
    config = load_config()
    tokenizer = AutoTokenizer.from_pretrained(str(config.resolve_model_path(config.mllm.model)))
    count = lambda text: len(tokenizer(text, add_special_tokens=False)['input_ids'])  # noqa
    out = {}
    kept = [ds.with_detections(d for d in ds if d.score >= config.detector.conf)
            for ds in sets]
    for name in ('scene_v1', 'scene_v2'):
        builder = PromptBuilder(load_template(name), config.mllm, count, False)
        per, users = [], []
        for ds in kept:
            block, chosen = builder.object_block(ds)
            if chosen:
                per.append(count(block) / len(chosen))
            users.append(count(builder.describe(ds).user))
        prefix = sum(count(m.content) for m in builder.prefix('describe'))
        out[name] = {'tokens_per_object': float(np.mean(per)), 'user_turn': float(np.mean(users)),
                     'fixed_prefix': prefix}
        print(f'prompt {name}: {np.mean(per):.1f} tokens per object, user turn '
              f'{np.mean(users):.0f} tokens, fixed prefix {prefix} (KV-cached)')
    return out


# --------------------------------------------------------------------------- decode

def _detector_loop(path: str, threads: int, stop) -> None:
    """A perception_node stand-in: the default detector on the video at 10 Hz."""
    import cv2
    from mr_mllm_ros.core.detection import create_detector
    detector = create_detector(load_config())
    cv2.setNumThreads(threads)
    frames, _ = video_frames(path)
    k = 0
    while not stop.is_set():
        t0 = time.monotonic()
        detector.detect(Frame(frames[k % len(frames)], k, 'cam', 'cam'))
        k += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))


def part_decode(path: str, sets) -> dict:
    """SmolLM2's decode rate (a 40-token minus an 8-token reply, greedy) alone and beside
    a detector process at 10 Hz, with the thread budgets before (every library's default:
    all cores each) and now (half each)."""
    import dataclasses
    import multiprocessing

    import torch

    from mr_mllm_ros.core.reasoning.scene import SceneReasoner
    reasoner = SceneReasoner(load_config())
    ds = next(d for d in sets if len(d) >= 5)
    request = reasoner.prompts.answer(ds, 'What are the people doing?')

    def rate() -> float:
        tokens, seconds = 0, 0.0
        for _ in range(3):
            long, short = (reasoner.backend.generate(dataclasses.replace(
                request, stop=(), max_new_tokens=n)) for n in (40, 8))
            tokens += long.generated_tokens - short.generated_tokens
            seconds += (long.timings_ms['generate'] - short.timings_ms['generate']) / 1e3
        return tokens / seconds
    cores = os.cpu_count() or 1
    out = {}
    for name, llm, det in (('alone, torch all cores', cores, None),
                           ('alone, torch half', max(1, cores // 2), None),
                           ('beside the detector, all cores each (before)', cores, cores),
                           ('beside the detector, half each (now)', max(1, cores // 2),
                            max(1, cores // 2))):
        torch.set_num_threads(llm)
        spawn = multiprocessing.get_context('spawn')
        stop = spawn.Event()
        proc = None
        if det is not None:
            proc = spawn.Process(
                target=_detector_loop, args=(path, det, stop), daemon=True)
            proc.start()
            time.sleep(15.0)  # its model loaded and running
        rate()  # warm
        out[name] = {'decode_tok_s': rate(), 'load': load()}
        stop.set()
        if proc is not None:
            proc.join(30)
        print(f'decode {name}: {out[name]["decode_tok_s"]:.1f} tok/s  [load {out[name]["load"]}]')
    return out


# --------------------------------------------------------------------------- replay

def part_replay(frames, fps, tmp: Path) -> dict:
    from mr_mllm_ros.replay.bag_writer import image_message, write_bag
    from mr_mllm_ros.replay.runner import ReplayOptions, run_replay
    period = 1.0 / fps
    bag = write_bag(tmp / 'street_bag', {'/cam/image/compressed': [
        image_message(f, 'jpeg', stamp(k, fps), 'cam') for k, f in enumerate(frames)]},
        'sqlite3', start_ns=stamp(0, fps), period_s=period)
    config = load_config()
    out = {}
    for describe in (False, True):
        t0 = time.monotonic()
        result = run_replay(ReplayOptions(bags=(str(bag),), out=str(tmp / f'r{describe}'),
                                          describe=describe, progress=False), config)
        r = out['describe' if describe else 'no_describe'] = {
            'wall_s': time.monotonic() - t0, 'frames': result.frames_ok,
            'steps': dict(result.mllm_calls), 'load': load()}
        descriptions, tracks, cut, tokens, gen_ms = [], set(), 0, 0, 0.0
        for line in (tmp / f'r{describe}' / 'results.jsonl').read_text().splitlines():
            rec = json.loads(line)
            tracks.update(d['track_id'] for d in rec.get('detections', {}).get('items', [])
                          if d['class_name'] == 'person' and d['track_id'] >= 0)
            d = rec.get('description')
            if d:
                descriptions.append(d['text'])
                cut += any('cut' in p for p in d.get('problems', []))
                tokens += d['generated_tokens']
                gen_ms += d['timings_ms'].get('generate', 0.0)
        r.update(person_tracks=len(tracks), descriptions=len(descriptions),
                 descriptions_cut=cut, generation_tok_s=tokens / gen_ms * 1e3 if gen_ms else None,
                 examples=descriptions[:3])
        print(f'replay {"with descriptions" if describe else "--no-describe"}: '
              f'{r["wall_s"]:.0f} s for {r["frames"]} frames, steps {r["steps"]}, '
              f'{r["descriptions"]} descriptions ({cut} cut), person tracks '
              f'{r["person_tracks"]}, generation {r["generation_tok_s"] or 0:.1f} tok/s  '
              f'[load {r["load"]}]')
    out['ratio'] = out['describe']['wall_s'] / out['no_describe']['wall_s']
    print(f'replay ratio with / without descriptions: {out["ratio"]:.2f}x; e.g. '
          f'{out["describe"]["examples"][:2]}')
    return out


# ----------------------------------------------------------------------------- live

def live_run(frames, fps, with_scene: bool, params: dict, files: list) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from mr_mllm_interfaces.msg import DetectionArray, SceneDescription
    from mr_mllm_ros.app.launcher import NodeGroup, NodeSpec, ensure_local_ros_env
    from mr_mllm_ros.ros import conversions as conv
    from mr_mllm_ros.ros.client import RosClient
    from mr_mllm_ros.ros.qos import RESULTS_QOS
    ensure_local_ros_env()  # this process publishes 1.3 MB images: the large-image profile
    ns = 'street_live' if with_scene else 'street_alone'
    specs = [NodeSpec('perception', ns, params_files=files, parameters=params)]
    if with_scene:
        specs.append(NodeSpec('scene', ns, params_files=files, parameters=params))
    det_ms, ages, rates, texts, diag = {}, [], [], [], {}
    sent = {}
    with NodeGroup(specs), RosClient(f'bench_{ns}') as ros:
        def on_det(m):
            s = conv.stamp_to_ns(m.header.stamp)
            if s in sent:
                det_ms[s] = (time.time_ns() - s) / 1e6

        def on_desc(m):
            ages.append((time.time_ns() - conv.stamp_to_ns(m.header.stamp)) / 1e6)
            gen = {t.stage: t.duration_ms for t in m.timings}.get('generate', 0.0)
            if gen > 0:
                rates.append((m.generated_tokens, gen))
            texts.append(m.text)

        def on_diag(m):
            for st in m.status:
                if st.name.startswith(f'/{ns}/scene_node'):
                    diag.update({kv.key: kv.value for kv in st.values})
        ros.node.create_subscription(DetectionArray, f'/{ns}/detections', on_det, RESULTS_QOS)
        ros.node.create_subscription(SceneDescription, f'/{ns}/scene_description', on_desc,
                                     RESULTS_QOS)
        ros.node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
        pub = ros.publisher(Image, f'/{ns}/image', 10)
        if not ros.wait_for_subscribers(pub, 2 if with_scene else 1, 180):
            raise SystemExit('nodes did not come up')
        time.sleep(5.0)  # settle (the scene node's model warm-up)
        t0 = time.monotonic()
        for k, f in enumerate(frames):
            s = time.time_ns()
            sent[s] = k
            pub.publish(conv.image_msg(f, 'rgb8', s, 'cam'))
            time.sleep(max(0.0, t0 + (k + 1) / fps - time.monotonic()))
        time.sleep(10.0)  # the last description
    lat = list(det_ms.values())
    r = {'frames_sent': len(frames), 'frames_detected': len(lat), 'load': load(),
         'image_to_detections_ms': {'p50': float(np.percentile(lat, 50)),
                                    'p95': float(np.percentile(lat, 95))} if lat else None}
    if with_scene:
        r.update(descriptions=len(ages),
                 description_age_ms={'p50': float(np.percentile(ages, 50)),
                                     'p95': float(np.percentile(ages, 95)),
                                     'max': float(max(ages))} if ages else None,
                 ages_ms=[round(a) for a in ages],
                 generation_tok_s=sum(t for t, _ in rates) / sum(g for _, g in rates) * 1e3
                 if rates else None,
                 scene_node_diagnostics={k: v for k, v in diag.items()
                                         if k.startswith(('description_', 'mllm_steps'))},
                 examples=texts[:3])
    return r


def part_live(frames, fps, alone: bool, params: dict, files: list) -> dict:
    out = {}
    for with_scene in ((False, True) if alone else (True,)):
        r = out['graph' if with_scene else 'perception_alone'] = \
            live_run(frames, fps, with_scene, params, files)
        lat = r['image_to_detections_ms'] or {}
        line = (f'live {"graph" if with_scene else "perception alone"}: detections for '
                f'{r["frames_detected"]}/{r["frames_sent"]} frames, image -> detections p50 '
                f'{lat.get("p50", 0):.0f} / p95 {lat.get("p95", 0):.0f} ms')
        if with_scene:
            age = r['description_age_ms'] or {}
            line += (f'; {r["descriptions"]} descriptions, age p50 {age.get("p50", 0):.0f} / '
                     f'p95 {age.get("p95", 0):.0f} ms, generation {r["generation_tok_s"] or 0:.1f}'
                     f' tok/s; scene_node says {r["scene_node_diagnostics"]}')
        print(line + f'  [load {r["load"]}]')
    return out


def main() -> int:
    ap = arguments(__doc__)
    ap.add_argument('--video', required=True)
    ap.add_argument('--parts', default='tracking,prompt,replay,live')
    ap.add_argument('--detectors', default='ssd,yolo')
    ap.add_argument('--seconds', type=float, default=0.0,
                    help='use only the first N seconds of the video (0 = all)')
    ap.add_argument('--live-alone', action='store_true')
    ap.add_argument('--set', action='append', default=[], metavar='KEY=JSON',
                    help='a node parameter for the live part, e.g. scene.threads=2')
    ap.add_argument('--live-config', action='append', default=[], metavar='YAML',
                    help='a params file for the live nodes (e.g. config/detector_yolov3_tiny.yaml)')
    args = ap.parse_args()
    apply_offline_env()
    apply_inference_env()  # as the CLI and the nodes do, before torch loads
    frames, fps = video_frames(args.video)
    if args.seconds:
        frames = frames[:int(args.seconds * fps)]
    parts = args.parts.split(',')
    out: dict = {'machine': f'{platform.machine()}, {os.cpu_count()} CPUs (shared)',
                 'video': {'path': args.video, 'frames': len(frames), 'fps': fps}}
    print(out['machine'], out['video'])
    sets = None
    if 'tracking' in parts:
        out['tracking'] = part_tracking(frames, fps, args.detectors.split(','))
        sets = out['tracking'].get('ssd', {}).get('sets')
        for r in out['tracking'].values():
            r.pop('sets', None)
    if 'prompt' in parts:  # on every 10th frame, with the default detector's boxes
        sets = sets[::10] if sets is not None else detect_all(frames[::10], fps, [])[0]
        out['prompt'] = part_prompt(sets)
    if 'decode' in parts:
        if sets is None:
            sets, _ = detect_all(frames[::50], fps, [])
        out['decode'] = part_decode(args.video, sets)
    with tempfile.TemporaryDirectory() as tmp:
        if 'replay' in parts:
            out['replay'] = part_replay(frames, fps, Path(tmp))
    if 'live' in parts:
        params = {k: json.loads(v) for k, v in (s.split('=', 1) for s in args.set)}
        out['live'] = part_live(frames, fps, args.live_alone, params, args.live_config)
    write_json(args.json, out)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
