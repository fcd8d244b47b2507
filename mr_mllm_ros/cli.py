"""`mr-mllm`: one command line for everything that is not a node.

Each subcommand imports only what it needs, so `mr-mllm --help` and `mr-mllm models` are
fast and work without ROS; commands that start ROS use localhost discovery and a random
domain unless the environment already sets them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .core.offline import apply_offline_env


def _cmd_models(args) -> int:
    from .core import models
    from .core.config import load_config, models_dir
    target = models_dir(load_config(args.config) if args.config else None)
    if args.models_action == 'prepare':
        done = models.prepare_all(target, args.names or None)
        for name, paths in done.items():
            print(f'{name}: ' + ', '.join(str(p) for p in paths))
        return 0
    for name, spec in models.MODELS.items():
        print(f'{name:24s} {spec.description}\n{"":24s} licence: {spec.licence}')
    print(f'models folder: {target}')
    return 0


def _cmd_demo(args) -> int:
    from .app.demo import run_demo
    return run_demo(args)


def _cmd_up(args) -> int:
    from .app.up import run_up
    return run_up(args)


def _cmd_publish_images(args) -> int:
    from .app.publish_images import run_publish_images
    return run_publish_images(args)


def _cmd_describe(args) -> int:
    from .app.describe import run_describe
    return run_describe(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='mr-mllm', description=__doc__.split('\n')[0])
    p.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = p.add_subparsers(dest='command', required=True)

    m = sub.add_parser('models', help='prepare or list the offline default models')
    m.add_argument('models_action', choices=('prepare', 'list'))
    m.add_argument('names', nargs='*', help='only these models (default: all)')
    m.add_argument('--config', help='config YAML (for models_dir)')
    m.set_defaults(func=_cmd_models)

    d = sub.add_parser('demo', help='run the graph on the real photos that packages ship')
    d.add_argument('--config', help='config YAML merged over the packaged defaults')
    d.add_argument('--out', default='output/demo', help='folder for annotated images')
    d.add_argument('--images', nargs='*', help='sample names (default: all)')
    d.add_argument('--timeout', type=float, default=180.0,
                   help='give up after this many seconds (default 180)')
    d.set_defaults(func=_cmd_demo)

    de = sub.add_parser('describe', help='detect + describe images (no ROS)')
    de.add_argument('images', nargs='+',
                    help='image files, folders, sample:<name> or samples (all photos)')
    de.add_argument('--config', help='config YAML merged over the packaged defaults')
    de.add_argument('--json', help='also write the results as JSON here')
    de.add_argument('--out', help='folder for annotated images')
    de.set_defaults(func=_cmd_describe)

    u = sub.add_parser('up', help='start the nodes from a YAML (for installs without '
                                  '`ros2 launch`)')
    u.add_argument('--config', help='parameters file (default: the packaged one)')
    u.add_argument('--namespace', action='append', default=[],
                   help='camera namespace (repeat for several cameras; default: none)')
    u.add_argument('--nodes', default='perception',
                   help='comma-separated: perception, scene (default: perception)')
    u.add_argument('--log-level', default='info')
    u.add_argument('--duration', type=float, default=0.0,
                   help='stop after this many seconds (0 = until Ctrl-C)')
    u.set_defaults(func=_cmd_up)

    pi = sub.add_parser('publish-images', help='publish image files (or sample photos) as a '
                                               'camera topic')
    pi.add_argument('sources', nargs='+',
                    help='image files, folders, or sample:<name> (e.g. sample:camera)')
    pi.add_argument('--topic', default='image')
    pi.add_argument('--rate', type=float, default=1.0, help='Hz')
    pi.add_argument('--frame-id', default='camera')
    pi.add_argument('--encoding', default='rgb8',
                    help='rgb8, bgr8, mono8, ... or jpeg/png (CompressedImage)')
    pi.add_argument('--loop', action='store_true', help='repeat until stopped')
    pi.add_argument('--count', type=int, default=0, help='stop after N messages (0 = all)')
    pi.set_defaults(func=_cmd_publish_images)
    return p


def main(argv: list[str] | None = None) -> int:
    apply_offline_env()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    from .core.errors import MrMllmError
    try:
        return int(args.func(args) or 0)
    except MrMllmError as e:
        print(f'mr-mllm {args.command}: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    raise SystemExit(main())
