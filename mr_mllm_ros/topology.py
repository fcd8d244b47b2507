"""Which node processes a camera graph has: the one answer that the launch files
(launch/multi_camera.launch.py) and `mr-mllm up` both turn into processes. No ROS import:
launch files on a robot and the pip-wheel launcher both load it."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Log level of every node unless the user chooses (launch argument, `up --log-level`).
DEFAULT_LOG_LEVEL = 'info'
KINDS = ('perception', 'scene', 'memory')
CAMERA_KINDS = ('perception', 'scene')  # one per camera (memory: one for all cameras)


@dataclass(frozen=True)
class NodePlan:
    kind: str            # 'perception', 'scene', 'combined' (both in one process), 'memory'
    namespace: str       # camera namespace, '' for none
    parameters: dict = field(default_factory=dict)  # set on top of the params file


def camera_list(text: str | list[str]) -> list[str]:
    """'front, /rear,' or ['front', '/rear'] -> ['front', 'rear']."""
    items = text.split(',') if isinstance(text, str) else text
    return [c.strip().strip('/') for c in items if c.strip().strip('/')]


def plan_graph(cameras: list[str], kinds: tuple[str, ...] | list[str] = CAMERA_KINDS,
               batched: bool = False, one_process: bool = False) -> list[NodePlan]:
    """One perception (and/or scene) node per camera namespace; `batched`: one
    perception_node serves every camera (perception.cameras: one model, a latest-frame
    slot per camera); `one_process`: a camera's two nodes share a process; `memory`: one
    memory_node (root namespace) for every camera (memory.cameras)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f'unknown node kind(s) {sorted(unknown)}; known: {list(KINDS)}')
    named = [c for c in cameras if c]
    cameras = cameras or ['']
    plans: list[NodePlan] = []
    if one_process and set(CAMERA_KINDS) <= set(kinds):
        plans = [NodePlan('combined', ns) for ns in cameras]
    else:
        shared = batched and len(cameras) > 1 and 'perception' in kinds
        if shared:
            plans.append(NodePlan('perception', '', {'perception.cameras': list(cameras)}))
        for ns in cameras:
            plans += [NodePlan(kind, ns) for kind in CAMERA_KINDS
                      if kind in kinds and not (kind == 'perception' and shared)]
    if 'memory' in kinds:
        plans.append(NodePlan('memory', '', {'memory.cameras': named} if named else {}))
    return plans
