"""Shared-query fusion (MR-MLLM, our interpretation): what the perception-embedded prompt
cannot carry as text (each object's appearance, the scene's look) goes to the LLM as K
soft tokens.

    perception tokens  P = MLP[sine(box), class-name emb, reference emb, score, RoI feature,
                               focus flag]
    memory             M = P (+) proj(vision tokens) (+) null token
    K learned queries  Q --(self-attention, cross-attention to M, FFN) x L--> Q'
    read-out           R = softmax(Q' . P + b focus) (g * ref + V(P) + W(roi))   (B, K, D_llm)
                       (over the objects the request names, when it names any)
    scene tokens       S = rms * a * u / RMS(u), u = Linear(LN(Q')) + R   (B, K, D_llm)
    soft tokens        [H learned hint tokens] + S            (B, H + K, D_llm), at the marker
    re-scoring head    r = Linear(LN(P + attn(P, Q')))        (B, N) logits: is the box right?

- Class-name and reference embeddings are the mean of the LLM's own input embeddings of
  their tokens (frozen): the class name, and the index digits N of `<objN>` (the token
  that tells <obj2> from <obj3>), so the adapter speaks the LLM's vocabulary.
- The read-out lets each query carry the reference embedding of the objects it attends
  to, plus a learned projection of their perception tokens, straight into the LLM width:
  from the first step the soft tokens say *which* object they are about in the LLM's own
  terms, and appearance reaches them through one linear map of the RoI feature, W(roi).
  Measured on the toy (1 object, colour only, frozen SmolLM2-135M): with appearance only
  inside P (through the object MLP, next to unit-scale box and name features) colour
  stayed at chance after 80 steps, and a linear probe on the soft tokens reached 0.4;
  with W(roi), a LayerNormed RoI feature and colour moments in the crop encoder, the
  probe reached 0.83-0.94 and the LLM answered 16/16 by step 40. (The LLM side was never
  the limit: the embedding of the colour word placed at the soft tokens gives 1.0.)
  Without the read-out, a frozen LLM trained through a deep query stack first learns
  scene-independent soft tokens (the answer format) and the scene-dependent part collapses
  (measured: across-scene spread 0.1 % of the soft-token norm after 100 steps on the toy,
  no accuracy above chance).
- Scene-independent steering (the answer format) has its own place, H learned hint
  tokens (LION's learned hint, scene-independent), and the K scene tokens are held at the
  RMS of real token embeddings (times a learned per-token gain a): a frozen LLM reads its
  inputs through RMSNorm, so a scene token that grew a large constant part would leave
  its scene-dependent part unreadable (measured without this: scene tokens grew to 8x
  the embedding RMS, their across-scene spread fell to 0.4 %).
- RoI feature: `roi_align` on the vision tower's feature map where that map covers the
  whole image on a known grid (Qwen2-VL / Qwen2.5-VL, PaliGemma), else a small conv encoder
  over the object crop (`roi_align` on the image: text LLMs, Idefics3/SmolVLM tiles,
  LLaVA centre crops, Florence-2).
- Vision tokens: the VLM's own projected image features (`get_image_features`), when the
  backend has a vision tower and the adapter was built with `vision_dim`.
- Focus flag: 1 for the objects the request itself names (`<objN>` in a question), so
  for a question the queries can put the asked object's appearance first (instruction-
  aware queries, as InstructBLIP's Q-Former sees the instruction); 0 everywhere for a
  description. Measured on the toy: without it, a frozen SmolLM2-135M has to find the
  asked object among the soft tokens by itself, and 125 training steps stayed at chance.
  The flag also biases the read-out (b, learned, starts at 2): with it only inside P, the
  toy (2-4 objects, colour and size) stayed at colour 0.33 / size 0.55 after 200 steps;
  with the bias, colour 1.0 by step 75 and size 0.83 at step 100 (16 held-out scenes),
  but the 300-step benchmark reached only 0.55 (the soft tokens stayed a mixture the
  frozen LLM had to untangle by index). With `focus_readout` a request that names
  objects reads only those (descriptions still read all): 0.99 by step 100
  (docs/BENCHMARKS.md, fusion toy).
- The re-scoring head is the perception side of the mutual reinforcement: it is trained
  (BCE) on datasets that mark detections right or wrong and exposed as
  `FusionRuntime.rescore`.

An adapter is a folder: `adapter.safetensors` (weights) + `adapter.json` (its
`AdapterConfig` and provenance). Loading checks every tensor shape against the config and
the config against the LLM; a mismatch is refused naming both shapes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ModelLoadError
from .types import DetectionSet

log = logging.getLogger(__name__)

ADAPTER_FORMAT = 'mr_mllm_ros.shared_query_fusion'
ADAPTER_VERSION = 1
WEIGHTS_FILE = 'adapter.safetensors'
CONFIG_FILE = 'adapter.json'
ROI_SOURCES = ('crop', 'vision')
#: VLM families whose vision feature map covers the whole image on a known grid.
VISION_GRID_FAMILIES = ('qwen2_vl', 'qwen2_5_vl', 'paligemma')


def dataclass_from_dict(cls, data: dict, what: str, error: type = ValueError):
    """cls(**data), refusing keys cls does not have (a typo must not pass silently)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise error(f'unknown {what} keys {unknown}; known: {sorted(known)}')
    return cls(**data)


@dataclass(frozen=True)
class AdapterConfig:
    """Shapes of a SharedQueryFusion (all that a checkpoint must match) + provenance."""

    llm_hidden: int               # D_llm: width of the LLM input embeddings
    num_queries: int = 8          # K scene soft tokens (one per learned query)
    hint_tokens: int = 4          # H learned scene-independent hint tokens before them
    dim: int = 256                # D_q: width inside the adapter
    layers: int = 2               # query decoder layers (self-attn, cross-attn, FFN)
    heads: int = 4
    ffn_mult: int = 2
    box_freqs: int = 8            # sine box embedding width D_box = 4 * 2 * box_freqs
    name_dim: int = 64            # class-name / reference embedding projection width
    roi_source: str = 'crop'      # crop: conv over object crops; vision: roi_align on tower map
    crop_size: int = 32           # S: object crops are S x S
    roi_grid: int = 4             # r: roi_align output r x r on the vision feature map
    roi_dim: int = 64             # RoI feature width
    vision_dim: int = 0           # D_v of the VLM's vision tokens; 0 = no vision tokens
    max_objects: int = 16         # N: objects per frame that enter (highest scores)
    focus_readout: bool = True    # a request that names objects reads only those (below)
    dropout: float = 0.0
    output_rms: float = 0.0       # RMS of the LLM's token embeddings (soft-token init scale)
    llm: str = ''                 # provenance: the LLM it was trained with
    prompt_template: str = 'scene_fusion_v1'

    #: fields a checkpoint's tensors depend on (the rest is provenance / regularisation)
    SHAPE_FIELDS = ('llm_hidden', 'num_queries', 'hint_tokens', 'dim', 'layers', 'heads',
                    'ffn_mult',
                    'box_freqs', 'name_dim', 'roi_source', 'crop_size', 'roi_grid',
                    'roi_dim', 'vision_dim')

    def __post_init__(self):
        if self.roi_source not in ROI_SOURCES:
            raise ValueError(f'roi_source={self.roi_source!r}; allowed: {", ".join(ROI_SOURCES)}')
        if self.dim % self.heads:
            raise ValueError(f'dim={self.dim} must be a multiple of heads={self.heads}')
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


@dataclass
class FusionBatch:
    """Adapter inputs. N objects per frame (padded, `object_mask`), M vision tokens."""

    boxes: torch.Tensor                    # (B, N, 4) x1, y1, x2, y2 normalised to 0..1
    scores: torch.Tensor                   # (B, N) detector confidence
    names: torch.Tensor                    # (B, N, D_llm) class-name embeddings
    refs: torch.Tensor                     # (B, N, D_llm) embeddings of the index digits N
    object_mask: torch.Tensor              # (B, N) bool, True = a real object
    focus: torch.Tensor | None = None      # (B, N) 1.0 = the request names this object
    crops: torch.Tensor | None = None      # (B, N, 3, S, S) 0..1 RGB  (roi_source crop)
    rois: torch.Tensor | None = None       # (B, N, D_v, r, r)         (roi_source vision)
    vision: torch.Tensor | None = None     # (B, M, D_v) vision tokens
    vision_mask: torch.Tensor | None = None  # (B, M) bool
    #: per row, the DetectionSet index of object slot n (-1 = padding); not a tensor input
    indices: list[list[int]] = dataclasses.field(default_factory=list)

    def to(self, device) -> 'FusionBatch':
        moved = {f.name: (v.to(device) if isinstance(v, torch.Tensor) else v)
                 for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}
        return FusionBatch(**moved)

    def select(self, rows: torch.Tensor) -> 'FusionBatch':
        """Rows `rows` (a 1-D index tensor) of every tensor."""
        picked = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v.index_select(0, rows.to(v.device))
            elif f.name == 'indices':
                v = [v[i] for i in rows.tolist()]
            picked[f.name] = v
        return FusionBatch(**picked)


@dataclass
class FusionOutput:
    soft_tokens: torch.Tensor     # (B, H + K, D_llm)
    rescore_logits: torch.Tensor  # (B, N); padding slots hold -inf-free garbage: mask them
    readout: torch.Tensor | None = None  # (B, K, N) read-out weights: which object each
                                         # scene token reads (rows sum to <= 1: "none")


def sine_box_embedding(boxes: torch.Tensor, freqs: int) -> torch.Tensor:
    """(..., 4) boxes in 0..1 -> (..., 4 * 2 * freqs): sin/cos at octave frequencies."""
    scales = (2.0 ** torch.arange(freqs, device=boxes.device, dtype=boxes.dtype)) * math.pi
    angles = boxes.unsqueeze(-1) * scales                      # (..., 4, F)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class CropEncoder(nn.Module):
    """(B*N, 3, S, S) object crops -> (B*N, roi_dim): three stride-2 convs, 2x2 pooling,
    plus colour moments (mean RGB of the crop's centre and of its border ring).

    The moments are there because a box's colour is what a text prompt never carries and a
    small conv net learns last: measured on the toy, the adapter learned object size from
    the convs within ~125 steps but colour stayed at chance after 200-500 steps, while the
    frozen LLM given the colour as text answers it (0.82). Centre vs border separates the
    object from the background around it inside its box."""

    MOMENTS = 6

    def __init__(self, roi_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(64, roi_dim, 3, stride=2, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(2))                            # (B*N, roi_dim, 2, 2)
        # Unit scale (LayerNorm), like the sine box and name features it sits beside: at the
        # conv's init scale (RMS 0.05) appearance was drowned in the object MLP.
        self.out = nn.Sequential(nn.Linear(roi_dim * 4 + self.MOMENTS, roi_dim),
                                 nn.LayerNorm(roi_dim))

    @staticmethod
    def colour_moments(crops: torch.Tensor) -> torch.Tensor:
        """(B*N, 3, S, S) -> (B*N, 6): centre mean RGB, border-ring mean RGB (-1..1)."""
        s = crops.shape[-1]
        a, b = s // 4, s - s // 4
        total = crops.sum(dim=(2, 3))
        centre = crops[..., a:b, a:b].sum(dim=(2, 3))
        ring = (total - centre) / max(s * s - (b - a) ** 2, 1)
        return torch.cat([centre / max((b - a) ** 2, 1), ring], dim=1) * 2.0 - 1.0

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        # 0..1 RGB -> roughly zero-mean input
        conv = self.net(crops * 2.0 - 1.0).flatten(1)
        return self.out(torch.cat([conv, self.colour_moments(crops)], dim=1))


class SharedQueryFusion(nn.Module):
    def __init__(self, config: AdapterConfig):
        super().__init__()
        c = self.config = config
        d = c.dim
        box_dim = 4 * 2 * c.box_freqs
        self.name_proj = nn.Sequential(nn.LayerNorm(c.llm_hidden),
                                       nn.Linear(c.llm_hidden, c.name_dim))
        self.ref_proj = nn.Sequential(nn.LayerNorm(c.llm_hidden),
                                      nn.Linear(c.llm_hidden, c.name_dim))
        if c.roi_source == 'crop':
            self.roi_encoder = CropEncoder(c.roi_dim)
        else:
            flat = c.vision_dim * c.roi_grid * c.roi_grid
            self.roi_encoder = nn.Sequential(nn.LayerNorm(flat), nn.Linear(flat, c.roi_dim))
        self.object_mlp = nn.Sequential(
            nn.Linear(box_dim + 2 * c.name_dim + 2 + c.roi_dim + 1, 2 * d), nn.GELU(),
            nn.Linear(2 * d, d), nn.LayerNorm(d))
        self.vision_proj = nn.Sequential(nn.LayerNorm(c.vision_dim), nn.Linear(c.vision_dim, d)) \
            if c.vision_dim else None
        self.null_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)   # memory never empty
        # Small queries: at the start the cross-attention (scene) part dominates them.
        self.queries = nn.Parameter(torch.randn(c.num_queries, d) * 0.02)   # (K, D_q)
        layer = nn.TransformerDecoderLayer(d, c.heads, c.ffn_mult * d, c.dropout,
                                           activation='gelu', batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, c.layers)
        self.out_norm = nn.LayerNorm(d)
        self.out_proj = nn.Linear(d, c.llm_hidden)
        # Soft tokens start at the scale of real token embeddings (LN output has unit RMS).
        std = (c.output_rms or 1.0 / math.sqrt(c.llm_hidden)) / math.sqrt(d)
        nn.init.normal_(self.out_proj.weight, std=std)
        nn.init.zeros_(self.out_proj.bias)
        self.read_q = nn.Linear(d, d)
        self.read_k = nn.Linear(d, d)
        self.read_v = nn.Linear(d, c.llm_hidden)
        nn.init.normal_(self.read_v.weight, std=std)
        nn.init.zeros_(self.read_v.bias)
        # Appearance straight to the LLM width: the RoI feature's own linear map into the
        # read-out values (the shortest path from pixels to a soft token).
        self.read_roi = nn.Linear(c.roi_dim, c.llm_hidden)
        nn.init.normal_(self.read_roi.weight, std=(c.output_rms or 1.0 / math.sqrt(c.llm_hidden))
                        / math.sqrt(c.roi_dim))
        nn.init.zeros_(self.read_roi.bias)
        self.ref_gain = nn.Parameter(torch.ones(()))
        # Read-out bias towards the objects the request names (focus flag): a question about
        # <obj2> reads <obj2> from the first step instead of learning to find it.
        self.focus_bias = nn.Parameter(torch.tensor(2.0))
        rms = c.output_rms or 1.0 / math.sqrt(c.llm_hidden)
        self.register_buffer('output_scale', torch.tensor(float(rms)), persistent=False)
        self.scene_gain = nn.Parameter(torch.ones(c.num_queries, 1))         # (K, 1)
        self.hints = nn.Parameter(torch.randn(c.hint_tokens, c.llm_hidden) * rms)  # (H, D_llm)
        self.rescore_attn = nn.MultiheadAttention(d, c.heads, dropout=c.dropout, batch_first=True)
        self.rescore_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 1))

    def object_tokens(self, b: FusionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Perception tokens (B, N, D_q) and the RoI features in them (B, N, roi_dim)."""
        c = self.config
        batch, n = b.scores.shape
        box = sine_box_embedding(b.boxes, c.box_freqs)                       # (B, N, D_box)
        score = b.scores.clamp(1e-4, 1 - 1e-4)
        score_feats = torch.stack([score, torch.log(score / (1 - score)) / 4], dim=-1)  # (B, N, 2)
        if c.roi_source == 'crop':
            if b.crops is None:
                raise ValueError('this adapter needs object crops (roi_source crop)')
            roi = self.roi_encoder(b.crops.flatten(0, 1)).view(batch, n, -1)  # (B, N, roi_dim)
        else:
            if b.rois is None:
                raise ValueError('this adapter needs vision RoI features (roi_source vision)')
            roi = self.roi_encoder(b.rois.flatten(2))                         # (B, N, roi_dim)
        focus = b.focus if b.focus is not None else torch.zeros_like(b.scores)
        feats = torch.cat([box, self.name_proj(b.names), self.ref_proj(b.refs), score_feats,
                           roi, focus.unsqueeze(-1).to(box.dtype)], dim=-1)
        return self.object_mlp(feats), roi

    def forward(self, b: FusionBatch) -> FusionOutput:
        c = self.config
        objects, roi = self.object_tokens(b)                    # (B, N, D_q), (B, N, roi_dim)
        batch = objects.shape[0]
        memory = [objects]
        ignore = [~b.object_mask]                                            # True = ignore
        if self.vision_proj is not None:
            if b.vision is None:
                raise ValueError('this adapter was built with vision tokens (vision_dim '
                                 f'{c.vision_dim}) but the batch has none')
            memory.append(self.vision_proj(b.vision))                         # (B, M, D_q)
            ignore.append(~b.vision_mask if b.vision_mask is not None else
                          torch.zeros(b.vision.shape[:2], dtype=torch.bool, device=objects.device))
        memory.append(self.null_token.expand(batch, 1, -1))
        ignore.append(torch.zeros(batch, 1, dtype=torch.bool, device=objects.device))
        memory_t = torch.cat(memory, dim=1)                                  # (B, N+M+1, D_q)
        queries = self.queries.unsqueeze(0).expand(batch, -1, -1)            # (B, K, D_q)
        q = self.decoder(queries, memory_t, memory_key_padding_mask=torch.cat(ignore, dim=1))
        # Read-out: queries pick objects; values = reference embedding + appearance.
        scores = self.read_q(q) @ self.read_k(objects).transpose(1, 2) / math.sqrt(c.dim)
        if b.focus is not None:
            named = b.focus > 0                                               # (B, N)
            scores = scores + self.focus_bias * named[:, None, :].to(scores.dtype)
            if c.focus_readout:
                # Instruction-aware read-out (as InstructBLIP's Q-Former sees the
                # instruction): a request that names objects ("what colour is <obj2>?")
                # reads only those, so the soft tokens carry the named object's look
                # instead of a mixture the frozen LLM must untangle by index. Requests
                # that name none (descriptions) read every object.
                others = named.any(-1, keepdim=True) & ~named                 # (B, N)
                scores = scores.masked_fill(others[:, None, :], float('-inf'))
        scores = scores.masked_fill(~b.object_mask[:, None, :], float('-inf'))   # (B, K, N)
        null = torch.zeros_like(scores[..., :1])                             # "no object"
        weights = torch.softmax(torch.cat([scores, null], dim=-1), dim=-1)[..., :-1]
        values = self.ref_gain * b.refs.to(objects.dtype) + self.read_v(objects) + \
            self.read_roi(roi)                                               # (B, N, D_llm)
        u = self.out_proj(self.out_norm(q)) + weights @ values               # (B, K, D_llm)
        scene = self.output_scale * self.scene_gain * u * torch.rsqrt(
            u.pow(2).mean(-1, keepdim=True) + 1e-12)                          # (B, K, D_llm)
        soft = torch.cat([self.hints.unsqueeze(0).expand(batch, -1, -1), scene], dim=1)
        attended, _ = self.rescore_attn(objects, q, q, need_weights=False)   # (B, N, D_q)
        logits = self.rescore_head(objects + attended).squeeze(-1)           # (B, N)
        return FusionOutput(soft, logits, weights)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------ save / load

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


# ------------------------------------------------------------------ inputs

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


_REF = __import__('re').compile(r'[<(]obj(\d+)[>)]')


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

    from .mllm.transformers_vlm import downscale
    model = backend.model
    family = model.config.model_type
    params = inspect.signature(model.get_image_features).parameters

    def fn(images):
        out = []
        for image in images:
            pil = downscale(image, backend.config.mllm.image_max_side)
            px = backend.processor.image_processor(images=[pil], return_tensors='pt',
                                                   **backend._image_kwargs)
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


# ------------------------------------------------------------------ runtime

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
