"""Typed, validated configuration shared by the nodes, replay and the CLI.

The schema (types, descriptions, allowed values) is in core.config_sections, one dataclass
per section, and Config here; the defaults live in exactly one place, the packaged
`config/mr_mllm.yaml`, which is also a ROS 2 parameters file (`/**: ros__parameters: ...`),
so `ros2 launch ... params_file:=...`, `mr-mllm up` and `mr-mllm replay --config` all read
the same keys. A user file only lists what it changes.

Parameter names are dotted section paths (`detector.conf`), the same names the nodes
declare as ROS parameters.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from .config_sections import (AlertsConfig, CameraConfig, DepthConfig, DetectorConfig,
                              FusionConfig, LookerConfig, MemoryConfig, MllmConfig,
                              PerceptionConfig, ReinforceConfig, SceneConfig, TrackerConfig,
                              spec)
from .errors import ConfigError

PACKAGE_NAME = 'mr_mllm_ros'
DEFAULT_CONFIG_NAME = 'mr_mllm.yaml'


@dataclass(frozen=True)
class Config:
    models_dir: str = spec('Folder for model weights (relative model paths are looked up '
                           'here). Empty = $MR_MLLM_MODELS_DIR, else <checkout>/models, '
                           'else ~/.local/share/mr_mllm_ros/models.', read_only=True)
    autostart: bool = spec('Nodes configure and activate themselves at start (no lifecycle '
                           'manager needed). False = wait for lifecycle transitions.',
                           read_only=True)
    max_image_pixels: int = spec('Refuse images larger than this many pixels (protects '
                                 'memory from huge or forged frames). 33177600 = 8K UHD.',
                                 low=1, high=1_000_000_000)
    camera: CameraConfig = spec('Camera input.')
    detector: DetectorConfig = spec('Object detector.')
    tracker: TrackerConfig = spec('Multi-object tracking (track ids).')
    perception: PerceptionConfig = spec('perception_node behaviour.')
    depth: DepthConfig = spec('3D positions of detections from aligned depth (camera.rgbd).')
    mllm: MllmConfig = spec('Multimodal LLM.')
    scene: SceneConfig = spec('scene_node behaviour: descriptions and VQA.')
    reinforce: ReinforceConfig = spec('MLLM -> perception feedback.')
    looker: LookerConfig = spec('Pixel classifier and posture in the reasoning step (the '
                                'looker).')
    alerts: AlertsConfig = spec('Corner-case alerts.')
    fusion: FusionConfig = spec('Shared-query fusion (MR-MLLM soft tokens).')
    memory: MemoryConfig = spec('Scene memory (memory_node, `mr-mllm memory`, replay).')

    def get(self, dotted: str) -> Any:
        obj: Any = self
        for part in dotted.split('.'):
            obj = getattr(obj, part)
        return obj

    def resolve_model_path(self, path: str) -> Path:
        """Absolute path of a model file: as given when absolute, else in models_dir."""
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else models_dir(self) / p

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def models_dir(config: Config | None = None) -> Path:
    configured = config.models_dir if config is not None else ''
    if configured:
        return Path(os.path.expanduser(configured)).resolve()
    if os.environ.get('MR_MLLM_MODELS_DIR'):
        return Path(os.environ['MR_MLLM_MODELS_DIR']).expanduser().resolve()
    checkout = _checkout_root()
    if checkout is not None:
        return checkout / 'models'
    return Path.home() / '.local' / 'share' / PACKAGE_NAME / 'models'


def _checkout_root() -> Path | None:
    """The repository root when running from a source checkout (or an editable install)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / 'package.xml').is_file() and (root / 'config').is_dir() else None


def share_dir() -> Path:
    """Where config/, launch/ of this package are: the checkout, else the install's share/."""
    checkout = _checkout_root()
    if checkout is not None:
        return checkout
    # pip/colcon install: <prefix>/lib/pythonX.Y/site-packages/mr_mllm_ros/core/config.py
    candidates = [Path(__file__).resolve().parents[5] / 'share' / PACKAGE_NAME,
                  Path(sys.prefix) / 'share' / PACKAGE_NAME]
    for c in candidates:
        if (c / 'config' / DEFAULT_CONFIG_NAME).is_file():
            return c
    raise ConfigError(f'cannot find the packaged config/{DEFAULT_CONFIG_NAME} '
                      f'(looked in {", ".join(str(c) for c in candidates)})')


def default_config_path() -> Path:
    return share_dir() / 'config' / DEFAULT_CONFIG_NAME


# ----------------------------------------------------------------------------- loading

def read_json_file(path: str | os.PathLike, what: str):
    """A JSON input file (ground truth, labels, datasets), or a ConfigError naming it as
    `what` and saying why."""
    try:
        return json.loads(Path(path).read_text(encoding='utf-8'))
    except OSError as e:
        raise ConfigError(f'cannot read {what} {path}: {e.strerror}') from e
    except json.JSONDecodeError as e:
        raise ConfigError(f'{what} {path} is not valid JSON: {e}') from e


def read_parameters_file(path: str | os.PathLike, node: str | None = None) -> dict[str, Any]:
    """The nested parameter dict of a YAML file.

    Accepts a ROS 2 parameters file (`<node or /**>: ros__parameters: {...}`; sections for
    `/**`, `node` and `/<ns>/node` are merged in file order) or a plain nested mapping."""
    try:
        with open(path, encoding='utf-8') as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f'cannot read config file {path}: {e.strerror}') from e
    except yaml.YAMLError as e:
        raise ConfigError(f'config file {path} is not valid YAML: {e}') from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'config file {path}: top level must be a mapping, '
                          f'got {type(data).__name__}')
    sections = {k: v for k, v in data.items()
                if isinstance(v, dict) and 'ros__parameters' in v}
    if not sections:
        return data
    merged: dict[str, Any] = {}
    for key, section in sections.items():
        name = str(key).rstrip('/').split('/')[-1]
        if key == '/**' or node is None or name in (node, '**'):
            merge_into(merged, section['ros__parameters'] or {})
    return merged


def merge_into(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict update (nested sections merge, leaves replace). Dotted keys
    (`detector.conf: 0.5`) are accepted too and expanded."""
    for key, value in update.items():
        if isinstance(key, str) and '.' in key:
            head, rest = key.split('.', 1)
            merge_into(base, {head: {rest: value}})
        elif isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge_into(base[key], value)
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value
    return base


def load_config(*paths: str | os.PathLike, overrides: Mapping[str, Any] | None = None,
                node: str | None = None) -> Config:
    """Packaged defaults, then each file in order, then `overrides` (dotted or nested)."""
    data = read_parameters_file(default_config_path(), node)
    for p in paths:
        if p:
            merge_into(data, read_parameters_file(p, node))
    if overrides:
        merge_into(data, dict(overrides))
    return _cross_check(build(Config, data, ''))


def _cross_check(config: Config) -> Config:
    """Constraints between keys (each key alone is checked by its spec)."""
    from .detection.tracking import TrackParams, parse_class_overrides
    t = config.tracker
    parse_class_overrides(t.class_overrides, TrackParams(
        t.lost_keep_s, t.confirm_s, t.new_track_score, t.match_buffer))  # raises ConfigError
    r = config.reinforce
    for low, high in (('verify_min_score', 'verify_max_score'),
                      ('reject_probability', 'accept_probability')):
        if getattr(r, low) > getattr(r, high):
            raise ConfigError(f'config keys reinforce.{low} = {getattr(r, low)} and '
                              f'reinforce.{high} = {getattr(r, high)}: {low} must not be '
                              f'greater than {high}')
    return config


def build(cls, data: Any, prefix: str):
    """Construct dataclass `cls` from a nested dict, validating every key and value."""
    if not isinstance(data, Mapping):
        raise ConfigError(f'{prefix or "config"}: expected a mapping of keys, got '
                          f'{data!r}')
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f'unknown config key {_join(prefix, unknown[0])!r}; allowed keys'
                          f'{" in " + prefix if prefix else ""}: {", ".join(sorted(fields))}')
    values = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name not in data:
            raise ConfigError(f'config key {key!r} is missing (the packaged '
                              f'{DEFAULT_CONFIG_NAME} defines every key)')
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = build(tp, data[name], key)
        else:
            values[name] = check_value(key, data[name], tp, f.metadata)
    return cls(**values)


def _join(prefix: str, name: str) -> str:
    return f'{prefix}.{name}' if prefix else name


def check_value(key: str, value: Any, tp: Any, meta: Mapping[str, Any]) -> Any:
    """Validate one leaf value against its type and metadata; returns the coerced value."""
    value = _coerce(key, value, tp)
    choices = meta.get('choices')
    if choices and value not in choices:
        raise ConfigError(f'config key {key!r} = {value!r} is not allowed; '
                          f'choose one of: {", ".join(map(str, choices))}')
    low, high = meta.get('low'), meta.get('high')
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f'config key {key!r} = {value!r} must be a finite number')
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f'config key {key!r} = {value!r} is out of range; allowed: '
                              f'{low} <= value <= {high}')
    return value


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'config key {key!r} = {value!r} must be a list of '
                              f'{item_tp.__name__}')
        return [_coerce(f'{key}[{i}]', v, item_tp) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - schema error, not user error
        raise TypeError(f'unsupported config type {tp} for {key}')
    raise ConfigError(f'config key {key!r} = {value!r} has the wrong type: expected '
                      f'{tp.__name__}, got {type(value).__name__}')


def iter_leaves(cls=Config, prefix: str = ''):
    """(dotted name, type, field metadata) of every leaf parameter, in schema order; the
    nodes declare their ROS parameters from this."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        name = _join(prefix, f.name)
        if dataclasses.is_dataclass(tp):
            yield from iter_leaves(tp, name)
        else:
            yield name, tp, f.metadata


def with_changes(config: Config, changes: Mapping[str, Any]) -> Config:
    """A copy of `config` with dotted keys changed, validated like a file."""
    data = config.as_dict()
    merge_into(data, dict(changes))
    return _cross_check(build(Config, data, ''))
