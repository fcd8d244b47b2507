"""An adapter on disk: a folder with `adapter.safetensors` (weights) + `adapter.json`
(its AdapterConfig and provenance). Loading checks every tensor shape against the config
and the config against the LLM; a mismatch is refused naming both shapes."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import ModelLoadError
from .fusion_config import VISION_GRID_FAMILIES, AdapterConfig
from .model import SharedQueryFusion, parameter_count

ADAPTER_FORMAT = 'mr_mllm_ros.shared_query_fusion'
ADAPTER_VERSION = 1
WEIGHTS_FILE = 'adapter.safetensors'
CONFIG_FILE = 'adapter.json'


def save_adapter(module: SharedQueryFusion, folder: str | Path, info: dict | None = None) -> Path:
    """Write adapter.safetensors + adapter.json (config + provenance) into `folder`."""
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to('cpu', torch.float32).contiguous()
             for k, v in module.state_dict().items()}
    tmp = folder / (WEIGHTS_FILE + '.tmp')
    save_file(state, str(tmp), metadata={'format': ADAPTER_FORMAT})
    tmp.replace(folder / WEIGHTS_FILE)
    meta = {'format': ADAPTER_FORMAT, 'version': ADAPTER_VERSION,
            'config': module.config.to_dict(), 'parameters': parameter_count(module),
            'info': info or {}}
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=1) + '\n', encoding='utf-8')
    return folder


def read_adapter_config(folder: str | Path) -> tuple[AdapterConfig, dict]:
    """(AdapterConfig, the whole adapter.json) of an adapter folder."""
    path = Path(folder).expanduser() / CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding='utf-8'))
    except OSError as e:
        raise ModelLoadError(f'fusion adapter: cannot read {path} ({e.strerror}); an adapter '
                             f'folder holds {WEIGHTS_FILE} + {CONFIG_FILE}') from e
    except json.JSONDecodeError as e:
        raise ModelLoadError(f'fusion adapter: {path} is not valid JSON: {e}') from e
    if meta.get('format') != ADAPTER_FORMAT:
        raise ModelLoadError(f'fusion adapter: {path} has format {meta.get("format")!r}, '
                             f'expected {ADAPTER_FORMAT!r}')
    if meta.get('version') != ADAPTER_VERSION:
        raise ModelLoadError(f'fusion adapter: {path} is version {meta.get("version")}, this '
                             f'code reads version {ADAPTER_VERSION}')
    try:
        return AdapterConfig.from_dict(meta['config']), meta
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f'fusion adapter: {path} has a bad config: {e}') from e


def load_state_checked(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `module`, refusing any missing/unexpected key or shape mismatch
    with a message that names the checkpoint's and the model's shapes."""
    own = module.state_dict()
    problems = []
    for key in sorted(set(own) | set(state)):
        if key not in state:
            problems.append(f'{key}: missing in the checkpoint (model {tuple(own[key].shape)})')
        elif key not in own:
            problems.append(f'{key}: not in this model (checkpoint {tuple(state[key].shape)})')
        elif tuple(own[key].shape) != tuple(state[key].shape):
            problems.append(f'{key}: checkpoint {tuple(state[key].shape)} vs model '
                            f'{tuple(own[key].shape)}')
    if problems:
        raise ModelLoadError(f'fusion adapter {source} does not fit this adapter config: '
                             + '; '.join(problems[:6])
                             + (f'; ... {len(problems) - 6} more' if len(problems) > 6 else ''))
    module.load_state_dict(state)


def load_adapter(folder: str | Path, expected: AdapterConfig | None = None,
                 device: str | torch.device = 'cpu') -> SharedQueryFusion:
    """The adapter in `folder`, in eval mode. With `expected` (e.g. when resuming training
    under a config), the module is built from `expected` and the checkpoint must fit it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    folder = Path(folder).expanduser()
    config, _ = read_adapter_config(folder)
    if expected is not None:
        differ = [f'{k}: checkpoint {getattr(config, k)!r} vs config {getattr(expected, k)!r}'
                  for k in AdapterConfig.SHAPE_FIELDS
                  if getattr(config, k) != getattr(expected, k)]
        if differ:
            raise ModelLoadError(f'fusion adapter {folder} was built with another config '
                                 f'(soft tokens ({config.num_soft_tokens}, {config.llm_hidden}) '
                                 f'vs ({expected.num_soft_tokens}, {expected.llm_hidden})): '
                                 + '; '.join(differ))
        config = expected
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, SafetensorError) as e:
        raise ModelLoadError(f'fusion adapter: cannot read {folder / WEIGHTS_FILE}: {e}') from e
    module = SharedQueryFusion(config)
    load_state_checked(module, state, str(folder))
    return module.to(device).eval()


def check_fits_llm(config: AdapterConfig, hidden: int, source: str, *,
                   vision_dim: int | None, family: str = '') -> None:
    """Refuse an adapter built for another LLM width or vision setup, naming both."""
    if config.llm_hidden != hidden:
        raise ModelLoadError(
            f'fusion adapter {source} makes soft tokens of shape ({config.num_soft_tokens}, '
            f'{config.llm_hidden}) but this LLM takes embeddings of width {hidden}, i.e. '
            f'({config.num_soft_tokens}, {hidden}); it was trained for '
            f'{config.llm or "another LLM"}')
    if config.vision_dim:
        if vision_dim is None:
            raise ModelLoadError(f'fusion adapter {source} attends to vision tokens of width '
                                 f'{config.vision_dim} but this backend has no vision tower')
        if vision_dim != config.vision_dim:
            raise ModelLoadError(f'fusion adapter {source} expects vision tokens of width '
                                 f'{config.vision_dim}, this backend gives width {vision_dim}')
    if config.roi_source == 'vision' and family not in VISION_GRID_FAMILIES:
        raise ModelLoadError(f'fusion adapter {source} pools RoIs on a vision feature map, '
                             f'which {family or "this backend"} does not provide (families '
                             f'with one: {", ".join(VISION_GRID_FAMILIES)}); use roi_source crop')
