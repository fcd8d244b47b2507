"""Which node processes a camera graph has, and where their camera images come from: the
one answer that the launch files (launch/perception.launch.py, multi_camera.launch.py) and
`mr-mllm up` all turn into processes. No ROS import: launch files on a robot and the
pip-wheel launcher both load it."""

from __future__ import annotations

from dataclasses import dataclass, field

from .core.errors import ConfigError

#: Log level of every node unless the user chooses (launch argument, `up --log-level`).
DEFAULT_LOG_LEVEL = 'info'
KINDS = ('perception', 'scene', 'memory')
CAMERA_KINDS = ('perception', 'scene')  # one per camera (memory: one for all cameras)


@dataclass(frozen=True)
class NodePlan:
    kind: str            # 'perception', 'scene', 'combined' (both in one process), 'memory'
    namespace: str       # camera namespace, '' for none
    parameters: dict = field(default_factory=dict)  # set on top of the params file
    #: topic remapping rules (from, to), fully qualified names: the camera image
    remappings: tuple[tuple[str, str], ...] = ()


def camera_list(text: str | list[str]) -> list[str]:
    """'front, /rear,' or ['front', '/rear'] -> ['front', 'rear']."""
    items = text.split(',') if isinstance(text, str) else text
    return [c.strip().strip('/') for c in items if c.strip().strip('/')]


def image_remappings(cameras: list[str], image_topic: str) -> tuple[tuple[str, str], ...]:
    """Remapping rules that give each camera's `image` input (`<camera>/image`, and
    `<camera>/image/compressed` when camera.compressed: image_transport's naming) the
    topic `image_topic`: relative names resolve in each camera's namespace, an absolute
    one serves a single camera. Fully qualified on both sides, so one rule set fits a
    node in the camera's namespace and one in the root namespace serving several cameras
    (a batched perception_node, memory_node). None for '' or 'image' (no remapping)."""
    topic = image_topic.strip()
    if topic in ('', 'image'):
        return ()
    if topic.startswith('/') and len(cameras) > 1:
        raise ConfigError(f'image topic {topic!r} is absolute: it can serve one camera, not '
                         f'{len(cameras)}; give a name relative to each camera namespace')
    rules: list[tuple[str, str]] = []
    for camera in cameras:
        base = f'/{camera}' if camera else ''
        to = topic if topic.startswith('/') else f'{base}/{topic.strip("/")}'
        rules += [(f'{base}/image', to), (f'{base}/image/compressed', f'{to}/compressed')]
    return tuple(rules)


def plan_graph(cameras: list[str], kinds: tuple[str, ...] | list[str] = CAMERA_KINDS,
               batched: bool = False, one_process: bool = False,
               image_topic: str = '') -> list[NodePlan]:
    """One perception (and/or scene) node per camera namespace; `batched`: one
    perception_node serves every camera (perception.cameras: one model, a latest-frame
    slot per camera); `one_process`: a camera's two nodes share a process; `memory`: one
    memory_node (root namespace) for every camera (memory.cameras). `image_topic`: where
    every node taking a camera's images gets them (image_remappings)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f'unknown node kind(s) {sorted(unknown)}; known: {list(KINDS)}')
    named = [c for c in cameras if c]
    cameras = cameras or ['']
    # Every node gets every camera's rules (memory_node takes images for thumbnails); a
    # rule no subscription of the node matches does nothing.
    remaps = image_remappings(cameras, image_topic)
    plans: list[NodePlan] = []
    if one_process and set(CAMERA_KINDS) <= set(kinds):
        plans = [NodePlan('combined', ns, remappings=remaps) for ns in cameras]
    else:
        shared = batched and len(cameras) > 1 and 'perception' in kinds
        if shared:
            plans.append(NodePlan('perception', '', {'perception.cameras': list(cameras)},
                                  remaps))
        for ns in cameras:
            plans += [NodePlan(kind, ns, remappings=remaps) for kind in CAMERA_KINDS
                      if kind in kinds and not (kind == 'perception' and shared)]
    if 'memory' in kinds:
        plans.append(NodePlan('memory', '', {'memory.cameras': named} if named else {},
                              remaps))
    return plans
