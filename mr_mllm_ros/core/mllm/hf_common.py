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


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all sequences share (KV reuse, shared-prefix batches)."""
    n = 0
    while all(len(x) > n for x in seqs) and len({x[n] for x in seqs}) == 1:
        n += 1
    return n


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


def load_kwargs(config: Config) -> dict:
    """from_pretrained arguments every transformers backend shares: safetensors only
    unless mllm.allow_pickle_weights (a pickled checkpoint can execute code as it loads)."""
    cfg = config.mllm
    return {'trust_remote_code': cfg.trust_remote_code,
            'use_safetensors': None if cfg.allow_pickle_weights else True}


def load_error_hint(error: Exception, config: Config) -> str:
    """Why a from_pretrained failed, in the user's terms, where we can tell."""
    text = str(error)
    if not config.mllm.allow_pickle_weights and 'safetensors' in text.lower():
        return (' (only safetensors weights load by default; a pickled .bin checkpoint '
                'needs mllm.allow_pickle_weights: true, if you trust its source)')
    return ''


def load_pretrained(config: Config, preprocessor_cls, model_cls, what: str,
                    errors: tuple = (OSError, ValueError), hint=load_error_hint):
    """(source, dtype, preprocessor, model) of mllm.model: the tokenizer or processor and
    the model, after the device check; a load failure (one of `errors`) is a ModelLoadError
    'cannot load <what> from <source><hint(error, config)>'."""
    cfg = config.mllm
    source = resolve_model_source(config)
    check_device(cfg.device)
    dtype = torch_dtype(config)
    try:
        preprocessor = preprocessor_cls.from_pretrained(
            source, trust_remote_code=cfg.trust_remote_code)
        model = model_cls.from_pretrained(source, dtype=dtype,
                                          attn_implementation=cfg.attn_implementation,
                                          **load_kwargs(config))
    except errors as e:
        raise ModelLoadError(f'cannot load {what} from {source}{hint(e, config)}: {e}') from e
    return source, dtype, preprocessor, model


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


def request_generation_kwargs(config: Config, tokenizer, request, prompt_length: int,
                              decode_lock=None) -> dict:
    """generate() arguments for one MllmRequest: decoding settings, stop strings, the
    constrained-decoding processor when the request restricts object references, the
    n-gram repetition guard (mllm.no_repeat_ngram_size), and with `request.stream` a
    streamer (text as it is written; tokenizer calls under `decode_lock` when given) and
    a stopping criterion that ends generation at the step after a cancel."""
    kwargs = generation_kwargs(config, tokenizer, request.max_new_tokens)
    stopping = []
    if request.stream is not None:
        stopping.append(StopOnCancel(request.stream))
        kwargs['streamer'] = TextStreamer(tokenizer, request.stream, decode_lock)
    if request.stop and all(len(s) == 1 for s in request.stop):
        # One-character stops ('.', '<'): a token-set check. transformers' stop_strings
        # re-embeds the whole vocabulary on every call (~1-4 s on a CPU here).
        from ..reasoning.grounding import token_table
        stopping.append(StopOnTokens(token_table(tokenizer).containing(request.stop),
                                     prompt_length))
    elif request.stop:
        kwargs.update(stop_strings=list(request.stop), tokenizer=tokenizer)
    processors = []
    if request.allowed_indices is not None:
        from ..reasoning.grounding import ObjectReferenceLogitsProcessor
        processors.append(ObjectReferenceLogitsProcessor(
            tokenizer, request.allowed_indices, prompt_length, request.answer_prefix))
    if config.mllm.no_repeat_ngram_size:
        from ..reasoning.grounding import token_table
        from .ngram_guard import NgramLogitsProcessor
        processors.append(NgramLogitsProcessor(config.mllm.no_repeat_ngram_size,
                                               prompt_length, token_table(tokenizer).markup))
    if processors:
        from transformers import LogitsProcessorList
        kwargs['logits_processor'] = LogitsProcessorList(processors)
    if stopping:
        kwargs['stopping_criteria'] = stopping
    return kwargs


class StopOnCancel:
    """transformers stopping criterion: every row is done once the stream is cancelled
    (checked after each decoding step)."""

    def __init__(self, stream):
        self.stream = stream

    def __call__(self, input_ids, scores, **kwargs):
        import torch
        return torch.full((input_ids.shape[0],), self.stream.cancelled, dtype=torch.bool,
                          device=input_ids.device)


class TextStreamer:
    """transformers streamer (generate(streamer=...)): the reply's new text to a
    core.mllm.streaming.TokenStream as each token is generated. generate() first puts the
    prompt (or an encoder-decoder's start token), which is not part of the reply."""

    def __init__(self, tokenizer, stream, lock=None):
        from contextlib import nullcontext

        from .streaming import IncrementalDecoder
        self.stream = stream
        self._lock = lock if lock is not None else nullcontext()
        self._decoder = IncrementalDecoder(
            lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        with self._lock:
            piece = self._decoder.push(value.reshape(-1).tolist())
        self.stream.emit(piece)

    def end(self) -> None:
        """Nothing held back: a piece is emitted as soon as it decodes."""


class StopOnTokens:
    """transformers stopping criterion: a row is done once it generated one of `ids`.
    input_ids: (batch, seq) -> (batch,) bool."""

    def __init__(self, ids: frozenset[int], prompt_length: int):
        self.ids = ids
        self.prompt_length = prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        import torch
        done = [input_ids.shape[1] > self.prompt_length and int(row[-1]) in self.ids
                for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def release_cuda_memory() -> None:
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# ----------------------------------------------------------------- soft tokens
# Shared-query fusion soft tokens (core.fusion) enter a prompt at SOFT_TOKENS_MARKER: the
# marker becomes K copies of one placeholder token, and the K placeholder embeddings are
# overwritten with the soft tokens, in `inputs_embeds` (decoder-only families whose
# generate() takes them) or by a one-shot hook on the input embedding (the others).

def soft_placeholder_id(tokenizer, avoid_ids=()) -> int:
    """The token id that stands for one soft token in input_ids: the pad token, else the
    unk token, else another special token; never EOS/BOS or an id in `avoid_ids` (image
    tokens). Special tokens are matched whole by the tokenizer, so K copies of its string
    give exactly K ids wherever they stand."""
    from ..errors import ModelLoadError
    avoid = {i for i in avoid_ids if i is not None}
    for special in (tokenizer.eos_token_id, tokenizer.bos_token_id):
        avoid.update(special if isinstance(special, list) else [special])
    candidates = [tokenizer.pad_token_id, getattr(tokenizer, 'unk_token_id', None)]
    candidates += list(getattr(tokenizer, 'all_special_ids', []) or [])
    for token_id in candidates:
        if token_id is not None and token_id not in avoid:
            return int(token_id)
    raise ModelLoadError('the tokenizer has no special token free to stand for soft tokens '
                         f'(special ids {sorted(getattr(tokenizer, "all_special_ids", []))}, '
                         f'reserved {sorted(avoid)})')


def expand_soft_marker(text: str, tokenizer, placeholder_id: int, count: int) -> str:
    """`text` with its one SOFT_TOKENS_MARKER replaced by `count` placeholder tokens."""
    from ..errors import BackendError
    from .backend import SOFT_TOKENS_MARKER
    found = text.count(SOFT_TOKENS_MARKER)
    if found != 1:
        raise BackendError(f'a request with soft tokens needs the prompt marker '
                           f'{SOFT_TOKENS_MARKER} exactly once; the prompt has it {found} times '
                           '(use a prompt template with a {soft_tokens} field, e.g. '
                           'scene_fusion_v1)')
    token = tokenizer.convert_ids_to_tokens(placeholder_id)
    return text.replace(SOFT_TOKENS_MARKER, token * count)


def check_no_marker(text: str) -> None:
    from ..errors import BackendError
    from .backend import SOFT_TOKENS_MARKER
    if SOFT_TOKENS_MARKER in text:
        raise BackendError(f'the prompt holds the soft-token marker {SOFT_TOKENS_MARKER} but '
                           'the request carries no soft tokens (MllmRequest.soft_tokens)')


def soft_tokens_tensor(soft_tokens, hidden: int, device, dtype, name: str):
    """MllmRequest.soft_tokens as a (K, hidden) tensor on the model's device and dtype;
    BackendError naming both widths when the adapter was built for another model."""
    import torch

    from ..errors import BackendError
    t = torch.as_tensor(soft_tokens)
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] != hidden:
        raise BackendError(f'{name}: soft tokens of shape {tuple(t.shape)} do not fit this '
                           f'model: expected (K, {hidden}) with K >= 1 (the LLM embedding '
                           f'width is {hidden})')
    return t.to(device=device, dtype=dtype)


def soft_token_mask(input_ids, placeholder_id: int, counts, attention_mask=None):
    """(B, L) bool mask of the placeholder positions (outside padding, where the pad id may
    be the placeholder id); checks that row b holds counts[b] of them."""
    from ..errors import BackendError
    mask = input_ids == placeholder_id
    if attention_mask is not None:
        mask &= attention_mask.bool()
    found = mask.sum(dim=1).tolist()
    if list(found) != [int(c) for c in counts]:
        raise BackendError(f'soft-token placeholders per prompt: expected {list(counts)}, '
                           f'found {found} (the placeholder token id {placeholder_id} also '
                           'occurs in the prompt text?)')
    return mask


def insert_soft_tokens(embeds, mask, soft_rows):
    """embeds (B, L, D) with the True positions of mask (B, L) replaced, in order, by the
    rows of soft_rows (total True, D). Out of place, so gradients reach soft_rows."""
    out = embeds.clone()
    out[mask] = soft_rows.to(out.dtype)
    return out


class SoftTokenHook:
    """One-shot forward hook on an input-embedding module: the first call whose input ids
    hold exactly `expected` placeholder ids gets those embeddings replaced by `soft_rows`
    (expected, D); later calls (decoding steps) are untouched. For models whose
    generate() does not take inputs_embeds (PaliGemma, Florence-2). `applied` tells
    whether it fired."""

    def __init__(self, embedding, placeholder_id: int, soft_rows):
        self.embedding = embedding
        self.placeholder_id = placeholder_id
        self.soft_rows = soft_rows
        self.applied = False
        self._handle = None

    def _hook(self, module, args, output):
        if self.applied or not args:
            return None
        mask = args[0] == self.placeholder_id
        if int(mask.sum()) != self.soft_rows.shape[0]:
            return None
        self.applied = True
        return insert_soft_tokens(output, mask, self.soft_rows)

    def __enter__(self):
        self._handle = self.embedding.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False


class SoftTokenInput:
    """What the transformers backends share about soft-token input (mixin: needs
    self.model and self.name)."""

    supports_soft_tokens = True

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    def _soft(self, request):
        """(K, hidden) soft tokens on the model's device/dtype, or None (prompt-only)."""
        if request.soft_tokens is None:
            return None
        emb = self.model.get_input_embeddings().weight
        return soft_tokens_tensor(request.soft_tokens, emb.shape[1], emb.device, emb.dtype,
                                  self.name)
