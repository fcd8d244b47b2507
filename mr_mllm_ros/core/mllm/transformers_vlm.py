"""Vision-language model backend (transformers `AutoModelForImageTextToText`): the model
sees the camera image AND the perception-embedded prompt.

Tested families (tiny random-weight builds in test/helpers/make_tiny_models.py):
SmolVLM / Idefics3, Qwen2-VL, Qwen2.5-VL, LLaVA. Any architecture that transformers maps
to AutoModelForImageTextToText and whose processor has a chat template should work.

Prompt: the processor's chat template renders the prefix messages (system prompt and
few-shot examples, text parts) and the user turn with the image part first, then the
text; the answer prefix is appended to the rendered text; then the processor expands
the image placeholder into the model's image tokens (tiles, merged patches...) and
preprocesses the pixels. Images are downscaled first so the longer side is at most
`mllm.image_max_side` (0 = never), which bounds the image-token count and latency.
Idefics3/SmolVLM processors resize every image (up, too) to their own `size.longest_edge`
(e.g. 2048 px = 4x4 tiles of 512 + a global view = 1088 tokens for SmolVLM-256M) before
tiling, so for them the resize target is also capped at `image_max_side` rounded up to
whole tiles (768 -> 1024 px = 2x2 tiles + global = 320 tokens).

No prefix KV reuse here (`mllm.kv_reuse` is ignored): in these models the image comes
inside the user turn and the prompt's positions after it depend on the image (its token
count varies with the image size for Idefics3 tiling and Qwen2-VL dynamic resolution, and
Qwen2-VL's M-RoPE gives text after an image positions computed from the image grid), and
the vision encoder and the multimodal merge are not cache-aware in `generate`; the cached
prefix would save only the (short) system prompt while risking wrong positions.

Soft tokens (shared-query fusion, core.fusion): the marker in the user turn becomes K
placeholder tokens before the processor runs; the K placeholder embeddings are replaced
by the request's soft tokens in `inputs_embeds`, which generate() takes beside the
processor outputs (SmolVLM/Idefics3, Qwen2-VL, Qwen2.5-VL, LLaVA: the model then finds
its image positions by comparing embeddings with the image token's, which soft tokens
never equal). PaliGemma and Florence-2 get them through a one-shot hook on the input
embedding instead (`SOFT_HOOK_FAMILIES`). Florence-2 is an encoder-decoder: the prompt
(answer prefix included) is the encoder input and the reply is the whole decoder output.

Yes/no scoring (`yes_probability`) runs the requests as one left-padded batch through
`generate(max_new_tokens=1)`, which derives position ids from the attention mask
(1-D for Llama-style models, M-RoPE for Qwen2-VL), so padding does not shift positions;
it falls back to one request at a time when the tokenizer has no pad token or the
processor cannot batch the inputs.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Sequence

import numpy as np

from ..config import Config
from ..errors import BackendError, ModelLoadError
from ..types import Generation
from . import hf_common, streaming
from .backend import MllmRequest

log = logging.getLogger(__name__)

_RUNTIME_ERRORS = (RuntimeError, ValueError, IndexError, TypeError, KeyError)
#: Families whose soft tokens go in through an embedding hook, not `inputs_embeds`.
SOFT_HOOK_FAMILIES = ('paligemma', 'florence2')


def downscale(image: np.ndarray, max_side: int):
    """(H, W, 3) uint8 RGB -> PIL image whose longer side is at most `max_side` (aspect
    kept; 0 = no limit). Greyscale and RGBA inputs are converted to RGB."""
    from PIL import Image
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3) \
            or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise BackendError(f'a VLM needs an (H, W, 3) uint8 RGB image, got shape {arr.shape} '
                           f'dtype {arr.dtype}')
    pil = Image.fromarray(np.ascontiguousarray(arr)).convert('RGB')
    h, w = arr.shape[:2]
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        pil = pil.resize(size, Image.Resampling.BICUBIC)
    return pil


def _load_hint(error: Exception, config: Config) -> str:
    if 'Unrecognized configuration class' in str(error):
        return ' (a text-only model? use mllm.backend transformers_llm)'
    return hf_common.load_error_hint(error, config)


class TransformersVlmBackend(hf_common.SoftTokenInput):
    sees_images = True

    def __init__(self, config: Config):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        cfg = config.mllm
        source, dtype, self.processor, self.model = hf_common.load_pretrained(
            config, AutoProcessor, AutoModelForImageTextToText, 'VLM',
            errors=(OSError, ValueError, KeyError, TypeError, ImportError), hint=_load_hint)
        self.tokenizer = getattr(self.processor, 'tokenizer', None)
        if self.tokenizer is None or getattr(self.processor, 'image_processor', None) is None:
            raise ModelLoadError(f'{source} has no image processor: not an image-text model '
                                 '(use mllm.backend transformers_llm for a text LLM)')
        self._chat_template = None
        if not getattr(self.processor, 'chat_template', None):
            # Some repositories keep the template only in the tokenizer.
            self._chat_template = getattr(self.tokenizer, 'chat_template', None)
            if not self._chat_template:
                raise ModelLoadError(f'{source} has no chat template: an instruct model is '
                                     'needed')
        try:
            self.model.to(cfg.device).eval()
        except RuntimeError as e:  # e.g. CUDA out of memory
            raise ModelLoadError(f'cannot move the VLM from {source} to {cfg.device}: {e}') \
                from e
        self.config = config
        self._image_kwargs = _image_size_cap(self.processor.image_processor, cfg.image_max_side)
        self.device = torch.device(cfg.device)
        self.dtype = dtype
        self.name = f'{hf_common.short_name(source)} (transformers_vlm)'
        # One inference at a time; the tokenizer has its own lock because the Rust
        # tokenizer's padding state is mutable (count_tokens may run in other threads).
        self._lock = threading.Lock()
        self._tok_lock = threading.Lock()
        self._yes = hf_common.word_token_ids(self.tokenizer, hf_common.YES_WORDS)
        self._no = hf_common.word_token_ids(self.tokenizer, hf_common.NO_WORDS)
        self.kv_hits = 0  # prefix KV reuse is never done here (see the module docstring)
        mconf = self.model.config
        self.encoder_decoder = bool(getattr(mconf, 'is_encoder_decoder', False))
        self.soft_mode = 'hook' if mconf.model_type in SOFT_HOOK_FAMILIES \
            or self.encoder_decoder else 'inputs_embeds'
        self.soft_placeholder_id = hf_common.soft_placeholder_id(
            self.tokenizer, _special_token_ids(mconf, self.processor))

    # ------------------------------------------------------------------- prompts
    def _conversation(self, request: MllmRequest) -> list[dict]:
        conv = [{'role': m.role, 'content': [{'type': 'text', 'text': m.content}]}
                for m in request.prefix]
        user = [{'type': 'text', 'text': request.user}]
        if request.image is not None:
            user.insert(0, {'type': 'image'})
        conv.append({'role': 'user', 'content': user})
        return conv

    def prompt_text(self, request: MllmRequest) -> str:
        """The rendered prompt (with the image placeholder, before image-token expansion)
        followed by the answer prefix."""
        kwargs = {'chat_template': self._chat_template} if self._chat_template else {}
        return self.processor.apply_chat_template(
            self._conversation(request), tokenize=False, add_generation_prompt=True,
            **kwargs) + request.answer_prefix

    def count_tokens(self, text: str) -> int:
        with self._tok_lock:
            return len(self.tokenizer(text, add_special_tokens=False)['input_ids'])

    def _prompt_with_placeholders(self, request: MllmRequest, soft) -> str:
        text = self.prompt_text(request)
        if soft is None:
            hf_common.check_no_marker(text)
            return text
        return hf_common.expand_soft_marker(text, self.tokenizer, self.soft_placeholder_id,
                                            soft.shape[0])

    def _inputs(self, requests: Sequence[MllmRequest], padding: bool = False, softs=None):
        """Processor outputs (BatchFeature on the model's device) for the requests; the
        soft-token marker of request i becomes softs[i].shape[0] placeholder tokens."""
        softs = softs or [None] * len(requests)
        texts = [self._prompt_with_placeholders(r, s) for r, s in zip(requests, softs)]
        max_side = self.config.mllm.image_max_side
        images = [downscale(r.image, max_side) for r in requests if r.image is not None]
        bos = self.tokenizer.bos_token
        kwargs = {}
        # Like processor.apply_chat_template(tokenize=True): a template that writes the BOS
        # itself must not get a second one from the tokenizer.
        if bos and all(t.startswith(bos) for t in texts):
            kwargs['add_special_tokens'] = False
        if padding:
            kwargs.update(padding=True, padding_side='left')
        if images:
            kwargs.update(self._image_kwargs)
        with self._tok_lock:
            inputs = self.processor(text=texts, images=images or None, return_tensors='pt',
                                    **kwargs)
        return inputs.to(self.device, dtype=self.dtype)

    #: public name of _inputs, for fusion training and the benchmarks
    model_inputs = _inputs

    @property
    def image_kwargs(self) -> dict:
        """Image-processor kwargs that cap the image size (mllm.image_max_side)."""
        return self._image_kwargs

    def _one_input(self, request: MllmRequest, soft):
        """The model input of one request; a processor failure is a BackendError."""
        try:
            return self._inputs([request], softs=[soft])
        except BackendError:
            raise
        except _RUNTIME_ERRORS as e:
            raise BackendError(f'{self.name}: cannot build the model input: {e}') from e

    # ---------------------------------------------------------------- inference
    def generate(self, request: MllmRequest) -> Generation:
        import torch
        t0 = time.perf_counter()
        with self._lock:
            if self.model is None:
                raise BackendError(f'{self.name}: backend is closed')
            streaming.check(request.stream)
            soft = self._soft(request)
            inputs = self._one_input(request, soft)
            prompt_length = int(inputs['input_ids'].shape[1])
            # An encoder-decoder's output is the decoder's: its start token, then the reply.
            reply_start = 1 if self.encoder_decoder else prompt_length
            t1 = time.perf_counter()
            kwargs = hf_common.request_generation_kwargs(self.config, self.tokenizer, request,
                                                         reply_start, self._tok_lock)
            try:
                with torch.inference_mode():
                    out = self._generate(inputs, [soft], kwargs)
            except _RUNTIME_ERRORS as e:
                raise BackendError(f'{self.name}: generation failed: {e}') from e
            streaming.check(request.stream)  # stopped by a cancel: no reply
            new = out[0, reply_start:].tolist()
            with self._tok_lock:
                reply = self.tokenizer.decode(new, skip_special_tokens=True)
        t2 = time.perf_counter()
        return Generation(text=request.answer_prefix + reply, prompt_tokens=prompt_length,
                          generated_tokens=len(new),
                          timings_ms={'prompt': (t1 - t0) * 1e3, 'generate': (t2 - t1) * 1e3})

    def _generate(self, inputs, softs, kwargs):
        """model.generate on processor outputs, soft tokens inserted where given."""
        if all(s is None for s in softs):
            return self.model.generate(**inputs, **kwargs)
        import torch
        counts = [0 if s is None else s.shape[0] for s in softs]
        mask = hf_common.soft_token_mask(inputs['input_ids'], self.soft_placeholder_id, counts,
                                         inputs.get('attention_mask'))
        rows = torch.cat([s for s in softs if s is not None])
        embedding = self.model.get_input_embeddings()
        if self.soft_mode == 'inputs_embeds':
            embeds = hf_common.insert_soft_tokens(embedding(inputs['input_ids']), mask, rows)
            return self.model.generate(**inputs, inputs_embeds=embeds, **kwargs)
        with hf_common.SoftTokenHook(embedding, self.soft_placeholder_id, rows) as hook:
            out = self.model.generate(**inputs, **kwargs)
        if not hook.applied:
            raise BackendError(f'{self.name}: the soft tokens were not inserted (the model never '
                               f'embedded the {int(mask.sum())} placeholder tokens in one call)')
        return out

    def yes_probability(self, requests: Sequence[MllmRequest]) -> list[float]:
        """P(yes) from the next-token logits: one left-padded batch where the processor
        can pad, else one request at a time."""
        if not requests:
            return []
        with self._lock:
            if self.model is None:
                raise BackendError(f'{self.name}: backend is closed')
            softs = [self._soft(r) for r in requests]
            if len(requests) > 1 and self.tokenizer.pad_token is not None:
                try:
                    inputs = self._inputs(requests, padding=True, softs=softs)
                except BackendError:
                    raise
                except _RUNTIME_ERRORS as e:
                    log.debug('%s: batched yes/no input failed (%s); one by one', self.name, e)
                else:
                    return self._yes_from(inputs, softs)
            probs: list[float] = []
            for r, soft in zip(requests, softs):
                probs += self._yes_from(self._one_input(r, soft), [soft])
            return probs

    def _yes_from(self, inputs, softs) -> list[float]:
        import torch
        try:
            with torch.inference_mode():
                # generate() derives position ids from the attention mask (M-RoPE included),
                # so left padding does not shift positions; output_logits = raw logits.
                kwargs = hf_common.generation_kwargs(self.config, self.tokenizer, 1)
                out = self._generate(inputs, softs, dict(kwargs, output_logits=True,
                                                         return_dict_in_generate=True))
        except _RUNTIME_ERRORS as e:
            raise BackendError(f'{self.name}: yes/no scoring failed: {e}') from e
        return hf_common.yes_probability_from_logits(out.logits[0], self._yes, self._no)

    def close(self) -> None:
        with self._lock:
            self.model = None
        hf_common.release_cuda_memory()


def _special_token_ids(model_config, processor) -> set[int]:
    """Ids the model or processor gives a meaning (image, video, vision start/end...):
    never used as the soft-token placeholder."""
    ids: set[int] = set()
    configs = [model_config, getattr(model_config, 'text_config', None)]
    for obj in configs + [processor]:
        for key, value in (vars(obj).items() if obj is not None else ()):
            if isinstance(value, int) and not isinstance(value, bool) and \
                    (key.endswith('_token_id') or key.endswith('_token_index')) and \
                    key not in ('pad_token_id', 'decoder_start_token_id'):
                ids.add(value)
    return ids


def _image_size_cap(image_processor, max_side: int) -> dict:
    """Processor kwargs that keep tiling processors (Idefics3, SmolVLM: resize to
    `size.longest_edge`, then split into `max_image_size` tiles) from upscaling past
    `max_side` rounded up to whole tiles; {} for every other processor."""
    if not max_side or not getattr(image_processor, 'do_image_splitting', False):
        return {}
    longest = _size_value(getattr(image_processor, 'size', None), 'longest_edge')
    tile = _size_value(getattr(image_processor, 'max_image_size', None), 'longest_edge')
    if not longest or not tile:
        return {}
    cap = max(tile, -(-max_side // tile) * tile)
    return {'size': {'longest_edge': cap}} if cap < longest else {}


def _size_value(size, key: str):
    if isinstance(size, dict):
        return size.get(key)
    return getattr(size, key, None)
