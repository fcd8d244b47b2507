"""`mr-mllm up`: the launch files' graph for installs without `ros2 launch`."""

from __future__ import annotations

import logging
import subprocess
import sys

from .launcher import NodeGroup, NodeSpec

log = logging.getLogger(__name__)


def graph_specs(kinds: list[str], namespaces: list[str], params_file: str | None,
                log_level: str = 'info', batched: bool = False,
                one_process: bool = False) -> list[NodeSpec]:
    """One perception (and/or scene) node per camera namespace, as launch/ does; with
    `batched`, one perception_node serves every camera (perception.cameras); with
    `one_process`, each camera's two nodes share a process."""
    files = [params_file] if params_file else []
    namespaces = namespaces or ['']
    if one_process and set(kinds) == {'perception', 'scene'}:
        return [NodeSpec('combined', ns, files, {}, log_level) for ns in namespaces]
    specs: list[NodeSpec] = []
    for kind in kinds:
        if kind == 'perception' and batched and len(namespaces) > 1:
            specs.append(NodeSpec(kind, '', files, {'perception.cameras': namespaces},
                                  log_level))
            continue
        specs += [NodeSpec(kind, ns, files, {}, log_level) for ns in namespaces]
    return specs


def add_arguments(p) -> None:
    p.add_argument('--config', help='parameters file (default: the packaged one)')
    p.add_argument('--namespace', action='append', default=[],
                   help='camera namespace (repeat for several cameras; default: none)')
    p.add_argument('--nodes', default='perception,scene',
                   help='comma-separated: perception, scene (default: both)')
    p.add_argument('--batched', action='store_true',
                   help='one perception_node for all cameras (perception.cameras)')
    p.add_argument('--one-process', action='store_true',
                   help='perception_node and scene_node of a camera in one process')
    p.add_argument('--log-level', default='info')
    p.add_argument('--duration', type=float, default=0.0,
                   help='stop after this many seconds (0 = until Ctrl-C)')
    p.add_argument('--view', type=int, nargs='?', const=8765, metavar='PORT',
                   help='also serve the graph to Foxglove (`mr-mllm view`) on PORT '
                        '(default 8765)')


def run(args) -> int:
    kinds = [k.strip() for k in args.nodes.split(',') if k.strip()]
    specs = graph_specs(kinds, args.namespace, args.config, args.log_level, args.batched,
                        args.one_process)
    with NodeGroup(specs) as group:
        log.info('started %d node process(es) in ROS_DOMAIN_ID=%s; Ctrl-C stops them',
                 len(specs), group.env['ROS_DOMAIN_ID'])
        viewer = None if args.view is None else subprocess.Popen(
            [sys.executable, '-m', 'mr_mllm_ros.cli', 'view', '--port', str(args.view),
             *(f'--namespace={ns}' for ns in args.namespace)], env=group.env)
        try:
            group.wait(args.duration)
        except KeyboardInterrupt:
            pass
        finally:
            if viewer is not None:
                viewer.terminate()
                viewer.wait(10)
        codes = group.stop()
    return 0 if all(c in (0, None, -2, 130) for c in codes) else 1
