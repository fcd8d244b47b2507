"""Alert rules: their schema (kinds, ranges, choices) and loading from YAML.

Defaults live in ONE place, the `defaults:` section of the packaged
config/alert_rules.yaml: a rule key with no entry there is required. A rules file
replaces the whole rule set and may carry its own `defaults:` (merged over the packaged
ones per rule type), so it does not have to repeat every threshold. The schema below
holds no default values (a test checks that every optional key takes the YAML's value).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import yaml

from ..config import share_dir
from ..errors import ConfigError
from ..types import Severity
from .arrivals import KEEP

RULES_FILE_NAME = 'alert_rules.yaml'
ANCHORS = ('bottom_center', 'center', 'any_overlap')
DISAGREEMENT_KINDS = ('relabelled', 'rejected', 'missed_by_detector')
COMMON_SECTION = 'every_rule'  # the defaults: entry that applies to every rule type


@dataclass(frozen=True)
class _Field:
    kind: str  # float | int | bool | str | str_list | polygon | debounce | severity
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None


_COMMON = {
    'name': _Field('str'), 'type': _Field('str'), 'severity': _Field('severity'),
    'enabled': _Field('bool'), 'debounce': _Field('debounce'),
    'cooldown_s': _Field('float', 0.0, 86400.0),
}
_SCHEMA: dict[str, dict[str, _Field]] = {
    'hazard_in_region': {
        'classes': _Field('str_list', low=1), 'region': _Field('polygon'),
        'region_name': _Field('str'), 'min_score': _Field('float', 0.0, 1.0),
        'anchor': _Field('str', choices=ANCHORS)},
    'detector_mllm_disagreement': {
        'kinds': _Field('str_list', choices=DISAGREEMENT_KINDS),
        'min_score': _Field('float', 0.0, 1.0)},
    'unknown_object': {
        'labels': _Field('str_list'), 'min_score': _Field('float', 0.0, 1.0),
        'max_score': _Field('float', 0.0, 1.0), 'classes': _Field('str_list')},
    'sudden_close_appearance': {
        'min_area_share': _Field('float', 0.0, 1.0),
        'memory_s': _Field('float', 0.01, 3600.0), 'classes': _Field('str_list'),
        'min_score': _Field('float', 0.0, 1.0), 'max_distance_m': _Field('float', 0.0, 1000.0)},
    'too_close': {
        'classes': _Field('str_list'), 'max_distance_m': _Field('float', 0.01, 1000.0),
        'min_score': _Field('float', 0.0, 1.0)},
    'frame_black': {'max_mean': _Field('float', 0.0, 255.0)},
    'frame_overexposed': {'max_saturated_share': _Field('float', 0.0, 1.0)},
    'frame_blurred': {'min_laplacian_var': _Field('float', 0.0, 1e9)},
    'camera_stale': {'max_age_s': _Field('float', 0.001, 86400.0),
                     'min_stream_frames': _Field('int', 1, KEEP)},
    'mllm_judgement': {'min_probability': _Field('float', 0.0, 1.0)},
    'person_down': {'min_posture_score': _Field('float', 0.0, 1.0),
                    'min_score': _Field('float', 0.0, 1.0)},
}
RULE_TYPES = tuple(_SCHEMA)


@dataclass(frozen=True)
class Rule:
    name: str
    type: str
    severity: Severity
    enabled: bool
    n: int  # debounce: raise when the condition held in n ...
    m: int  # ... of the last m evaluations of the key
    cooldown_s: float
    params: Mapping[str, Any]  # the type-specific keys, validated (lists become tuples)


def default_rules_path() -> Path:
    """The packaged config/alert_rules.yaml (checkout or install share/, like mr_mllm.yaml)."""
    return share_dir() / 'config' / RULES_FILE_NAME


def _read_yaml(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding='utf-8') as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f'cannot read alert rules file {path}: {e.strerror}') from e
    except yaml.YAMLError as e:
        raise ConfigError(f'alert rules file {path} is not valid YAML: {e}') from e


def _check_defaults(defaults: Any, where: str) -> dict[str, dict]:
    sections = (COMMON_SECTION, *RULE_TYPES)
    if not isinstance(defaults, Mapping) or not all(
            k in sections and isinstance(v, Mapping) for k, v in defaults.items()):
        raise ConfigError(f'{where}: `defaults` must map rule types (or {COMMON_SECTION}) '
                          f'to mappings of keys, got {str(defaults)[:80]!r}')
    for section, values in defaults.items():
        allowed = _COMMON if section == COMMON_SECTION else _SCHEMA[section]
        for key, value in values.items():
            if key not in allowed or key in ('name', 'type', 'severity'):
                raise ConfigError(f'{where}: defaults.{section}: unknown key {key!r}')
            _check(f'{where}: defaults.{section}', key, value, allowed[key])
    return {k: dict(v) for k, v in defaults.items()}


@lru_cache(maxsize=4)
def _packaged_defaults(path: str) -> Mapping[str, Mapping[str, Any]]:
    data = _read_yaml(path)
    if not isinstance(data, Mapping) or 'defaults' not in data:
        raise ConfigError(f'alert rules file {path}: the packaged file needs a `defaults` '
                          'section (the one place rule defaults live)')
    return MappingProxyType(_check_defaults(data['defaults'], str(path)))


def packaged_defaults() -> Mapping[str, Mapping[str, Any]]:
    """`defaults:` of the packaged rules file: section (rule type or every_rule) -> keys."""
    return _packaged_defaults(str(default_rules_path()))


def merge_defaults(*layers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for layer in layers:
        for section, values in layer.items():
            merged.setdefault(section, {}).update(values)
    return merged


def load_rules(path: str | os.PathLike) -> list[Rule]:
    data = _read_yaml(path)
    if not isinstance(data, dict) or not {'rules'} <= set(data) <= {'rules', 'defaults'} \
            or not isinstance(data['rules'], (list, type(None))):
        raise ConfigError(f'alert rules file {path}: expected one top-level key `rules` '
                          f'holding a list of rules (and optionally `defaults`), got '
                          f'{str(data)[:80]!r}')
    defaults = packaged_defaults()
    if data.get('defaults'):
        defaults = merge_defaults(defaults, _check_defaults(data['defaults'], str(path)))
    rules = [parse_rule(entry, i, defaults) for i, entry in enumerate(data['rules'] or [])]
    check_unique(rules)
    return rules


def check_unique(rules: Sequence[Rule]) -> None:
    seen: set[str] = set()
    for r in rules:
        if r.name in seen:
            raise ConfigError(f'alert rule {r.name!r}: key \'name\' is used by two rules; '
                              'rule names must be unique')
        seen.add(r.name)


def parse_rule(entry: Any, index: int = 0,
               defaults: Mapping[str, Mapping[str, Any]] | None = None) -> Rule:
    """One validated Rule from a mapping of the rules file (index: its position, for
    errors). Keys the entry leaves out come from `defaults` (None: the packaged ones)."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f'alert rule #{index}: expected a mapping of keys, got {entry!r}')
    name = entry.get('name')
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f'alert rule #{index}: key \'name\' = {name!r} must be a non-empty '
                          'string')
    label = f'alert rule {name!r}'
    rtype = entry.get('type')
    if rtype not in _SCHEMA:
        raise ConfigError(f'{label}: key \'type\' = {rtype!r} is not allowed; choose one of: '
                          f'{", ".join(RULE_TYPES)}')
    fields = {**_COMMON, **_SCHEMA[rtype]}
    for key in entry:
        if key not in fields:
            raise ConfigError(f'{label}: unknown key {key!r} = {entry[key]!r}; allowed keys '
                              f'for type {rtype!r}: {", ".join(fields)}')
    defaults = packaged_defaults() if defaults is None else defaults
    fallback = {**defaults.get(COMMON_SECTION, {}), **defaults.get(rtype, {})}
    values = {}
    for key, f in fields.items():
        if key not in entry and key not in fallback:
            raise ConfigError(f'{label}: key {key!r} is missing (required for type {rtype!r})')
        values[key] = _check(label, key, entry[key] if key in entry else fallback[key], f)
    params = {k: v for k, v in values.items() if k not in _COMMON}
    if rtype == 'unknown_object' and params['min_score'] > params['max_score']:
        raise ConfigError(f'{label}: key \'max_score\' = {params["max_score"]!r} must be >= '
                          f'min_score = {params["min_score"]!r}')
    return Rule(name, rtype, values['severity'], values['enabled'], values['debounce'][0],
                values['debounce'][1], values['cooldown_s'], MappingProxyType(params))


def _check(label: str, key: str, value: Any, f: _Field) -> Any:
    def bad(allowed: str):
        return ConfigError(f'{label}: key {key!r} = {value!r} is not allowed; {allowed}')

    if f.kind == 'severity':
        if not isinstance(value, str) or value.upper() not in Severity.__members__:
            raise bad(f'choose one of: {", ".join(Severity.__members__)}')
        return Severity[value.upper()]
    if f.kind == 'debounce':
        return _check_debounce(value, bad)
    if f.kind == 'polygon':
        return _check_polygon(value, bad)
    if f.kind == 'str_list':
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise bad('expected a list of strings')
        if f.low and len(value) < f.low:
            raise bad(f'expected at least {int(f.low)} entries')
        if f.choices and not set(value) <= set(f.choices):
            raise bad(f'entries must be among: {", ".join(f.choices)}')
        return tuple(value)
    if f.kind == 'bool':
        if not isinstance(value, bool):
            raise bad('expected true or false')
        return value
    if f.kind == 'int':
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad('expected an integer')
        if not f.low <= value <= f.high:
            raise bad(f'allowed: {f.low} <= value <= {f.high}')
        return value
    if f.kind == 'str':
        if not isinstance(value, str):
            raise bad('expected a string')
        if f.choices and value not in f.choices:
            raise bad(f'choose one of: {", ".join(f.choices)}')
        return value
    # float
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise bad('expected a finite number')
    if not f.low <= value <= f.high:
        raise bad(f'allowed: {f.low} <= value <= {f.high}')
    return float(value)


def _check_debounce(value: Any, bad) -> tuple[int, int]:
    ok = isinstance(value, Mapping) and set(value) == {'n', 'm'} and all(
        isinstance(value[k], int) and not isinstance(value[k], bool) for k in 'nm')
    if not ok or not 1 <= value['n'] <= value['m'] <= 1000:
        raise bad('expected {n: N, m: M} with integers 1 <= n <= m <= 1000')
    return value['n'], value['m']


def _check_polygon(value: Any, bad) -> tuple[tuple[float, float], ...]:
    def is_coord(c):
        return not isinstance(c, bool) and isinstance(c, (int, float)) and 0.0 <= c <= 1.0

    if not isinstance(value, (list, tuple)) or len(value) < 3 or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 and all(map(is_coord, p))
            for p in value):
        raise bad('expected a polygon of at least 3 [x, y] points in normalised image '
                  'coordinates (0 <= x, y <= 1; 0,0 = top-left)')
    return tuple((float(x), float(y)) for x, y in value)
