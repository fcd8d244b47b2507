"""`mr-mllm eval detections|grounding|alerts|video|looker`: measure the configured models
on labelled data.

This module parses the command line, prints and writes; the procedures are in
mr_mllm_ros/eval/tasks.py, eval/video.py and eval/looker_gain.py (formats and metrics:
eval/datasets.py, eval/metrics.py; results: docs/EVALUATION.md). Prints a markdown table;
--out DIR also writes <name>.json, <name>.md (and a PNG plot).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from ..core.config import Config, load_config
from ..core.errors import ConfigError
from ..eval import metrics, result_files, tasks


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest='eval_task', required=True, metavar='TASK')

    d = sub.add_parser('detections', help='per-class P/R at IoU 0.5 and COCO mAP, detector '
                       'alone and with MLLM reinforcement')
    d.add_argument('--gt', required=True, help='COCO instances json')
    d.add_argument('--images', help='folder of the images named by file_name (default: the '
                   "json's folder; sample names resolve to the packaged photos)")
    d.add_argument('--class-map', help='YAML/JSON {dataset name: name} applied to ground '
                   'truth and predictions after the COCO synonyms')
    d.add_argument('--class-agnostic', action='store_true',
                   help='every class is "object" (CODA-style corner-case recall)')
    d.add_argument('--iou', type=float, default=metrics.IOU_THRESHOLD,
                   help='IoU threshold of the P/R matching (default 0.5)')
    d.add_argument('--image-labels', help='image-level labels JSON {file_name: {"classes": '
                   '[...], "maybe": [...]}}: classes in the image without boxes, and '
                   "don't-care ones, for the image-level class recall")

    g = sub.add_parser('grounding', help='referring-expression accuracy and phrase/class '
                       'agreement of grounded descriptions')
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument('--data', help='referring-expression JSONL')
    src.add_argument('--refer', help="refer toolkit refs(umd).p (RefCOCO/+/g); needs "
                     '--instances and --split')
    g.add_argument('--instances', help='instances.json of the refer toolkit dataset')
    g.add_argument('--split', default='val', help='refer split (default val)')
    g.add_argument('--images', help='folder relative image references resolve against '
                   '(default: the data file\'s folder)')
    g.add_argument('--protocol', choices=('retrieval', 'question'), default='retrieval',
                   help='retrieval: the reply is forced to start <ground>EXPRESSION</ground>'
                   '<objects><obj and the model only picks the index (ChatRex); question: '
                   'the answer task is asked "Which object is EXPRESSION?" and the first '
                   'cited object counts (for servers that cannot continue a prefix)')

    a = sub.add_parser('alerts', help='alert precision/recall per rule and latency over an '
                       'image sequence or a bag')
    a.add_argument('--labels', required=True, help='alert labels JSONL')
    a.add_argument('--bag', help='rosbag2 folder or file; labels then index its images')
    a.add_argument('--images', help='folder relative image references of the labels resolve '
                   'against (image sequences; default: the labels file\'s folder)')
    a.add_argument('--topic', help='image topic of the bag (default: its only one)')
    a.add_argument('--rules', help='alert rules YAML (default: the config\'s, i.e. the '
                   'packaged config/alert_rules.yaml)')
    a.add_argument('--rate', type=float, default=10.0,
                   help='frame rate of an image sequence, Hz (default 10)')
    a.add_argument('--tolerance-frames', type=int, default=0,
                   help='an alert up to this many frames after an event still detects it')
    a.add_argument('--exclude', default=','.join(tasks.DEFAULT_EXCLUDED),
                   help='rule names or types not evaluated (comma-separated; default: '
                   '%(default)s)')

    v = sub.add_parser('video', help='share of the frames of a video in which the detector '
                       'finds a class (people by default), and counts at labelled frames')
    v.add_argument('--video', required=True, help='video file OpenCV can decode')
    v.add_argument('--class', dest='class_name', default='person',
                   help='COCO class name (default person)')
    v.add_argument('--labels', help='JSON {"frames_labelled": {"<frame>": {"count": n}}} '
                   '(for person, "people" also counts)')

    lk = sub.add_parser('looker', help="the looker's reinforcement gain: detector boxes "
                        'judged against labelled boxes before and after the reasoning step '
                        '(wrong boxes fixed, right boxes broken, what it named)')
    lk.add_argument('--gt', required=True, help='COCO instances json (a labels.json beside '
                    'it with per-image "non_coco" names is shown next to what was named)')
    lk.add_argument('--images', help='folder of the images named by file_name (default: '
                    "the json's folder)")

    for s in (d, g, a, v, lk):
        s.add_argument('--config', help='config YAML merged over the packaged defaults')
        s.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                       help='override one config key, e.g. --set detector.conf=0.05')
        s.add_argument('--no-mllm', action='store_true',
                       help='detector only (mllm.backend none): fast, no MLLM columns')
        s.add_argument('--limit', type=int, help='only the first N images / expressions')
        s.add_argument('--out', help='folder for <name>.json, <name>.md (and plots)')
        s.add_argument('--name', help='file name stem in --out (default: the task)')


def run(args) -> int:
    config = build_config(args)
    common = {'with_mllm': not args.no_mllm, 'limit': args.limit, 'overrides': args.set}
    t0 = time.perf_counter()
    if args.eval_task == 'looker':
        from ..eval.looker_gain import run as run_looker
        result, markdown, plots = run_looker(config, gt=args.gt, images=args.images,
                                             limit=args.limit)
    elif args.eval_task == 'video':
        from ..eval.video import run_video
        result, markdown, plots = run_video(config, video=args.video,
                                            class_name=args.class_name, labels=args.labels,
                                            limit=args.limit, overrides=args.set)
    elif args.eval_task == 'detections':
        result, markdown, plots = tasks.run_detections(
            config, gt=args.gt, images=args.images, iou=args.iou,
            image_labels=args.image_labels,
            class_map=tasks.load_class_map(args.class_map, args.class_agnostic), **common)
    elif args.eval_task == 'grounding':
        result, markdown, plots = tasks.run_grounding(
            config, data=args.data, refer_file=args.refer, instances=args.instances,
            split=args.split, images=args.images, protocol=args.protocol, **common)
    else:
        result, markdown, plots = tasks.run_alerts(
            config, labels=args.labels, bag=args.bag, images=args.images, topic=args.topic,
            rate=args.rate, tolerance_frames=args.tolerance_frames, exclude=args.exclude,
            **common)
    result['timing']['total_s'] = round(time.perf_counter() - t0, 2)
    print(markdown)
    print(f'(wall time on this machine: {result["timing"]["total_s"]} s; per frame '
          f'{_timing_line(result["timing"])})')
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        name = args.name or args.eval_task
        result_files.write_json(out / f'{name}.json', result)
        (out / f'{name}.md').write_text(markdown, encoding='utf-8')
        for suffix, draw in plots:
            draw(out / f'{name}{suffix}')
        print(f'wrote {out / name}.json, .md' + ''.join(f', {name}{s}' for s, _ in plots))
    return 0


def build_config(args) -> Config:
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition('=')
        if not sep or not key.strip():
            raise ConfigError(f'--set {item!r}: expected KEY=VALUE, e.g. detector.conf=0.05')
        overrides[key.strip()] = yaml.safe_load(value)
    if getattr(args, 'rules', None):
        overrides['alerts.rules_file'] = str(Path(args.rules).resolve())
    return load_config(args.config, overrides=overrides)


def _timing_line(timing: dict) -> str:
    parts = [f'{k} p50 {v["p50"]:.0f} ms / p95 {v["p95"]:.0f} ms'
             for k, v in timing.items() if isinstance(v, dict)]
    return ', '.join(parts) or 'n/a'
