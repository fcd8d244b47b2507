"""`mr-mllm`: one command line for everything that is not a node.

Each subcommand lives in its own module under mr_mllm_ros/app/ with two functions,
`add_arguments(parser)` (its options, on the subcommand's parser) and `run(args) -> int`,
and is imported only when chosen, so `mr-mllm --help` is fast and works without ROS.
Commands that start ROS use localhost discovery and a random domain unless the environment
already sets them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from .core.runtime.cpu_threads import apply_inference_env
from .core.runtime.offline import apply_offline_env

#: (command, module under mr_mllm_ros.app, one-line help) - the help is here so that
#: `mr-mllm --help` does not import every command's dependencies.
COMMANDS = (
    ('demo', 'demo', 'run the graph on the real photos that packages ship'),
    ('describe', 'describe', 'detect + describe images in-process (no ROS)'),
    ('up', 'up', 'start the nodes from a params file (installs without `ros2 launch`)'),
    ('ask', 'ask', 'ask a running scene_node a question (ask_scene action: the answer as '
                   'it is written; Ctrl-C cancels)'),
    ('view', 'view', 'serve the live graph to Foxglove (WebSocket): images, boxes, alerts'),
    ('publish-images', 'publish_images', 'publish image files or sample photos as a camera'),
    ('eval', 'eval', 'measure detections, grounding and alerts against labelled data'),
    ('replay', 'replay', 'analyse recorded bags offline: results, result bag, report.html'),
    ('memory', 'memory', 'ask the scene memory ("when did you last see a tie?") or list it'),
    ('record', 'record', 'record topics into a bag (installs without `ros2 bag`)'),
    ('train-fusion', 'train_fusion', 'train the shared-query fusion adapter (or make its data)'),
    ('models', 'models', 'prepare or list the offline default models'),
)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='mr-mllm', description=__doc__.split('\n')[0])
    p.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    sub = p.add_subparsers(dest='command', required=True, metavar='COMMAND')
    chosen = next((a for a in argv if not a.startswith('-')), None)
    for name, module, help_text in COMMANDS:
        if name == chosen:  # only the chosen command's module is imported
            mod = importlib.import_module(f'.app.{module}', __package__)
            cmd = sub.add_parser(name, help=help_text, description=help_text)
            mod.add_arguments(cmd)
            cmd.set_defaults(func=mod.run)
        else:
            sub.add_parser(name, help=help_text)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP, raised in the main thread: every command then unwinds exactly as
    on Ctrl-C (its `with` blocks stop child processes and ROS clients), and exits with
    128 + the signal number, as a shell reports a signal's death."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum, frame) -> None:
    raise Terminated(signum)


def stop_on_signals() -> None:
    """What systemd and `docker stop` send (SIGTERM) and a closed terminal (SIGHUP) end a
    command the way Ctrl-C does, instead of killing it without its clean-up."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_terminated)


def main(argv: list[str] | None = None) -> int:
    apply_offline_env()
    apply_inference_env()  # before torch loads libgomp (replay, describe, eval run models)
    stop_on_signals()
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    from .core.errors import MrMllmError
    try:
        return int(args.func(args) or 0)
    except MrMllmError as e:
        print(f'mr-mllm {args.command}: error: {e}', file=sys.stderr)
        return 2
    except Terminated as e:
        return 128 + e.signum
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    """The `mr-mllm` executable: main(), then exit; with os._exit when a ROS executor
    thread outlived its close (core.runtime.leftover_threads), so that exit never waits on it."""
    from .core.runtime.leftover_threads import exit_process
    exit_process(main())


if __name__ == '__main__':
    entry()
