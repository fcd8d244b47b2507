"""What the transformers backends share: model location and dtype policy, constrained
decoding hook-up, yes/no scoring."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..config import Config
from ..errors import ModelLoadError

YES_WORDS = ('yes', 'Yes', ' yes', ' Yes', 'YES')
NO_WORDS = ('no', 'No', ' no', ' No', 'NO')


def resolve_model_source(config: Config) -> str:
    """A local folder (relative paths in models_dir) or, only when hub access is allowed,
    a hub id. Never silently downloads: offline + missing folder is an error."""
    name = config.mllm.model
    local = config.resolve_model_path(name)
    if local.is_dir():
        return str(local)
    offline = os.environ.get('HF_HUB_OFFLINE', '0') not in ('0', '', 'false', 'False')
    looks_like_hub_id = '/' in name and not Path(os.path.expanduser(name)).is_absolute() \
        and not name.startswith('.')
    if looks_like_hub_id and not offline:
        return name
    hint = ('run `mr-mllm models prepare` for the offline default'
            if name == 'smollm2-135m-instruct' else
            'download it once on a networked machine (huggingface-cli download) and point '
            'mllm.model at the folder')
    raise ModelLoadError(f'MLLM weights not found: {local} ({hint})'
                         + ('; hub ids need HF_HUB_OFFLINE=0' if looks_like_hub_id else ''))


def torch_dtype(config: Config):
    import torch
    name = config.mllm.dtype
    on_gpu = config.mllm.device.startswith('cuda')
    if name == 'auto':
        if not on_gpu:
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name in ('float16', 'bfloat16') and not on_gpu:
        # Half precision matmuls on CPU are slow or unsupported; say so instead of crawling.
        raise ModelLoadError(f'mllm.dtype={name} needs a GPU (mllm.device={config.mllm.device}); '
                             'use float32 or auto on CPU')
    return getattr(torch, name)


def check_device(device: str) -> None:
    import torch
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise ModelLoadError(f'mllm.device={device} but torch sees no CUDA GPU '
                             f'(torch {torch.__version__}); use device cpu')


def word_token_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """First token ids of the spellings of a one-word answer."""
    ids = set()
    for w in words:
        toks = tokenizer(w, add_special_tokens=False)['input_ids']
        if toks:
            ids.add(toks[0])
    return sorted(ids)


def yes_probability_from_logits(logits, yes_ids: list[int], no_ids: list[int]) -> list[float]:
    """logits: (batch, vocab) at the answer position -> P(yes | yes or no) per row."""
    import torch
    lp = torch.log_softmax(logits.float(), dim=-1)
    yes = torch.logsumexp(lp[:, yes_ids], dim=-1)
    no = torch.logsumexp(lp[:, no_ids], dim=-1)
    return torch.sigmoid(yes - no).tolist()


def short_name(source: str) -> str:
    """'…/models/smollm2-135m-instruct' -> 'smollm2-135m-instruct' (names in outputs)."""
    return source.rstrip('/').split('/')[-1]


def pad_id(tokenizer) -> int | None:
    """The pad id, else the (first) EOS id: a pad id of 0 is a valid id, not 'missing'."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    return eos[0] if isinstance(eos, list) else eos


def generation_kwargs(config: Config, tokenizer, max_new_tokens: int) -> dict:
    """generate() arguments from mllm.*: greedy unless a temperature is set."""
    cfg = config.mllm
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=cfg.temperature > 0,
                  repetition_penalty=cfg.repetition_penalty, pad_token_id=pad_id(tokenizer))
    if cfg.temperature > 0:
        kwargs['temperature'] = cfg.temperature
    else:  # greedy: drop sampling defaults from the model's generation_config
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def request_generation_kwargs(config: Config, tokenizer, request, prompt_length: int) -> dict:
    """generate() arguments for one MllmRequest: decoding settings, stop strings, and the
    constrained-decoding processor when the request restricts object references."""
    kwargs = generation_kwargs(config, tokenizer, request.max_new_tokens)
    if request.stop:
        kwargs.update(stop_strings=list(request.stop), tokenizer=tokenizer)
    if request.allowed_indices is not None:
        from transformers import LogitsProcessorList

        from ..grounding import ObjectReferenceLogitsProcessor
        kwargs['logits_processor'] = LogitsProcessorList([ObjectReferenceLogitsProcessor(
            tokenizer, request.allowed_indices, prompt_length, request.answer_prefix)])
    return kwargs


def release_cuda_memory() -> None:
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
