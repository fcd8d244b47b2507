"""`mr-mllm up`: the launch files' graph for installs without `ros2 launch`."""

from __future__ import annotations

import logging

from .launcher import NodeGroup, NodeSpec

log = logging.getLogger(__name__)


def graph_specs(kinds: list[str], namespaces: list[str], params_file: str | None,
                log_level: str = 'info', batched: bool = False) -> list[NodeSpec]:
    """One perception (and/or scene) node per camera namespace, as launch/ does; with
    `batched`, one perception_node serves every camera (perception.cameras)."""
    files = [params_file] if params_file else []
    namespaces = namespaces or ['']
    specs: list[NodeSpec] = []
    for kind in kinds:
        if kind == 'perception' and batched and len(namespaces) > 1:
            specs.append(NodeSpec(kind, '', files, {'perception.cameras': namespaces},
                                  log_level))
            continue
        specs += [NodeSpec(kind, ns, files, {}, log_level) for ns in namespaces]
    return specs


def run_up(args) -> int:
    kinds = [k.strip() for k in args.nodes.split(',') if k.strip()]
    specs = graph_specs(kinds, args.namespace, args.config, args.log_level,
                        getattr(args, 'batched', False))
    with NodeGroup(specs) as group:
        log.info('started %d node process(es) in ROS_DOMAIN_ID=%s; Ctrl-C stops them',
                 len(specs), group.env['ROS_DOMAIN_ID'])
        try:
            group.wait(args.duration)
        except KeyboardInterrupt:
            pass
        codes = group.stop()
    return 0 if all(c in (0, None, -2, 130) for c in codes) else 1
