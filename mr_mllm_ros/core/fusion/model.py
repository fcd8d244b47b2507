"""Shared-query fusion (MR-MLLM, our interpretation): what the perception-embedded prompt
cannot carry as text (each object's appearance, the scene's look) goes to the LLM as K
soft tokens.

    perception tokens  P = MLP[sine(box), class-name emb, reference emb, score, RoI feature,
                               focus flag]
    memory             M = P (+) proj(vision tokens) (+) null token
    K learned queries  Q --(self-attention, cross-attention to M, FFN) x L--> Q'
    read-out           R = softmax(Q' . P + b focus) (g * ref + W(roi) [+ V(P)])  (B, K, D_llm)
                       (over the objects the request names, when it names any;
                       V(P) only with object_readout)
    scene tokens       S = rms * a * unit(u),                 (B, K, D_llm)
                       u = (1 - s) unit(Linear(LN(Q'))) + s unit(R)   (s = readout_share)
    soft tokens        [H learned hint tokens] + S            (B, H + K, D_llm), at the marker
    re-scoring head    r = Linear(LN(P + attn(P, Q')))        (B, N) logits: is the box right?

- Class-name and reference embeddings are the mean of the LLM's own input embeddings of
  their tokens (frozen): the class name, and the index digits N of `<objN>` (the token
  that tells <obj2> from <obj3>), so the adapter speaks the LLM's vocabulary.
- The read-out lets each query carry the reference embedding of the objects it attends
  to, plus a learned projection of their appearance, straight into the LLM width:
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
  (BCE) on datasets that mark detections right or wrong, exposed as
  `FusionRuntime.rescore`, and blended into core.reasoning.reinforce's check of uncertain boxes
  (reinforce.fusion_weight).

An adapter is a folder: `adapter.safetensors` (weights) + `adapter.json` (its
`AdapterConfig` and provenance). Loading checks every tensor shape against the config and
the config against the LLM; a mismatch is refused naming both shapes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from .fusion_config import AdapterConfig


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
        # object_readout: the read-out values also carry a projection of the whole
        # perception token. Off by default: box, class and score are in the prompt already,
        # and on the toy this path grew to 3-6x the appearance path W(roi) within 25 steps
        # and crowded it out (measured: seed 12345 with purple at chance with it, colour
        # 0.86 at step 50 without it).
        self.read_v = None
        if c.object_readout:
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
        values = self.ref_gain * b.refs.to(objects.dtype) + self.read_roi(roi)  # (B, N, D_llm)
        if self.read_v is not None:
            values = values + self.read_v(objects)
        summary = self.out_proj(self.out_norm(q))                            # (B, K, D_llm)
        read = weights @ values                                              # (B, K, D_llm)
        share = c.readout_share
        if share > 0:
            # Each path at unit RMS, mixed in a fixed ratio: the read-out (the named object's
            # look) keeps its share of every scene token whatever the summary path grows to.
            # Measured on the toy without it (seed 12345, colours red/green/blue/purple):
            # by step 25 the summary path had grown 6x (RMS 0.83 vs 0.10-0.34 read-out),
            # the read-out's weights had moved half to "none", the part of the scene tokens
            # that varies across questions was 6 % of their RMS, and the LLM answered at
            # chance although a linear probe still read colour from the soft tokens (0.99).
            u = (1 - share) * _unit_rms(summary) + share * _unit_rms(read)
        else:
            u = summary + read
        scene = self.output_scale * self.scene_gain * _unit_rms(u)            # (B, K, D_llm)
        soft = torch.cat([self.hints.unsqueeze(0).expand(batch, -1, -1), scene], dim=1)
        attended, _ = self.rescore_attn(objects, q, q, need_weights=False)   # (B, N, D_q)
        logits = self.rescore_head(objects + attended).squeeze(-1)           # (B, N)
        return FusionOutput(soft, logits, weights)


def _unit_rms(x: torch.Tensor) -> torch.Tensor:
    """x / RMS(x) over the last dimension (an all-zero row stays zero)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-12)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
