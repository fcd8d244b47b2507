"""mr_mllm_ros.core must never import rclpy or any message package: it is what replay,
the CLI and non-ROS users run, and what the nodes wrap."""

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / 'mr_mllm_ros' / 'core'
FORBIDDEN = ('rclpy', 'rosidl', 'builtin_interfaces', 'std_msgs', 'sensor_msgs',
             'diagnostic_msgs', 'lifecycle_msgs', 'rcl_interfaces', 'mr_mllm_interfaces',
             'launch', 'launch_ros', 'cv_bridge', 'message_filters')


def _is_forbidden(module: str) -> bool:
    return module.split('.')[0] in FORBIDDEN or module.split('.')[0].endswith('_msgs')


def test_no_ros_import_statement_in_core():
    offenders = []
    for path in sorted(CORE.rglob('*.py')):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f'{path.relative_to(CORE)}:{node.lineno} {n}'
                          for n in names if _is_forbidden(n)]
    assert not offenders, 'core imports ROS: ' + ', '.join(offenders)


def test_importing_every_core_module_loads_no_ros_module():
    modules = sorted('mr_mllm_ros.core.' + '.'.join(p.relative_to(CORE).with_suffix('').parts)
                     for p in CORE.rglob('*.py') if p.name != '__init__.py')
    code = ('import importlib, sys\n'
            f'for m in {modules!r}:\n'
            '    importlib.import_module(m)\n'
            f'bad = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r} '
            'or m.split(".")[0].endswith("_msgs"))\n'
            'print(",".join(bad))\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == '', f'ROS modules loaded by core: {out.stdout.strip()}'
    assert len(modules) >= 10  # the walk found the core


def test_the_check_itself_catches_a_ros_import(tmp_path):
    bad = tmp_path / 'x.py'
    bad.write_text('from sensor_msgs.msg import Image\nimport rclpy.node\n')
    tree = ast.parse(bad.read_text())
    found = [n for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for n in ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module]) if _is_forbidden(n)]
    assert found == ['sensor_msgs.msg', 'rclpy.node']
