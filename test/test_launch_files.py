"""The launch files are run by `ros2 launch` on robots; launch/launch_ros are not
installable here, so this test executes them against small stand-ins of the launch API
and checks what they declare: the documented arguments, executables that setup.py
installs, the packaged params file as default, one node per camera, and (with rclpy) that
their remapping rules give each node the camera topic. It cannot check launch's own
runtime behaviour (that needs a ROS install)."""

import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


class _Sub:
    def __init__(self, name):
        self.name = name


class _Context:
    def __init__(self, values):
        self.values = values


class _LaunchConfiguration(_Sub):
    def perform(self, context):
        return context.values[self.name]


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@pytest.fixture
def fake_launch(monkeypatch):
    mods = {
        'ament_index_python': types.ModuleType('ament_index_python'),
        'ament_index_python.packages': types.ModuleType('ament_index_python.packages'),
        'launch': types.ModuleType('launch'),
        'launch.actions': types.ModuleType('launch.actions'),
        'launch.conditions': types.ModuleType('launch.conditions'),
        'launch.substitutions': types.ModuleType('launch.substitutions'),
        'launch_ros': types.ModuleType('launch_ros'),
        'launch_ros.actions': types.ModuleType('launch_ros.actions'),
    }
    mods['ament_index_python.packages'].get_package_share_directory = \
        lambda pkg: str(REPO) if pkg == 'mr_mllm_ros' else pytest.fail(pkg)
    mods['launch'].LaunchDescription = lambda entities: list(entities)
    for name in ('DeclareLaunchArgument', 'OpaqueFunction', 'SetEnvironmentVariable'):
        setattr(mods['launch.actions'], name, type(name, (_Recorder,), {}))
    mods['launch.conditions'].IfCondition = type('IfCondition', (_Recorder,), {})
    mods['launch.substitutions'].LaunchConfiguration = _LaunchConfiguration
    mods['launch_ros.actions'].LifecycleNode = type('LifecycleNode', (_Recorder,), {})
    for k, v in mods.items():
        monkeypatch.setitem(sys.modules, k, v)
    return mods


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem.replace('.', '_'), path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.generate_launch_description()


def _installed_executables():
    tree = ast.parse((REPO / 'setup.py').read_text())
    scripts = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, str) and ' = mr_mllm_ros.' in n.value]
    return {s.split(' = ')[0] for s in scripts}


def _arguments(entities):
    return {e.args[0]: e.kwargs for e in entities if type(e).__name__ == 'DeclareLaunchArgument'}


@pytest.mark.parametrize('name', ['perception.launch.py', 'multi_camera.launch.py'])
def test_every_launch_file_declares_the_documented_arguments(fake_launch, name):
    entities = _load(REPO / 'launch' / name)
    args = _arguments(entities)
    assert {'params_file', 'use_sim_time', 'log_level', 'fastdds_profile'} <= set(args)
    assert args['fastdds_profile']['default_value'].endswith('fastdds_large_images.xml')
    env = [e for e in entities if type(e).__name__ == 'SetEnvironmentVariable']
    assert [e.args[0] for e in env] == ['FASTDDS_DEFAULT_PROFILES_FILE']
    assert all(kw.get('description') for kw in args.values())
    assert args['params_file']['default_value'] == str(REPO / 'config' / 'mr_mllm.yaml')


def _launch_nodes(fake_launch, name, **values):
    """The LifecycleNodes of a launch file's OpaqueFunction with these argument values."""
    entities = _load(REPO / 'launch' / name)
    opaque = next(e for e in entities if type(e).__name__ == 'OpaqueFunction')
    defaults = {k: kw['default_value'] for k, kw in _arguments(entities).items()}
    return opaque.kwargs['function'](_Context({**defaults, **values}))


def test_single_camera_nodes_use_installed_executables(fake_launch):
    assert {'namespace', 'image_topic'} <= set(_arguments(
        _load(REPO / 'launch' / 'perception.launch.py')))
    nodes = _launch_nodes(fake_launch, 'perception.launch.py', scene='true', memory='true')
    executables = _installed_executables()
    assert [n.kwargs['executable'] for n in nodes] == ['perception_node', 'scene_node',
                                                       'memory_node']
    assert all(n.kwargs['executable'] in executables for n in nodes)
    assert all(n.kwargs['name'] == n.kwargs['executable'] for n in nodes)
    # the plan `mr-mllm up --namespace camera` starts: memory_node serves the camera
    assert [n.kwargs['namespace'] for n in nodes] == ['camera', 'camera', '']
    assert {'memory.cameras': ['camera']} in nodes[2].kwargs['parameters']
    assert all(n.kwargs['remappings'] == [] for n in nodes)  # image_topic:=image
    only = _launch_nodes(fake_launch, 'perception.launch.py')
    assert [n.kwargs['executable'] for n in only] == ['perception_node']


def _subscribed_image(plan_namespace, camera, compressed):
    """The topic a node in `plan_namespace` subscribes to for `camera`'s images, as ROS
    resolves it with the plan's remapping rules (rclpy, no graph)."""
    from mr_mllm_ros.core.config import load_config
    from mr_mllm_ros.ros.qos import image_input
    _, topic = image_input(load_config(overrides={'camera.compressed': compressed}).camera)
    return f'{camera}/{topic}' if plan_namespace != camera else topic


@pytest.mark.parametrize('compressed', [True, False])
def test_perception_launch_remaps_every_image_input_to_image_topic(fake_launch, compressed):
    """Every node taking the camera's images gets `image_topic`, compressed input
    included (scene_node once missed `image/compressed`)."""
    import rclpy
    from rclpy.context import Context
    nodes = _launch_nodes(fake_launch, 'perception.launch.py', namespace='front_cam',
                          image_topic='/front_cam/color/image_raw', scene='true',
                          memory='true')
    want = '/front_cam/color/image_raw' + ('/compressed' if compressed else '')
    context = Context()
    rclpy.init(context=context)
    try:
        for n in nodes:
            args = ['--ros-args'] + [a for rule in n.kwargs['remappings']
                                     for a in ('-r', f'{rule[0]}:={rule[1]}')]
            node = rclpy.create_node(n.kwargs['name'], namespace=n.kwargs['namespace'],
                                     context=context, cli_args=args)
            try:
                topic = _subscribed_image(n.kwargs['namespace'], 'front_cam', compressed)
                assert node.resolve_topic_name(topic) == want, n.kwargs['executable']
            finally:
                node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_image_topic_relative_to_each_camera_and_up_passes_the_same_rules(fake_launch):
    from mr_mllm_ros.app.up import graph_specs
    from mr_mllm_ros.core.errors import ConfigError
    from mr_mllm_ros.topology import image_remappings
    nodes = _launch_nodes(fake_launch, 'multi_camera.launch.py', cameras='front,rear',
                          batched='true', image_topic='color/image_raw')
    assert nodes[0].kwargs['namespace'] == ''  # batched: one node for both cameras
    assert ('/rear/image/compressed', '/rear/color/image_raw/compressed') in \
        nodes[0].kwargs['remappings']
    specs = graph_specs(['perception', 'scene'], ['front'], None,
                        image_topic='/front/color/image_raw')
    rules = image_remappings(['front'], '/front/color/image_raw')
    for spec in specs:
        cmd = spec.command()
        assert [cmd[i + 1] for i, a in enumerate(cmd) if a == '-r' and ':=/' in cmd[i + 1]
                and not cmd[i + 1].startswith('__')] == [f'{a}:={b}' for a, b in rules]
    with pytest.raises(ConfigError, match='one camera'):
        image_remappings(['front', 'rear'], '/front/color/image_raw')


@pytest.mark.parametrize('batched, expected', [('false', 3), ('true', 1)])
def test_multi_camera_makes_one_node_per_camera_or_one_batched(fake_launch, batched, expected):
    entities = _load(REPO / 'launch' / 'multi_camera.launch.py')
    opaque = next(e for e in entities if type(e).__name__ == 'OpaqueFunction')
    ctx = _Context({'cameras': 'front, rear,/left', 'batched': batched, 'scene': 'false',
                    'memory': 'false', 'params_file': 'p.yaml', 'use_sim_time': 'false',
                    'log_level': 'info', 'image_topic': 'image'})
    nodes = opaque.kwargs['function'](ctx)
    assert len(nodes) == expected
    if batched == 'true':
        assert {'perception.cameras': ['front', 'rear', 'left']} in nodes[0].kwargs['parameters']
    else:
        assert [n.kwargs['namespace'] for n in nodes] == ['front', 'rear', 'left']


def test_multi_camera_memory_is_one_node_for_every_camera(fake_launch):
    entities = _load(REPO / 'launch' / 'multi_camera.launch.py')
    opaque = next(e for e in entities if type(e).__name__ == 'OpaqueFunction')
    ctx = _Context({'cameras': 'front,rear', 'batched': 'false', 'scene': 'false',
                    'memory': 'true', 'params_file': 'p.yaml', 'use_sim_time': 'false',
                    'log_level': 'info', 'image_topic': 'image'})
    nodes = opaque.kwargs['function'](ctx)
    memory = [n for n in nodes if n.kwargs['executable'] == 'memory_node']
    assert len(memory) == 1 and memory[0].kwargs['namespace'] == ''
    assert {'memory.cameras': ['front', 'rear']} in memory[0].kwargs['parameters']


def test_up_starts_one_memory_node_for_every_camera():
    from mr_mllm_ros.app.up import graph_specs
    specs = graph_specs(['perception', 'scene', 'memory'], ['front', 'rear'], None)
    memory = [s for s in specs if s.kind == 'memory']
    assert len(memory) == 1 and memory[0].namespace == ''
    assert memory[0].parameters == {'memory.cameras': ['front', 'rear']}
    assert memory[0].node_paths() == ['/memory_node']
    combined = graph_specs(['perception', 'scene', 'memory'], ['front'], None,
                           one_process=True)
    assert [s.kind for s in combined] == ['combined', 'memory']


def test_dds_shared_memory_clean_runs():
    """Fast DDS's own `shm clean` (shipped in the ros-fastdds wheel) is found and runs: the
    launcher uses it after a child had to be killed, the tests at session start."""
    from mr_mllm_ros.app.launcher import clean_dds_shm
    assert clean_dds_shm() is True
