"""`mr-mllm up`: the launch files' graph for installs without `ros2 launch`."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading

from ..topology import DEFAULT_LOG_LEVEL, camera_list, plan_graph
from .common_arguments import add_cameras_argument, add_duration_argument
from .launcher import NodeGroup, NodeSpec

log = logging.getLogger(__name__)


def graph_specs(kinds: list[str], namespaces: list[str], params_file: str | None,
                log_level: str = DEFAULT_LOG_LEVEL, batched: bool = False,
                one_process: bool = False, image_topic: str = '') -> list[NodeSpec]:
    """The processes of topology.plan_graph (the launch files' plan), as NodeSpecs."""
    files = [params_file] if params_file else []
    return [NodeSpec(p.kind, p.namespace, files, dict(p.parameters), log_level,
                     remappings=list(p.remappings))
            for p in plan_graph(camera_list(namespaces), kinds, batched, one_process,
                                image_topic)]


def add_arguments(p) -> None:
    p.add_argument('--config', help='parameters file (default: the packaged one)')
    add_cameras_argument(p)
    p.add_argument('--nodes', default='perception,scene',
                   help='comma-separated: perception, scene, memory (default: perception,'
                        'scene; memory = one memory_node for every camera namespace)')
    p.add_argument('--batched', action='store_true',
                   help='one perception_node for all cameras (perception.cameras)')
    p.add_argument('--one-process', action='store_true',
                   help='perception_node and scene_node of a camera in one process')
    p.add_argument('--image-topic', default='',
                   help="camera image topic (e.g. color/image_raw, relative to each camera "
                        "namespace; absolute for one camera); default: <namespace>/image, "
                        "or <namespace>/image/compressed with camera.compressed")
    p.add_argument('--log-level', default=DEFAULT_LOG_LEVEL)
    add_duration_argument(p)
    p.add_argument('--view', type=int, nargs='?', const=8765, metavar='PORT',
                   help='also serve the graph to Foxglove (`mr-mllm view`) on PORT '
                        '(default 8765)')
    p.add_argument('--respawn', action='store_true',
                   help='restart a node process that exits (back-off 1, 2, 4 ... 30 s)')
    p.add_argument('--respawn-max', type=int, default=10, metavar='N',
                   help='with --respawn: give up after N restarts in all (default 10)')
    p.add_argument('--ready-timeout', type=float, default=120.0, metavar='S',
                   help='how long to wait for every node to report active before saying '
                        'so (default 120; 0 = do not check)')


def report_ready(specs: list[NodeSpec], timeout_s: float,
                 stop: threading.Event | None = None) -> bool:
    """Log 'ready' once every node's lifecycle state is active (asked over its
    get_state service), or what is still missing after `timeout_s`. Only a message for
    people (and scripts waiting on it): the nodes run either way."""
    from ..ros.lifecycle_probe import wait_active  # ROS only when asked for
    paths = [path for spec in specs for path in spec.node_paths()]
    missing = wait_active(paths, timeout_s, stop=stop)
    if stop is not None and stop.is_set():
        return False
    if missing:
        log.warning('not active after %.0f s: %s', timeout_s, ', '.join(missing))
        return False
    log.info('ready: %s active', ', '.join(paths))
    return True


def _colour_topic(config_path: str | None) -> str:
    """The colour image topic the nodes subscribe (camera.rgbd: e.g. color/image_raw)."""
    from ..core.config import load_config
    from ..core.geometry.rgbd_topics import layout_topics
    camera = load_config(config_path).camera if config_path else load_config().camera
    rgbd = layout_topics(camera.rgbd, camera.depth_topic, camera.camera_info_topic)
    return rgbd.image if rgbd is not None else 'image'


def run(args) -> int:
    kinds = [k.strip() for k in args.nodes.split(',') if k.strip()]
    specs = graph_specs(kinds, args.namespace, args.config, args.log_level, args.batched,
                        args.one_process, args.image_topic)
    # SIGTERM and SIGHUP arrive here as KeyboardInterrupt (cli.stop_on_signals), at any
    # point, start-up included: the `with` stops the children either way, and a stop is
    # not a failure.
    viewer, reporter, ready_stop = None, None, threading.Event()
    try:
        with NodeGroup(specs, respawn=args.respawn, respawn_max=args.respawn_max) as group:
            log.info('started %d node process(es) in ROS_DOMAIN_ID=%s; Ctrl-C stops them',
                     len(specs), group.env['ROS_DOMAIN_ID'])
            viewer = None if args.view is None else subprocess.Popen(
                [sys.executable, '-m', 'mr_mllm_ros.cli', 'view', '--port', str(args.view),
                 *(f'--namespace={ns}' for ns in args.namespace),
                 f'--image-topic={_colour_topic(args.config)}'], env=group.env)
            # Readiness is asked on a thread: supervision (respawn) runs meanwhile, here,
            # in the thread that forked the children (their parent-death signal follows it).
            if args.ready_timeout > 0:
                reporter = threading.Thread(target=report_ready, name='ready_report',
                                            args=(specs, args.ready_timeout, ready_stop),
                                            daemon=True)
                reporter.start()
            group.wait(args.duration)
            codes = group.stop()
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM, SIGHUP: the normal way to stop
        log.info('stopped %d node process(es)', len(specs))
        return 0
    finally:
        ready_stop.set()
        if reporter is not None:
            reporter.join(5.0)
        if viewer is not None:
            viewer.terminate()
            viewer.wait(10)
    return 0 if all(c in (0, None, -2, 130) for c in codes) else 1
