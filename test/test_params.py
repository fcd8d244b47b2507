"""Node parameters come from the config schema: descriptors, one default (the packaged
YAML), params-file overrides incl. empty lists, and invalid sets refused with the reason.
The node joins DDS with conftest.py's ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and random
ROS_DOMAIN_ID."""

import pytest
import rclpy
from rclpy.parameter import Parameter

from mr_mllm_ros.core import config as cfg
from mr_mllm_ros.ros.params import ConfigParameters


@pytest.fixture
def node_with_params(tmp_path):
    params = tmp_path / 'p.yaml'
    params.write_text('/**:\n  ros__parameters:\n    detector:\n      conf: 0.4\n'
                      '      classes: []\n    perception:\n      cameras: [a, b]\n')
    context = rclpy.Context()
    rclpy.init(args=['--ros-args', '--params-file', str(params)], context=context)
    node = rclpy.create_node('param_test', context=context)
    changes = []
    holder = ConfigParameters(node, ('camera', 'detector', 'perception'), changes.append)
    yield node, holder, changes
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_declared_with_descriptions_defaults_and_file_overrides(node_with_params):
    node, holder, _ = node_with_params
    c = holder.config()
    assert c.detector.conf == 0.4                      # from the params file
    assert c.detector.iou == cfg.load_config().detector.iou  # packaged default
    assert c.detector.classes == []                    # `[]` in a params file
    assert c.perception.cameras == ['a', 'b']
    desc = node.describe_parameter('detector.conf')
    assert 'confidence' in desc.description.lower()
    assert desc.floating_point_range[0].to_value == 1.0
    assert 'next configure' in node.describe_parameter('detector.backend').description
    assert not node.has_parameter('mllm.backend')  # not this node's section


def test_invalid_set_is_refused_with_reason_and_valid_set_applies(node_with_params):
    node, holder, changes = node_with_params
    r = node.set_parameters([Parameter('detector.conf', value=0.9)])[0]
    assert r.successful and changes and changes[-1].detector.conf == 0.9
    r = node.set_parameters([Parameter('detector.classes', value=['person', 'tie'])])[0]
    assert r.successful and holder.config().detector.classes == ['person', 'tie']
    r = node.set_parameters([Parameter('detector.conf', value=3.0)])[0]
    assert not r.successful
    assert node.get_parameter('detector.conf').value == 0.9
    r = node.set_parameters([Parameter('detector.imgsz', value=320)])[0]
    assert r.successful and holder.config().detector.imgsz == 320  # used at next configure
    r = node.set_parameters([Parameter('detector.backend', value='tensorflow')])[0]
    assert not r.successful and 'opencv_darknet' in r.reason


def test_empty_list_default_without_any_params_file():
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    try:
        node = rclpy.create_node('param_test_plain', context=context)
        holder = ConfigParameters(node, ('perception', 'detector'))
        assert holder.config().perception.cameras == []
        assert holder.config().detector.classes == []
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
