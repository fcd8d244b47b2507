"""One default per value: the fusion adapter's and its training's defaults live in
config/fusion.yaml only. Fails when a field of AdapterConfig / TrainConfig gets a default
of its own in Python (shadowing, or standing beside, a YAML key), when a YAML key has no
field, or when a YAML value has the wrong type for its field."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from mr_mllm_ros.core.fusion.fusion_config import AdapterConfig, TrainConfig, yaml_defaults

#: fields with no default at all (they come from the LLM being trained)
REQUIRED = {'llm_hidden'}
SECTIONS = {AdapterConfig: 'adapter', TrainConfig: 'train'}


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


@pytest.mark.parametrize('cls', list(SECTIONS), ids=lambda c: c.__name__)
def test_every_default_comes_from_the_yaml(cls):
    yaml = yaml_defaults()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in REQUIRED:
            assert not _has_default(f), f'{cls.__name__}.{f.name} must have no default'
            continue
        assert _has_default(f), f'{cls.__name__}.{f.name} has no default (add it to the YAML)'
        where = f.metadata.get('yaml')
        assert where, (f'{cls.__name__}.{f.name} has a Python default; its one default '
                       f'belongs in config/fusion.yaml (field = default(section, key))')
        section, key = where.split('.')
        assert key in yaml[section], f'{where} is not in config/fusion.yaml'
        value = yaml[section][key]
        assert _default(f) == value
        tp = typing.get_origin(hints[f.name]) or hints[f.name]
        assert type(value) is tp, f'{where} = {value!r} is not a {tp.__name__}'


@pytest.mark.parametrize('cls', list(SECTIONS), ids=lambda c: c.__name__)
def test_every_yaml_key_is_a_field(cls):
    fields = {f.name for f in dataclasses.fields(cls)}
    section = SECTIONS[cls]
    assert set(yaml_defaults()[section]) <= fields, \
        f'config/fusion.yaml {section}: keys without a field: ' \
        f'{sorted(set(yaml_defaults()[section]) - fields)}'
