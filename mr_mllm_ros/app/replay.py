"""`mr-mllm replay BAG... --out DIR`: run recorded bags through the nodes' pipeline.

Writes DIR/results.jsonl (one line per frame: the source of truth), detections.csv,
alerts.csv, bags/<bag>/ (the result topics as mr_mllm_interfaces messages, same storage
format as the input), foxglove/<bag>.mcap + layout.json (for Foxglove), evidence/ and
clips/ (each alert's evidence image and MCAP clip), report.html (self-contained) and
summary.json. MLLM reasoning follows the live schedule in message time (core.reasoning.schedule);
--describe-every-frame reasons on every frame. Re-running into the same DIR resumes;
Ctrl-C keeps what was done. Exit status: 0, or 1 when no frame could be read at all, 130
when interrupted.
"""

from __future__ import annotations

import inspect
import signal
import sys
import threading
from pathlib import Path

from ..core.config import load_config, with_changes
from ..replay.ray_fanout import run_units_on_ray
from ..replay.runner import OPTION_DEFAULTS, ReplayOptions, run_replay


def add_arguments(p) -> None:
    p.add_argument('bags', nargs='+', metavar='BAG',
                   help='rosbag2 bags: folders with metadata.yaml, or .db3/.mcap files')
    p.add_argument('--out', required=True, metavar='DIR', help='output folder')
    p.add_argument('--config', help='config YAML merged over the packaged defaults')
    p.add_argument('--topics', nargs='+', metavar='TOPIC',
                   help='image topics to replay (default: every sensor_msgs/Image and '
                        'CompressedImage topic)')
    p.add_argument('--start', type=float, metavar='S',
                   help='skip the first S seconds of each bag')
    p.add_argument('--end', type=float, metavar='S',
                   help='stop S seconds after the start of each bag')
    p.add_argument('--every', type=int, default=OPTION_DEFAULTS['every'], metavar='N',
                   help='process every N-th message of each topic (default %(default)s)')
    p.add_argument('--no-describe', dest='describe', action='store_false',
                   help='detections and rule alerts only: no MLLM is loaded')
    p.add_argument('--describe-every-frame', action='store_true',
                   help='reason on every frame (scene.describe_every_frame) instead of at '
                        'the live schedule (scene.description_rate_hz, on change, never '
                        'closer than scene.min_description_interval_s), in message time')
    p.add_argument('--segment-s', type=float, default=OPTION_DEFAULTS['segment_s'],
                   metavar='S',
                   help='split each topic into time segments of S seconds, the units of '
                        'work (and of --ray tasks); alert debounce and the schedule restart '
                        'at each (default %(default)s; 0 = never split)')
    p.add_argument('--restart', action='store_true',
                   help='discard earlier results in DIR instead of resuming')
    p.add_argument('--ray', nargs='?', const='local', metavar='ADDRESS',
                   help='fan units out as Ray tasks: on a local Ray started for this run '
                        '(no ADDRESS, or `local`), or on the cluster at ADDRESS (e.g. '
                        'ray://head:10001 or head:6379); workers must see the bags and '
                        'models at the same paths')
    p.add_argument('--ray-workers', type=int, metavar='N',
                   help='Ray workers (default: as many as the CPUs allow)')
    ray_defaults = inspect.signature(run_units_on_ray).parameters
    p.add_argument('--ray-cpus-per-worker', type=float, metavar='C',
                   help=f'default {ray_defaults["cpus_per_worker"].default}')
    p.add_argument('--ray-gpus-per-worker', type=float, metavar='G',
                   help='default: 1 when the config puts a model on cuda, else 0')
    p.add_argument('--ray-init-timeout', type=float, metavar='S',
                   help=f'default {ray_defaults["init_timeout_s"].default}')
    p.add_argument('--progress', action='store_true', default=OPTION_DEFAULTS['progress'],
                   help='progress bar even when stderr is not a terminal (default: a bar '
                        'on a terminal, else a log line per 1000 frames)')
    p.add_argument('--no-progress', dest='progress', action='store_false')


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    if args.every < 1:
        print('mr-mllm replay: --every must be >= 1', file=sys.stderr)
        return 2
    if args.ray and args.ray != 'local' and Path(args.ray).exists():
        # `--ray BAG ...`: argparse took the first bag for the optional ADDRESS.
        args.bags.insert(0, args.ray)
        args.ray = 'local'
    config = load_config(args.config) if args.config else load_config()
    if args.describe_every_frame:
        config = with_changes(config, {'scene.describe_every_frame': True})
    options = ReplayOptions(bags=tuple(args.bags), out=args.out,
                            topics=tuple(args.topics) if args.topics else None,
                            start_s=args.start, end_s=args.end, every=args.every,
                            describe=args.describe, segment_s=args.segment_s,
                            restart=args.restart, progress=args.progress)
    ray = None
    if args.ray:
        given = {'workers': args.ray_workers, 'cpus_per_worker': args.ray_cpus_per_worker,
                 'gpus_per_worker': args.ray_gpus_per_worker,
                 'init_timeout_s': args.ray_init_timeout}
        ray = {'address': None if args.ray == 'local' else args.ray,
               **{k: v for k, v in given.items() if v is not None}}
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # SIGTERM finalises the outputs like Ctrl-C
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_replay(options, config, ray=ray)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    print(f'replayed {len(args.bags)} bag(s): {result.frames} frames in results '
          f'({result.new_frames} new, {result.resumed_frames} already done), '
          f'{result.frames_ok} decoded and processed, '
          f'{result.frames - result.frames_ok} skipped')
    if options.describe:
        calls = result.mllm_calls
        print(f'  MLLM reasoning steps: {sum(calls.values())} ('
              + ', '.join(f'{n} {k.replace("_", " ")}' for k, n in calls.items()) + ')')
        if result.looker:
            print('  looker: ' + ', '.join(f'{n} {k}' for k, n in result.looker.items())
                  + ' (boxes; added = objects for what a frame showed and no box explained)')
    for reason, count in sorted(result.skipped.items()):
        print(f'  skipped {count}: {reason}')
    for problem in result.problems:
        print(f'  problem: {problem}')
    for bag, info in sorted(result.result_bags.items()):
        total = sum(info['messages'].values())
        print(f'  result bag ({info["storage"]}, {total} messages): {info["path"]}')
    print(f'  report: {result.out / "report.html"}  (results.jsonl, detections.csv, '
          f'alerts.csv, summary.json beside it)')
    if result.interrupted:
        print('interrupted: outputs hold the frames done so far; run again to resume')
        return 130
    if result.frames_ok == 0:
        print('mr-mllm replay: no frame could be read from the given bag(s)',
              file=sys.stderr)
        return 1
    return 0
