"""ROS parameters declared from the core config schema.

Names, types, descriptions and ranges come from core.config; default values come from
the packaged config/mr_mllm.yaml (the only place defaults live); a `--params-file`
(launch `params_file:=`) overrides them as usual. Invalid values are rejected at start
(configure fails with the config error) and on `ros2 param set` (the set is refused with
the reason), exactly as `mr-mllm replay --config` would reject them.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.exceptions import ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..core import config as cfg
from ..core.errors import ConfigError

_PARAM_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
                list[str]: ParameterType.PARAMETER_STRING_ARRAY,
                list[float]: ParameterType.PARAMETER_DOUBLE_ARRAY,
                list[int]: ParameterType.PARAMETER_INTEGER_ARRAY}
_EMPTY_ARRAY = {ParameterType.PARAMETER_STRING_ARRAY: Parameter.Type.STRING_ARRAY,
                ParameterType.PARAMETER_DOUBLE_ARRAY: Parameter.Type.DOUBLE_ARRAY,
                ParameterType.PARAMETER_INTEGER_ARRAY: Parameter.Type.INTEGER_ARRAY}


def _flatten(data: dict, prefix: str = '') -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f'{prefix}.{k}' if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _descriptor(name: str, tp: Any, meta) -> ParameterDescriptor:
    doc = meta['doc']
    if meta.get('choices'):
        doc += f' One of: {", ".join(map(str, meta["choices"]))}.'
    if meta.get('read_only'):
        # Not ROS read_only: a node whose configure failed (e.g. a wrong model path) must
        # be fixable by setting the parameter and configuring again.
        doc += ' Applied at the next configure (lifecycle cleanup + configure).'
    d = ParameterDescriptor(name=name, type=_PARAM_TYPES[tp], description=doc)
    low, high = meta.get('low'), meta.get('high')
    if low is not None and high is not None:
        if tp is float:
            d.floating_point_range = [FloatingPointRange(from_value=float(low),
                                                         to_value=float(high), step=0.0)]
        elif tp is int:
            d.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
    return d


def selected_leaves(sections: Sequence[str]):
    """Config leaves of the given top-level sections (top-level scalar keys always)."""
    for name, tp, meta in cfg.iter_leaves():
        top = name.split('.', 1)[0]
        if '.' not in name or top in sections:
            yield name, tp, meta


class ConfigParameters:
    """Declares a node's parameters and keeps a validated core Config in sync with them."""

    def __init__(self, node: Node, sections: Sequence[str],
                 on_change: Callable[[cfg.Config], None] | None = None):
        self._node = node
        self._leaves = {name: (tp, meta) for name, tp, meta in selected_leaves(sections)}
        self._defaults = _flatten(cfg.read_parameters_file(cfg.default_config_path()))
        self._on_change = on_change
        for name, (tp, meta) in self._leaves.items():
            desc = _descriptor(name, tp, meta)
            default = self._defaults[name]
            if desc.type in _EMPTY_ARRAY and not default:
                # rclpy types an empty list as BYTE_ARRAY: declare by type instead.
                default = _EMPTY_ARRAY[desc.type]
            node.declare_parameter(name, default, desc)
            if desc.type in _EMPTY_ARRAY and not _initialized(node, name):
                # Declared by type without a value, or a params file's `key: []` (rcl
                # cannot type an empty YAML list, it arrives NOT_SET): an empty list.
                node.set_parameters([Parameter(name, _EMPTY_ARRAY[desc.type], [])])
        node.add_on_set_parameters_callback(self._validate)
        # Post-set callbacks exist from Iron on; on Humble changes apply on the next
        # successful validation instead (same effect, a moment earlier).
        self._post_set = hasattr(node, 'add_post_set_parameters_callback')
        if self._post_set:
            node.add_post_set_parameters_callback(self._applied)

    def values(self) -> dict[str, Any]:
        return {name: self._node.get_parameter(name).value for name in self._leaves}

    def config(self) -> cfg.Config:
        """Packaged defaults + this node's parameter values, validated (ConfigError)."""
        return cfg.load_config(overrides={k: _plain(v) for k, v in self.values().items()})

    def _validate(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: _plain(p.value) for p in params if p.name in self._leaves}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            cfg.load_config(overrides={**{k: _plain(v) for k, v in self.values().items()},
                                       **changes})
        except ConfigError as e:
            return SetParametersResult(successful=False, reason=str(e))
        if not self._post_set and self._on_change:
            self._on_change(cfg.load_config(overrides={
                **{k: _plain(v) for k, v in self.values().items()}, **changes}))
        return SetParametersResult(successful=True)

    def _applied(self, params: list[Parameter]) -> None:
        if self._on_change and any(p.name in self._leaves for p in params):
            self._on_change(self.config())


def _initialized(node: Node, name: str) -> bool:
    try:
        return node.get_parameter(name).type_ != Parameter.Type.NOT_SET
    except ParameterUninitializedException:
        return False


def _plain(value: Any) -> Any:
    """rclpy gives arrays as array.array / lists; the config wants lists."""
    if value is not None and not isinstance(value, (str, bytes, bool, int, float)):
        return list(value)
    return value
