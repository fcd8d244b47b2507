"""Every config section a node's code reads is one the node declares as ROS parameters
(its SECTIONS): a section left out is silently the YAML default on the live node, as
`tracker.*` and `depth.*` were on perception_node (replay, which reads the file, did
follow them)."""

import importlib
import re
from pathlib import Path

import pytest

NODES = Path(__file__).resolve().parents[1] / 'mr_mllm_ros' / 'nodes'


@pytest.mark.parametrize('name', ['perception_node', 'scene_node', 'memory_node'])
def test_a_node_declares_every_section_it_reads(name):
    source = (NODES / f'{name}.py').read_text()
    read = set(re.findall(r'(?:_config|\bconfig)\.([a-z_]+)\.', source))
    declared = set(importlib.import_module(f'mr_mllm_ros.nodes.{name}').SECTIONS)
    assert read, 'the pattern finds what the node reads'
    assert read <= declared, f'{name} reads {sorted(read - declared)} without declaring it'
