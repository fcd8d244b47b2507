"""Soft tokens through every backend family, and the adapter at run time (SceneReasoner).

PLUMBING ONLY, with tiny random-weight models (test/helpers/make_tiny_models.py): the
text LLM (Llama), SmolVLM/Idefics3, Qwen2-VL, Qwen2.5-VL, LLaVA (soft tokens in
`inputs_embeds`) and PaliGemma, Florence-2 (embedding hook). What is verified: the
language model receives exactly the soft tokens, in one block, where the prompt's marker
was; generation, yes/no scoring, constrained decoding and prefix KV reuse work with them;
the prompt-only path is unchanged; adapters built for another model are refused. Nothing
here says whether soft tokens help (see test_fusion_train.py and benchmarks/fusion_toy.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.errors import BackendError, ModelLoadError
from mr_mllm_ros.core.fusion import AdapterConfig, SharedQueryFusion, save_adapter
from mr_mllm_ros.core.mllm import create_backend
from mr_mllm_ros.core.mllm.backend import SOFT_TOKENS_MARKER, ChatMessage, MllmRequest
from mr_mllm_ros.core.reasoning.scene import SceneReasoner
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame

FAMILIES = ('llm', 'idefics3', 'qwen2_vl', 'qwen2_5_vl', 'llava', 'paligemma', 'florence2')
K = 5


from helpers import make_tiny_models as maker  # noqa: E402


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> dict[str, Path]:
    return maker.make_all(tmp_path_factory.mktemp('fusion_tiny'), FAMILIES)


def config_for(path: Path, family: str, **overrides):
    values = {'mllm.backend': 'transformers_llm' if family == 'llm' else 'transformers_vlm',
              'mllm.model': str(path), 'mllm.device': 'cpu', 'mllm.max_new_tokens': 6,
              'mllm.image_max_side': 64, 'mllm.max_objects': 3}
    values.update(overrides)
    return load_config(overrides=values)


@pytest.fixture(scope='module')
def backends(tiny):
    loaded = {}

    def get(family):
        if family not in loaded:
            loaded[family] = create_backend(config_for(tiny[family], family))
        return loaded[family]
    yield get
    for b in loaded.values():
        b.close()


def image(seed: int = 0, h: int = 64, w: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def detections() -> DetectionSet:
    return DetectionSet((Detection(0, 'person', 0.9, Box(2, 4, 30, 60)),
                         Detection(16, 'dog', 0.7, Box(34, 20, 62, 60))), 64, 64)


def request(family: str, soft=None, **fields) -> MllmRequest:
    user = f'Objects: <obj0> person, <obj1> dog\nAppearance: {SOFT_TOKENS_MARKER}\nDescribe.'
    return MllmRequest(prefix=(ChatMessage('system', 'You describe.'),), user=user,
                       image=None if family == 'llm' else image(), soft_tokens=soft,
                       max_new_tokens=6, **fields)


class _Capture:
    """Records the inputs_embeds the language model (the encoder for Florence-2) gets."""

    def __init__(self, model):
        module = model.get_encoder() if model.config.is_encoder_decoder else model.get_decoder()
        self.seen = []
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        embeds = kwargs.get('inputs_embeds')
        if embeds is not None:
            self.seen.append(embeds.detach().clone())

    def close(self):
        self.handle.remove()


def _soft_block_position(embeds: torch.Tensor, soft: torch.Tensor) -> int:
    """Start of the one place where the K soft tokens stand, in order, in embeds (1, L, D)."""
    rows = embeds[0]
    starts = [p for p in range(rows.shape[0] - soft.shape[0] + 1)
              if torch.allclose(rows[p:p + soft.shape[0]], soft, atol=1e-5)]
    assert len(starts) == 1, starts
    return starts[0]


@pytest.mark.parametrize('family', FAMILIES)
def test_soft_tokens_reach_the_language_model(family, backends):
    backend = backends(family)
    assert backend.supports_soft_tokens
    torch.manual_seed(0)
    soft = torch.randn(K, backend.hidden_size) * 3.0
    capture = _Capture(backend.model)
    try:
        gen = backend.generate(request(family, soft))
    finally:
        capture.close()
    assert capture.seen, 'the language model got no inputs_embeds'
    start = _soft_block_position(capture.seen[0], soft)
    # The block sits where the marker was: after the object list, before "Describe".
    tok = backend.tokenizer
    assert gen.prompt_tokens >= K and start > 0
    assert gen.generated_tokens >= 0 and isinstance(gen.text, str)
    if family in ('paligemma', 'florence2'):
        assert backend.soft_mode == 'hook'
    elif family != 'llm':
        assert backend.soft_mode == 'inputs_embeds'
    # The placeholder id never means anything else in this model.
    assert backend.soft_placeholder_id not in (tok.eos_token_id, tok.bos_token_id)


@pytest.mark.parametrize('family', FAMILIES)
def test_soft_tokens_change_the_model_and_score_batches(family, backends):
    backend = backends(family)
    torch.manual_seed(1)
    a, b = torch.randn(K, backend.hidden_size), torch.randn(K, backend.hidden_size) * 4
    probs = backend.yes_probability([request(family, a), request(family, b)])
    assert len(probs) == 2 and all(0.0 <= p <= 1.0 for p in probs)
    assert probs[0] != probs[1]          # the soft tokens reach the next-token logits
    single = [backend.yes_probability([request(family, s)])[0] for s in (a, b)]
    assert probs == pytest.approx(single, abs=1e-4)


@pytest.mark.parametrize('family', ['llm', 'qwen2_vl'])
def test_soft_token_errors(family, backends):
    backend = backends(family)
    with pytest.raises(BackendError, match=rf'\(K, {backend.hidden_size}\)'):
        backend.generate(request(family, torch.zeros(K, backend.hidden_size + 1)))
    with pytest.raises(BackendError, match='no soft tokens'):
        backend.generate(request(family))              # marker but no soft tokens
    plain = dataclasses.replace(request(family), user='Describe.')
    with pytest.raises(BackendError, match='exactly once'):
        backend.generate(dataclasses.replace(plain,
                                             soft_tokens=torch.zeros(K, backend.hidden_size)))


def test_prompt_only_path_is_unchanged(backends, monkeypatch):
    """No soft tokens: generate() gets input_ids only, as before fusion existed."""
    backend = backends('llm')
    seen = {}
    original = backend.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)
    monkeypatch.setattr(backend.model, 'generate', spy)
    req = MllmRequest(prefix=(ChatMessage('system', 'You describe.'),), user='Describe.',
                      max_new_tokens=4)
    backend.generate(req)
    assert 'inputs_embeds' not in seen and 'input_ids' in seen
    assert backend.soft_placeholder_id not in seen['input_ids'][0].tolist()


def test_kv_reuse_with_soft_tokens_gives_the_same_output(tiny):
    backend = create_backend(config_for(tiny['llm'], 'llm', **{'mllm.max_new_tokens': 10}))
    prefix = (ChatMessage('system', 'You describe what a robot\'s camera sees.'),
              ChatMessage('user', 'Objects: <obj0> car\nDescribe the scene.'),
              ChatMessage('assistant', 'A car is at the left.'))
    torch.manual_seed(2)
    soft = torch.randn(K, backend.hidden_size)
    req = dataclasses.replace(request('llm', soft), prefix=prefix, max_new_tokens=10)
    with_reuse = [backend.generate(req) for _ in range(2)]
    assert with_reuse[1].timings_ms['kv_reused_tokens'] > 20
    backend.config = config_for(tiny['llm'], 'llm', **{'mllm.kv_reuse': False})
    without = backend.generate(req)
    assert without.timings_ms['kv_reused_tokens'] == 0
    assert with_reuse[0].text == with_reuse[1].text == without.text
    backend.close()


class _CiteObj1:
    """Test-only logits processor pushing the model to write '<obj1>' over and over."""

    def __init__(self, tokenizer):
        self.seq = [tokenizer(s, add_special_tokens=False)['input_ids'][0]
                    for s in ('<', 'obj', '1', '>')]
        self.step = 0

    def __call__(self, input_ids, scores):
        scores[:, self.seq[self.step % 4]] += 100.0
        self.step += 1
        return scores


@pytest.mark.parametrize('constrained', [False, True])
def test_constrained_decoding_with_soft_tokens(tiny, monkeypatch, constrained):
    from transformers import LogitsProcessorList
    backend = create_backend(config_for(tiny['llm'], 'llm',
                                        **{'mllm.constrained_decoding': constrained}))
    original = backend.model.generate

    def biased(**kwargs):
        assert 'inputs_embeds' in kwargs
        extra = kwargs.get('logits_processor') or LogitsProcessorList()
        kwargs['logits_processor'] = LogitsProcessorList([_CiteObj1(backend.tokenizer), *extra])
        return original(**kwargs)
    monkeypatch.setattr(backend.model, 'generate', biased)
    soft = torch.randn(K, backend.hidden_size)
    req = dataclasses.replace(request('llm', soft), max_new_tokens=8,
                              allowed_indices=frozenset({0}) if constrained else None)
    text = backend.generate(req).text
    assert ('<obj1>' in text) is not constrained, text
    backend.close()


# ------------------------------------------------------------------ SceneReasoner

def _adapter(folder: Path, hidden: int, **fields) -> Path:
    torch.manual_seed(0)
    config = AdapterConfig(llm_hidden=hidden, num_queries=K, hint_tokens=0, dim=32, heads=2,
                           prompt_template='scene_fusion_v1', **fields)
    return save_adapter(SharedQueryFusion(config), folder)


@pytest.mark.parametrize('family', ['llm', 'qwen2_vl', 'idefics3'])
def test_scene_reasoner_uses_the_adapter_and_says_so(family, tiny, backends, tmp_path):
    backend = backends(family)
    vision = {} if family == 'llm' else {'vision_dim': backend.hidden_size}
    if family == 'qwen2_vl':
        vision['roi_source'] = 'vision'   # roi_align on Qwen2-VL's merged-patch grid
    path = _adapter(tmp_path / 'adapter', backend.hidden_size, **vision)
    config = dataclasses.replace(backend.config, fusion=dataclasses.replace(
        backend.config.fusion, adapter_path=str(path)))
    reasoner = SceneReasoner(config, backend)
    assert reasoner.prompts.template.version == 'scene_fusion_v1'  # the adapter's template
    frame = Frame(image(3, 48, 80), 1, 'cam')
    capture = _Capture(backend.model)
    try:
        desc = reasoner.describe(frame, detections())
    finally:
        capture.close()
    assert desc.fusion_adapter == str(path) and desc.timings_ms['fusion'] > 0
    soft = reasoner.soft_tokens(frame, detections())
    assert soft.shape == (K, backend.hidden_size)
    _soft_block_position(capture.seen[0], soft)       # the adapter's tokens reached the LLM
    answer = reasoner.answer(frame, detections(), 'What colour is <obj1>?')
    assert f'fusion adapter {path}' in answer.mllm_model
    probs = reasoner.rescore(frame, detections())
    assert set(probs) == {0, 1} and all(0 < p < 1 for p in probs.values())
    # No frame to look at: prompt-only, and the output says so.
    assert reasoner.describe(None, detections()).fusion_adapter == ''


def test_no_adapter_means_prompt_only(backends):
    backend = backends('llm')
    assert backend.config.fusion.adapter_path == ''
    reasoner = SceneReasoner(backend.config, backend)
    assert reasoner.fusion is None and reasoner.soft_tokens(Frame(image(), 0, 'c'), detections()) \
        is None
    desc = reasoner.describe(Frame(image(), 0, 'c'), detections())
    assert desc.fusion_adapter == '' and 'fusion' not in desc.timings_ms
    request = reasoner.prompts.describe(detections())
    assert request.soft_tokens is None and SOFT_TOKENS_MARKER not in request.user
    # Descriptions are planned (core.reasoning.grounding_plan): the plain request, worded by the
    # backend, gives exactly the description.
    from mr_mllm_ros.core.reasoning import grounding_plan as plan
    chosen = request.extra['object_indices']
    raw, _ = plan.word_plan(backend, request,
                            plan.plan_mentions(detections(), chosen, reasoner.vocabulary),
                            detections(), reasoner.vocabulary,
                            backend.config.mllm.connector_max_tokens)
    assert desc.grounded_text.raw_text == reasoner._finish(raw, chosen, detections()).raw_text


def test_adapter_for_another_model_is_refused(backends, tmp_path):
    backend = backends('llm')
    path = _adapter(tmp_path / 'wide', 576)
    config = dataclasses.replace(backend.config, fusion=dataclasses.replace(
        backend.config.fusion, adapter_path=str(path)))
    with pytest.raises(ModelLoadError) as e:
        SceneReasoner(config, backend)
    assert f'({K}, 576)' in str(e.value) and f'({K}, {backend.hidden_size})' in str(e.value)
    missing = dataclasses.replace(config, fusion=dataclasses.replace(
        config.fusion, adapter_path=str(tmp_path / 'none')))
    with pytest.raises(ModelLoadError, match='adapter.json'):
        SceneReasoner(missing, backend)


def test_backend_without_soft_tokens_is_refused(backends, tmp_path):
    backend = backends('llm')

    class Server:           # like the OpenAI-compatible backend: text in, text out
        name = 'server (openai)'
        sees_images = False
        count_tokens = staticmethod(len)
    path = _adapter(tmp_path / 'a', backend.hidden_size)
    config = dataclasses.replace(backend.config, fusion=dataclasses.replace(
        backend.config.fusion, adapter_path=str(path)))
    with pytest.raises(ModelLoadError, match='cannot take soft tokens'):
        SceneReasoner(config, Server())
