"""A trained adapter at run time: attached to a loaded backend, soft tokens for a frame
and its detections (core.reasoning.scene puts them into every prompt)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import ModelLoadError
from ..types import DetectionSet
from .features import Featurizer, vlm_vision_fn
from .io import check_fits_llm, load_adapter, read_adapter_config
from .model import FusionBatch, FusionOutput


class FusionRuntime:
    """A trained adapter attached to a loaded backend: soft tokens for a frame and its
    detections, in the backend's dtype and device, and the re-scoring head's P(right)."""

    def __init__(self, adapter_path: str | Path, backend):
        if not getattr(backend, 'supports_soft_tokens', False):
            raise ModelLoadError(f'fusion.adapter_path is set but the MLLM backend '
                                 f'{backend.name} cannot take soft tokens (transformers_llm '
                                 'and transformers_vlm can)')
        self.path = Path(adapter_path).expanduser()
        config, meta = read_adapter_config(self.path)
        embedding = backend.model.get_input_embeddings()
        family = backend.model.config.model_type if backend.sees_images else ''
        vision_fn = vlm_vision_fn(backend) if backend.sees_images else None
        vision_dim = backend.hidden_size if vision_fn is not None else None
        check_fits_llm(config, int(embedding.weight.shape[1]), str(self.path),
                       vision_dim=vision_dim, family=family)
        self.device = embedding.weight.device
        self.module = load_adapter(self.path, device=self.device)
        self.config = config
        self.meta = meta
        self.featurizer = Featurizer(config, backend.tokenizer, embedding,
                                     vision_fn if (config.vision_dim or
                                                   config.roi_source == 'vision') else None)
        self.dtype = embedding.weight.dtype
        self.name = self.path.name

    def _run(self, image: np.ndarray, ds: DetectionSet, indices,
             focus: set[int] | None = None) -> tuple[FusionOutput, FusionBatch]:
        batch = self.featurizer.build([image], [ds], [indices], [focus or set()])
        batch = batch.to(self.device)
        with torch.inference_mode():
            return self.module(batch), batch

    def soft_tokens(self, image: np.ndarray, ds: DetectionSet,
                    indices: Sequence[int] | None = None,
                    focus: set[int] | None = None) -> torch.Tensor:
        """(H + K, D_llm) soft tokens for one frame, the objects `indices` (default all)
        and the objects the request names (`focus`)."""
        out, _ = self._run(image, ds, indices, focus)
        return out.soft_tokens[0].to(self.dtype)

    def rescore(self, image: np.ndarray, ds: DetectionSet,
                indices: Sequence[int] | None = None) -> dict[int, float]:
        """DetectionSet index -> P(the detection is right) from the re-scoring head."""
        out, batch = self._run(image, ds, indices)
        probs = torch.sigmoid(out.rescore_logits[0].float()).tolist()
        return {i: p for i, p in zip(batch.indices[0], probs) if i >= 0}
