"""Shared-query fusion (MR-MLLM, our interpretation): a small adapter that turns a frame and
its detections into K soft tokens for the LLM (see model.py for the mechanism).

Split by role, like a transformers model folder:
    config.py    AdapterConfig (shapes) and TrainConfig (recipe); defaults in config/fusion.yaml
    model.py     SharedQueryFusion (torch nn.Module), FusionBatch, FusionOutput
    features.py  frames + detections -> FusionBatch; the VLM's vision features
    io.py        an adapter folder on disk: save, load, checks against the LLM
    runtime.py   FusionRuntime: a trained adapter attached to a loaded backend
    hosts.py     the frozen backend as the trainer sees it (token rows -> log-probabilities)
    train.py     Trainer: the training loop, evaluation, checkpoints
    data.py      the training data format, toy scenes, COCO / RefCOCO converters

The run-time names are importable from here; training and data from their modules.
"""

from .fusion_config import AdapterConfig, TrainConfig
from .features import Featurizer, TextEmbedder, embedding_rms, mentioned_objects, vlm_vision_fn
from .io import (CONFIG_FILE, WEIGHTS_FILE, check_fits_llm, load_adapter, read_adapter_config,
                 save_adapter)
from .model import (CropEncoder, FusionBatch, FusionOutput, SharedQueryFusion,
                    parameter_count, sine_box_embedding)
from .adapter_runtime import FusionRuntime

__all__ = ['AdapterConfig', 'TrainConfig', 'Featurizer', 'TextEmbedder', 'embedding_rms',
           'mentioned_objects', 'vlm_vision_fn', 'CONFIG_FILE', 'WEIGHTS_FILE',
           'check_fits_llm', 'load_adapter', 'read_adapter_config', 'save_adapter',
           'CropEncoder', 'FusionBatch', 'FusionOutput', 'SharedQueryFusion',
           'parameter_count', 'sine_box_embedding', 'FusionRuntime']
