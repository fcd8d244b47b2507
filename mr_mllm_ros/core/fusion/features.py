"""Adapter inputs: frames + detections -> FusionBatch (the same code for training and at
run time), and the VLM's own vision features where the backend has a vision tower."""

from __future__ import annotations

import math
import re
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ModelLoadError
from ..types import DetectionSet
from .fusion_config import AdapterConfig
from .model import FusionBatch


def embedding_rms(embedding: nn.Module) -> float:
    w = embedding.weight.detach().float()
    return float(w.pow(2).mean().sqrt())


class TextEmbedder:
    """Mean LLM input embedding of a string's tokens (frozen), cached per string."""

    def __init__(self, tokenizer, embedding: nn.Module):
        self.tokenizer = tokenizer
        self.embedding = embedding
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, text: str) -> torch.Tensor:
        vec = self._cache.get(text)
        if vec is None:
            ids = self.tokenizer(text, add_special_tokens=False)['input_ids'] or [0]
            weight = self.embedding.weight
            with torch.no_grad():
                vec = weight[torch.tensor(ids, device=weight.device)].float().mean(0).cpu()
            if len(self._cache) < 20000:
                self._cache[text] = vec
        return vec                                                              # (D_llm,)


_REF = re.compile(r'[<(]obj(\d+)[>)]')


def mentioned_objects(text: str) -> set[int]:
    """Object indices a request names: `<objN>` (or `(objN)`, its sanitised form)."""
    return {int(n) for n in _REF.findall(text or '')}


def select_objects(ds: DetectionSet, indices: Sequence[int] | None, limit: int) -> list[int]:
    """The objects that enter the adapter: `indices` (default: all), highest scores first,
    at most `limit`, returned in index order."""
    pool = list(range(len(ds))) if indices is None else [i for i in indices if 0 <= i < len(ds)]
    pool = sorted(pool, key=lambda i: -ds[i].score)[:limit]
    return sorted(pool)


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float 0..1."""
    arr = np.ascontiguousarray(image[..., :3])
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).float() / 255.0


#: vision_fn(images) -> per image (tokens (M, D_v), feature map (D_v, h, w) or None)
VisionFn = Callable[[Sequence[np.ndarray]], list[tuple[torch.Tensor, torch.Tensor | None]]]


class Featurizer:
    """Frames + detections -> FusionBatch, for training and at run time alike."""

    def __init__(self, config: AdapterConfig, tokenizer, embedding: nn.Module,
                 vision_fn: VisionFn | None = None):
        self.config = config
        self.text = TextEmbedder(tokenizer, embedding)
        self.vision_fn = vision_fn
        needs_vision = config.vision_dim > 0 or config.roi_source == 'vision'
        if needs_vision and vision_fn is None:
            raise ModelLoadError('this fusion adapter needs vision features but the backend '
                                 'has no vision tower')

    def build(self, images: Sequence[np.ndarray], detsets: Sequence[DetectionSet],
              indices: Sequence[Sequence[int] | None] | None = None,
              focus: Sequence[set[int]] | None = None) -> FusionBatch:
        """One row per image: its detections `indices` (default all) and the indices the
        request names (`focus`, default none)."""
        c = self.config
        rows = len(images)
        indices = indices if indices is not None else [None] * rows
        focus = focus if focus is not None else [set()] * rows
        chosen = [select_objects(ds, idx, c.max_objects) for ds, idx in zip(detsets, indices)]
        n = max(1, max(len(ch) for ch in chosen))
        d_llm = c.llm_hidden
        boxes = torch.zeros(rows, n, 4)
        scores = torch.zeros(rows, n)
        names = torch.zeros(rows, n, d_llm)
        refs = torch.zeros(rows, n, d_llm)
        mask = torch.zeros(rows, n, dtype=torch.bool)
        flags = torch.zeros(rows, n)
        crops = torch.zeros(rows, n, 3, c.crop_size, c.crop_size) if c.roi_source == 'crop' \
            else None
        rois = torch.zeros(rows, n, c.vision_dim, c.roi_grid, c.roi_grid) \
            if c.roi_source == 'vision' else None
        slot_indices = []
        vision = self.vision_fn(images) if self.vision_fn is not None else None
        for r, (image, ds, ch) in enumerate(zip(images, detsets, chosen)):
            h, w = image.shape[:2]
            slot_indices.append(list(ch) + [-1] * (n - len(ch)))
            if not ch:
                continue
            pix = torch.tensor([[ds[i].box.x1, ds[i].box.y1, ds[i].box.x2, ds[i].box.y2]
                                for i in ch], dtype=torch.float32)
            pix[:, 0::2] = pix[:, 0::2].clamp(0, w)
            pix[:, 1::2] = pix[:, 1::2].clamp(0, h)
            norm = pix / torch.tensor([w, h, w, h], dtype=torch.float32)
            k = len(ch)
            boxes[r, :k] = norm
            scores[r, :k] = torch.tensor([ds[i].score for i in ch])
            names[r, :k] = torch.stack([self.text(' ' + ds[i].class_name) for i in ch])
            refs[r, :k] = torch.stack([self.text(str(i)) for i in ch])
            mask[r, :k] = True
            flags[r, :k] = torch.tensor([float(i in focus[r]) for i in ch])
            if crops is not None:
                crops[r, :k] = _roi_align(image_tensor(image), pix, c.crop_size)
            if rois is not None:
                fmap = vision[r][1]
                if fmap is None:
                    raise ModelLoadError('this fusion adapter pools RoIs on a vision feature '
                                         'map but the backend gives none')
                scale = torch.tensor([fmap.shape[2], fmap.shape[1]] * 2, dtype=torch.float32)
                rois[r, :k] = _roi_align(fmap.float().unsqueeze(0).cpu(), norm * scale,
                                         c.roi_grid)
        batch = FusionBatch(boxes, scores, names, refs, mask, flags, crops, rois,
                            indices=slot_indices)
        if c.vision_dim:
            m = max(1, max(t.shape[0] for t, _ in vision))
            batch.vision = torch.zeros(rows, m, c.vision_dim)
            batch.vision_mask = torch.zeros(rows, m, dtype=torch.bool)
            for r, (tokens, _) in enumerate(vision):
                if tokens.shape[1] != c.vision_dim:
                    raise ModelLoadError(f'vision tokens of width {tokens.shape[1]}, the adapter '
                                         f'expects {c.vision_dim}')
                batch.vision[r, :tokens.shape[0]] = tokens.float().cpu()
                batch.vision_mask[r, :tokens.shape[0]] = True
        return batch


def _roi_align(feature: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """feature (1, C, H, W), boxes (k, 4) in feature pixels -> (k, C, size, size)."""
    from torchvision.ops import roi_align
    return roi_align(feature, [boxes], output_size=size, spatial_scale=1.0,
                     sampling_ratio=2, aligned=True)


# ------------------------------------------------------------------ VLM vision features

def vlm_vision_fn(backend) -> VisionFn:
    """vision_fn over a transformers_vlm backend: its processor's pixels through the model's
    own `get_image_features` (projected to the LLM width, as the LLM sees them), and the
    feature map where the family's token grid covers the whole image."""
    import inspect

    from ..mllm.transformers_vlm import downscale
    model = backend.model
    family = model.config.model_type
    params = inspect.signature(model.get_image_features).parameters

    def fn(images):
        out = []
        for image in images:
            pil = downscale(image, backend.config.mllm.image_max_side)
            px = backend.processor.image_processor(images=[pil], return_tensors='pt',
                                                   **backend.image_kwargs)
            kwargs = {k: v.to(backend.device) for k, v in px.items() if k in params}
            if 'pixel_values' in kwargs and kwargs['pixel_values'].is_floating_point():
                kwargs['pixel_values'] = kwargs['pixel_values'].to(backend.dtype)
            with torch.no_grad():
                feats = model.get_image_features(**kwargs)
            pooled = getattr(feats, 'pooler_output', feats)
            if isinstance(pooled, (list, tuple)):
                tokens = torch.cat([t.reshape(-1, t.shape[-1]) for t in pooled])
            else:
                tokens = pooled.reshape(-1, pooled.shape[-1])              # (M, D_v)
            out.append((tokens.float(), _feature_map(family, tokens, px)))
        return out
    return fn


def _feature_map(family: str, tokens: torch.Tensor, px) -> torch.Tensor | None:
    """(D_v, h, w) map of the image when the family's tokens are a known full-image grid."""
    if family in ('qwen2_vl', 'qwen2_5_vl'):
        t, h, w = (int(v) for v in px['image_grid_thw'][0])
        gh, gw = h // 2, w // 2                 # 2x2 patch merge, row-major merged grid
        if t != 1 or gh * gw != tokens.shape[0]:
            return None
        return tokens.view(gh, gw, -1).permute(2, 0, 1)
    if family == 'paligemma':                   # square resize of the whole image
        g = int(round(math.sqrt(tokens.shape[0])))
        if g * g != tokens.shape[0]:
            return None
        return tokens.view(g, g, -1).permute(2, 0, 1)
    return None
