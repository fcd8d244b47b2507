"""The fusion adapter's configurations: AdapterConfig (its shapes, all a checkpoint must
match) and TrainConfig (the training recipe). Their defaults live in one place, the
packaged config/fusion.yaml; a field takes its default from there (`default()`), never from
a literal here."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import yaml

from ..config import share_dir
from ..errors import ConfigError

DEFAULTS_FILE_NAME = 'fusion.yaml'
ROI_SOURCES = ('crop', 'vision')
#: VLM families whose vision feature map covers the whole image on a known grid.
VISION_GRID_FAMILIES = ('qwen2_vl', 'qwen2_5_vl', 'paligemma')


@lru_cache(maxsize=1)
def yaml_defaults() -> dict[str, dict[str, Any]]:
    """{'train': {...}, 'adapter': {...}} of the packaged config/fusion.yaml."""
    path = share_dir() / 'config' / DEFAULTS_FILE_NAME
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f'cannot read the fusion defaults {path}: {e}') from e
    if not isinstance(data, dict) or not all(isinstance(data.get(s), dict)
                                             for s in ('train', 'adapter')):
        raise ConfigError(f'{path} must hold the mappings "train" and "adapter"')
    return data


def default(section: str, key: str):
    """A dataclass field whose default is `section.key` of config/fusion.yaml, read when a
    config is made, not at import (as core.config reads config/mr_mllm.yaml: a missing or
    broken file is the error of the call that needs it)."""
    return field(default_factory=lambda: copy.deepcopy(yaml_defaults()[section][key]),
                 metadata={'yaml': f'{section}.{key}'})


def dataclass_from_dict(cls, data: dict, what: str, error: type = ValueError):
    """cls(**data), refusing keys cls does not have (a typo must not pass silently)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise error(f'unknown {what} keys {unknown}; known: {sorted(known)}')
    return cls(**data)



@dataclass(frozen=True)
class AdapterConfig:
    """Shapes of a SharedQueryFusion (all that a checkpoint must match) + provenance.
    What each field means: config/fusion.yaml."""

    llm_hidden: int               # D_llm: width of the LLM input embeddings
    num_queries: int = default('adapter', 'num_queries')
    hint_tokens: int = default('adapter', 'hint_tokens')
    dim: int = default('adapter', 'dim')
    layers: int = default('adapter', 'layers')
    heads: int = default('adapter', 'heads')
    ffn_mult: int = default('adapter', 'ffn_mult')
    box_freqs: int = default('adapter', 'box_freqs')
    name_dim: int = default('adapter', 'name_dim')
    roi_source: str = default('adapter', 'roi_source')
    crop_size: int = default('adapter', 'crop_size')
    roi_grid: int = default('adapter', 'roi_grid')
    roi_dim: int = default('adapter', 'roi_dim')
    vision_dim: int = default('adapter', 'vision_dim')
    max_objects: int = default('adapter', 'max_objects')
    focus_readout: bool = default('adapter', 'focus_readout')
    readout_share: float = default('adapter', 'readout_share')
    object_readout: bool = default('adapter', 'object_readout')
    dropout: float = default('adapter', 'dropout')
    output_rms: float = default('adapter', 'output_rms')
    llm: str = default('adapter', 'llm')
    prompt_template: str = default('train', 'prompt_template')

    #: fields a checkpoint's tensors depend on (the rest is provenance / regularisation)
    SHAPE_FIELDS = ('llm_hidden', 'num_queries', 'hint_tokens', 'dim', 'layers', 'heads',
                    'ffn_mult',
                    'box_freqs', 'name_dim', 'roi_source', 'crop_size', 'roi_grid',
                    'roi_dim', 'vision_dim', 'object_readout')

    def __post_init__(self):
        if self.roi_source not in ROI_SOURCES:
            raise ValueError(f'roi_source={self.roi_source!r}; allowed: {", ".join(ROI_SOURCES)}')
        if self.dim % self.heads:
            raise ValueError(f'dim={self.dim} must be a multiple of heads={self.heads}')
        if not 0.0 <= self.readout_share <= 1.0:
            raise ValueError(f'readout_share={self.readout_share} must be within 0..1')
        if self.roi_source == 'vision' and not self.vision_dim:
            raise ValueError('roi_source=vision needs vision_dim (the feature-map width)')
        for name in ('llm_hidden', 'num_queries', 'dim', 'layers', 'heads', 'max_objects',
                     'crop_size'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name}={getattr(self, name)} must be >= 1')

    @property
    def num_soft_tokens(self) -> int:
        """Soft tokens per frame the LLM receives: H hint + K scene tokens."""
        return self.hint_tokens + self.num_queries

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> 'AdapterConfig':
        return dataclass_from_dict(cls, data, 'adapter config')


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe (core.fusion.train); what each field means: config/fusion.yaml."""

    steps: int = default('train', 'steps')
    scenes_per_step: int = default('train', 'scenes_per_step')
    questions_per_scene: int = default('train', 'questions_per_scene')
    grad_accum: int = default('train', 'grad_accum')
    lr: float = default('train', 'lr')
    weight_decay: float = default('train', 'weight_decay')
    warmup_steps: int = default('train', 'warmup_steps')
    min_lr_ratio: float = default('train', 'min_lr_ratio')
    grad_clip: float = default('train', 'grad_clip')
    hint_lr_mult: float = default('train', 'hint_lr_mult')
    rescore_weight: float = default('train', 'rescore_weight')
    eval_every: int = default('train', 'eval_every')
    eval_scenes: int = default('train', 'eval_scenes')
    eval_fraction: float = default('train', 'eval_fraction')
    keep_best: bool = default('train', 'keep_best')
    save_every: int = default('train', 'save_every')
    keep_checkpoints: int = default('train', 'keep_checkpoints')
    log_every: int = default('train', 'log_every')
    seed: int = default('train', 'seed')
    amp: str = default('train', 'amp')
    prompt_template: str = default('train', 'prompt_template')
    #: AdapterConfig fields to set (num_queries, dim, layers, heads, crop_size, ...)
    adapter: dict = default('train', 'adapter')

    @classmethod
    def from_dict(cls, data: dict) -> 'TrainConfig':
        return dataclass_from_dict(cls, data, 'fusion training', ConfigError)
