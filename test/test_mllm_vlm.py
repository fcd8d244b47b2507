"""Tests of the transformers VLM backend (core.mllm.transformers_vlm) with tiny models.

PLUMBING ONLY: the models are random-weight builds of SmolVLM/Idefics3, Qwen2-VL,
Qwen2.5-VL and LLaVA (test/helpers/make_tiny_models.py, a few hundred thousand
parameters, the committed tiny tokenizer), built once per session into a tmp folder and
loaded from that path exactly like real weights. What they verify: loading through
AutoProcessor / AutoModelForImageTextToText, chat templating, image insertion and
image-token expansion, tensor shapes, left-padded batching, the constrained-decoding
hook-up and parsing of the reply. They say nothing about description quality: the
replies are random text.
"""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('torch')
pytest.importorskip('transformers')

from mr_mllm_ros.core.config import load_config  # noqa: E402
from mr_mllm_ros.core.errors import BackendError, ModelLoadError  # noqa: E402
from mr_mllm_ros.core.mllm import create_backend  # noqa: E402
from mr_mllm_ros.core.mllm import transformers_vlm as tvlm  # noqa: E402
from mr_mllm_ros.core.mllm.backend import ChatMessage, MllmRequest  # noqa: E402
from mr_mllm_ros.core.reasoning.scene import SceneReasoner  # noqa: E402
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / 'fixtures'
FAMILIES = ('idefics3', 'qwen2_vl', 'qwen2_5_vl', 'llava')
# family -> (placeholder the chat template writes, image token the processor repeats)
PLACEHOLDERS = {
    'idefics3': ('<image>', '<image>'),
    'qwen2_vl': ('<|vision_start|><|image_pad|><|vision_end|>', '<|image_pad|>'),
    'qwen2_5_vl': ('<|vision_start|><|image_pad|><|vision_end|>', '<|image_pad|>'),
    'llava': ('<image>', '<image>'),
}
# Image tokens for a 64x64 image: Idefics3 2x2 tiles of 32 px + global image, 4 tokens
# each; Qwen2-VL 56x56 -> 4x4 patches of 14 px merged 2x2; LLaVA 32 px / 8 px patches.
IMAGE_TOKENS_64 = {'idefics3': 20, 'qwen2_vl': 4, 'qwen2_5_vl': 4, 'llava': 16}
REF_RE = re.compile(r'<obj(\d+)>')


from helpers import make_tiny_models as maker  # noqa: E402


@pytest.fixture(scope='session')
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Every tiny family (+ the text LLM) saved once per session."""
    root = tmp_path_factory.mktemp('tiny_models')
    return maker.make_all(root, FAMILIES + ('llm',))


def vlm_config(path: Path, **overrides):
    values = {'mllm.backend': 'transformers_vlm', 'mllm.model': str(path),
              'mllm.device': 'cpu', 'mllm.dtype': 'auto', 'mllm.max_new_tokens': 12,
              'mllm.image_max_side': 64, 'mllm.max_objects': 2}
    values.update({f'mllm.{k}': v for k, v in overrides.items()})
    return load_config(overrides=values)


@pytest.fixture(scope='session')
def backends(tiny_models):
    loaded = {}

    def get(family: str):
        if family not in loaded:
            loaded[family] = create_backend(vlm_config(tiny_models[family]))
        return loaded[family]
    yield get
    for b in loaded.values():
        b.close()


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


def image(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def detections(w: int = 128, h: int = 96) -> DetectionSet:
    """3 detections; with mllm.max_objects 2 the prompt lists <obj0> and <obj2> only, so
    <obj1> exists but may not be cited."""
    return DetectionSet((
        Detection(0, 'person', 0.91, Box(5, 10, 60, 90)),
        Detection(9, 'traffic light', 0.30, Box(70, 5, 80, 30)),
        Detection(16, 'dog', 0.82, Box(64, 50, 120, 94)),
    ), image_width=w, image_height=h, model_name='test')


ALLOWED = frozenset({0, 2})


def cited(text: str) -> list[int]:
    return [int(n) for n in REF_RE.findall(text)]


# ------------------------------------------------------------------ end to end

def test_describe_end_to_end(family, backends):
    backend = backends(family)
    assert backend.sees_images is True
    assert family in backend.name and 'transformers_vlm' in backend.name
    reasoner = SceneReasoner(backend.config, backend)
    frame = Frame(image(), stamp_ns=1, frame_id='cam')
    ds = detections()
    desc = reasoner.describe(frame, ds)
    raw = desc.grounded_text.raw_text
    assert raw.startswith('<ground>')  # the describe task's answer prefix
    assert 0 < desc.generated_tokens <= backend.config.mllm.max_new_tokens
    assert desc.prompt_tokens > 0
    assert set(cited(raw)) <= ALLOWED
    assert desc.grounded_text.cited_indices() <= ALLOWED
    assert desc.mllm_model == backend.name
    assert desc.timings_ms['prompt'] > 0 and desc.timings_ms['generate'] > 0

    answer = reasoner.answer(frame, ds, 'Where is the <obj1> dog?')
    assert set(cited(answer.grounded_text.raw_text)) <= ALLOWED


def test_prompt_inserts_image_before_text(family, backends):
    backend = backends(family)
    placeholder, image_token = PLACEHOLDERS[family]
    req = MllmRequest(prefix=(ChatMessage('system', 'You describe.'),), user='Objects: none',
                      image=image(64, 64), answer_prefix='<ground>', max_new_tokens=8)
    text = backend.prompt_text(req)
    assert text.endswith('<ground>')
    assert text.count(placeholder) == 1
    assert text.index(placeholder) < text.index('Objects: none')
    assert text.index('You describe.') < text.index(placeholder)
    inputs = backend._inputs([req])
    token_id = backend.tokenizer.convert_tokens_to_ids(image_token)
    assert int((inputs['input_ids'] == token_id).sum()) == IMAGE_TOKENS_64[family]

    text_only = MllmRequest(prefix=req.prefix, user=req.user, answer_prefix='<ground>',
                            max_new_tokens=8)
    assert placeholder not in backend.prompt_text(text_only)
    gen = backend.generate(text_only)  # a VLM also answers without an image
    assert gen.text.startswith('<ground>') and gen.generated_tokens > 0
    assert gen.prompt_tokens < backend.generate(req).prompt_tokens


class _ReferenceBias:
    """Test-only logits processor that pushes a random model into writing object
    references: +100 to the token that continues '<obj' N '>' and +110 to the digit '1'
    (the object that exists but is not allowed). Added on top of the backend's own
    processors, so the constraint's -inf still wins."""

    def __init__(self, tokenizer):
        def one(s):
            ids = tokenizer(s, add_special_tokens=False)['input_ids']
            assert len(ids) == 1, (s, ids)
            return ids[0]
        self.tokenizer = tokenizer
        self.lt, self.obj = one('<'), one('obj')
        self.gt = [one('>'), one('><')]
        self.digits = [one(str(d)) for d in range(10)]
        self.start = None

    def __call__(self, input_ids, scores):
        if self.start is None:
            self.start = input_ids.shape[1]
        for b in range(input_ids.shape[0]):
            text = self.tokenizer.decode(input_ids[b, self.start:].tolist())
            tail = re.search(r'<(obj\d*)?$', text)
            if tail is None:
                favoured = [self.lt]
            elif tail.group(0) == '<':
                favoured = [self.obj]
            elif tail.group(0) == '<obj':
                favoured = self.digits
                scores[b, self.digits[1]] += 10.0
            else:
                favoured = self.gt
            scores[b, favoured] += 100.0
        return scores


@pytest.mark.parametrize('constrained', [False, True])
def test_constrained_decoding_with_reference_bias(family, tiny_models, monkeypatch,
                                                  constrained):
    """Non-vacuous constraint test: the biased model cites <obj1> when unconstrained;
    with constrained decoding it still cites objects, but only allowed ones."""
    from transformers import LogitsProcessorList
    backend = create_backend(vlm_config(tiny_models[family],
                                        constrained_decoding=constrained,
                                        max_new_tokens=16))
    original = backend.model.generate

    def biased_generate(*args, **kwargs):
        extra = kwargs.get('logits_processor') or LogitsProcessorList()
        kwargs['logits_processor'] = LogitsProcessorList(
            [_ReferenceBias(backend.tokenizer), *extra])
        return original(*args, **kwargs)
    monkeypatch.setattr(backend.model, 'generate', biased_generate)

    reasoner = SceneReasoner(backend.config, backend)
    # A free answer: descriptions are planned (core.reasoning.grounding_plan) and cite no
    # model index.
    answer = reasoner.answer(Frame(image(), 1, 'cam'), detections(), 'What is there?')
    refs = cited(answer.grounded_text.raw_text)
    assert len(refs) >= 3, answer.grounded_text.raw_text
    if constrained:
        assert set(refs) <= ALLOWED, answer.grounded_text.raw_text
        assert answer.grounded_text.cited_indices() <= ALLOWED
    else:
        assert 1 in refs, answer.grounded_text.raw_text
        assert any('<obj1>' in p for p in answer.grounded_text.problems)
    backend.close()


# ------------------------------------------------------------------ yes/no, tokens

def test_yes_probability_batch(family, backends):
    backend = backends(family)
    reasoner = SceneReasoner(backend.config, backend)
    ds = detections()
    # Different lengths: different object lists, questions and image sizes.
    requests = [
        reasoner.prompts.verify(ds, 0, image(64, 64, 1)),
        reasoner.prompts.verify(ds, 1, image(40, 90, 2)),
        MllmRequest(prefix=(), user='Is there a dog? Answer yes or no. ' * 3,
                    image=image(96, 48, 3), max_new_tokens=1),
    ]
    lengths = {len(backend.prompt_text(r)) for r in requests}
    assert len(lengths) == 3
    probs = backend.yes_probability(requests)
    assert len(probs) == 3
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probs)
    # Left padding must not change the answer: batched == one by one.
    single = [backend.yes_probability([r])[0] for r in requests]
    assert probs == pytest.approx(single, abs=1e-4)
    assert backend.yes_probability([]) == []


def test_count_tokens(family, backends):
    backend = backends(family)
    assert backend.count_tokens('<obj3> person 0.91 [5,10,60,90]') > 0
    assert backend.count_tokens('') == 0


# ------------------------------------------------------------------ images

def test_downscale_function():
    img = image(480, 640)
    small = tvlm.downscale(img, 64)
    assert small.size == (64, 48) and small.mode == 'RGB'
    assert tvlm.downscale(img, 0).size == (640, 480)       # 0 = never
    assert tvlm.downscale(img, 1000).size == (640, 480)    # never upscales
    assert tvlm.downscale(image(10, 500), 50).size == (50, 1)
    assert tvlm.downscale(np.zeros((20, 30), np.uint8), 15).size == (15, 10)  # mono -> RGB
    assert tvlm.downscale(np.zeros((20, 30, 4), np.uint8), 0).mode == 'RGB'
    with pytest.raises(BackendError):
        tvlm.downscale(np.zeros((20, 30, 3), np.float32), 0)


def test_backend_downscales_to_image_max_side(tiny_models, monkeypatch):
    seen = []
    original = tvlm.downscale

    def spy(img, max_side):
        out = original(img, max_side)
        seen.append((max_side, out.size))
        return out
    monkeypatch.setattr(tvlm, 'downscale', spy)
    req = MllmRequest(prefix=(), user='Describe.', image=image(480, 640), max_new_tokens=2)
    tokens = {}
    for max_side in (28, 0):
        backend = create_backend(vlm_config(tiny_models['qwen2_vl'], image_max_side=max_side))
        tokens[max_side] = backend.generate(req).prompt_tokens
        backend.close()
    assert seen == [(28, (28, 21)), (0, (640, 480))]
    # Qwen2-VL's token count follows the image size (capped by its own max_pixels).
    assert tokens[28] < tokens[0]


@pytest.mark.parametrize('max_side, tokens', [(64, 20), (40, 20), (32, 4), (0, 20)])
def test_idefics3_tiling_follows_image_max_side(tiny_models, max_side, tokens):
    """The tiny Idefics3 processor resizes to 64 px then cuts 32 px tiles (2x2 + global =
    20 tokens); image_max_side caps that target at whole tiles (32 -> 1 tile = 4 tokens)."""
    backend = create_backend(vlm_config(tiny_models['idefics3'], image_max_side=max_side))
    req = MllmRequest(prefix=(), user='Describe.', image=image(24, 30),
                      max_new_tokens=1)  # upscaled by it
    inputs = backend._inputs([req])
    assert int((inputs['input_ids'] == backend.model.config.image_token_id).sum()) == tokens
    backend.close()


def test_bad_image_is_a_backend_error(backends):
    backend = backends('llava')
    with pytest.raises(BackendError):
        backend.generate(MllmRequest(prefix=(), user='x', image=np.zeros((4, 4, 2), np.uint8),
                                     max_new_tokens=1))


# ------------------------------------------------------------------ load errors, misc

def test_missing_model_folder(tmp_path, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(ModelLoadError, match='not found'):
        create_backend(vlm_config(tmp_path / 'no_such_model'))


def test_unloadable_folders(tmp_path, tiny_models):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ModelLoadError, match='cannot load VLM'):
        create_backend(vlm_config(tmp_path / 'empty'))
    with pytest.raises(ModelLoadError, match='transformers_llm'):
        create_backend(vlm_config(tiny_models['llm']))  # a text-only LLM


def test_concurrent_generate_is_serialised(backends):
    backend = backends('qwen2_vl')
    reqs = [MllmRequest(prefix=(), user=f'Describe scene {i}.', image=image(seed=i),
                        max_new_tokens=6) for i in range(4)]
    expected = [backend.generate(r).text for r in reqs]
    results = [None] * len(reqs)

    def run(i):
        results[i] = backend.generate(reqs[i]).text
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == expected


def test_close(tiny_models):
    backend = create_backend(vlm_config(tiny_models['llava']))
    backend.close()
    with pytest.raises(BackendError, match='closed'):
        backend.generate(MllmRequest(prefix=(), user='x', max_new_tokens=1))


def test_tokenizer_fixture_is_committed_and_loads():
    folder = FIXTURES / 'tiny_tokenizer'
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total < 300_000
    tok = maker.load_tokenizer(folder)
    for special in ('<image>', '<|image_pad|>', '<fake_token_around_image>', '<global-img>',
                    '<|im_start|>', '<row_6_col_6>'):
        assert tok.convert_tokens_to_ids(special) is not None
        assert len(tok(special, add_special_tokens=False)['input_ids']) == 1
    ids = tok('<ground>a dog</ground><objects><obj12></objects>',
              add_special_tokens=False)['input_ids']
    assert tok.decode(ids) == '<ground>a dog</ground><objects><obj12></objects>'


def _pickled_copy(src: Path, dst: Path, model_cls) -> Path:
    """The same tiny model saved the old way: pytorch_model.bin (a pickle)."""
    import torch
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns('*.safetensors'))
    # transformers 5 always saves safetensors: write the legacy file by hand
    torch.save(model_cls.from_pretrained(str(src)).state_dict(), dst / 'pytorch_model.bin')
    assert not list(dst.glob('*.safetensors')) and list(dst.glob('*.bin'))
    return dst


@pytest.mark.parametrize('family', ['llm', 'idefics3'])
def test_pickled_weights_are_refused_unless_allowed(family, tiny_models, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    cls = AutoModelForCausalLM if family == 'llm' else AutoModelForImageTextToText
    folder = _pickled_copy(tiny_models[family], tmp_path / family, cls)
    backend = 'transformers_llm' if family == 'llm' else 'transformers_vlm'

    def config(allow: bool):
        return vlm_config(folder, backend=backend, allow_pickle_weights=allow)
    with pytest.raises(ModelLoadError, match='allow_pickle_weights'):
        create_backend(config(False))
    loaded = create_backend(config(True))   # the user's explicit choice
    try:
        assert loaded.count_tokens('a red car') > 0
    finally:
        loaded.close()
