"""Fuzzing the input surfaces that take outside data: config files, VQA questions (and
the prompts built from them). Image decoding and the grounding parser are fuzzed in
test_image_codecs.py and test_grounding.py. Each either returns a value or raises the project's
own error with a message - never another exception, never a hang."""

import math

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mr_mllm_ros.core import config as cfg
from mr_mllm_ros.core.errors import ConfigError
from mr_mllm_ros.core.reasoning.prompts import PromptBuilder, load_template, sanitize_user_text
from mr_mllm_ros.core.reasoning.vqa import validate_question
from mr_mllm_ros.core.types import Box, Detection, DetectionSet

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)
_keys = st.sampled_from([name for name, _, _ in cfg.iter_leaves()] +
                        ['detector', 'mllm', 'nonsense', 'detector.nonsense', 'a.b.c'])


@given(st.dictionaries(_keys, _values, max_size=6))
@settings(max_examples=300, deadline=None)
def test_config_overrides_are_valid_or_config_errors(overrides):
    try:
        c = cfg.load_config(overrides=overrides)
    except ConfigError as e:
        assert str(e)
    else:
        assert isinstance(c.detector.conf, float) and 0.0 <= c.detector.conf <= 1.0


@given(st.text(max_size=400))
@settings(max_examples=200, deadline=None)
def test_config_files_with_arbitrary_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp('cfg') / 'c.yaml'
    path.write_text(text)
    try:
        cfg.load_config(path)
    except ConfigError as e:
        assert str(e)


@given(st.dictionaries(st.text(max_size=8), _values, max_size=5))
@settings(max_examples=200, deadline=None)
def test_config_files_with_arbitrary_yaml_structures(tmp_path_factory, data):
    path = tmp_path_factory.mktemp('cfg') / 'c.yaml'
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': data}}))
    try:
        cfg.load_config(path)
    except ConfigError as e:
        assert str(e)


_ds = DetectionSet((Detection(0, 'person', 0.9, Box(0, 0, 10, 10)),), 100, 100, 1, 'c')
_builder = PromptBuilder(load_template('scene_v1'), cfg.load_config().mllm,
                         lambda t: len(t.split()), False)


@given(st.text(max_size=3000), st.floats(allow_nan=True, allow_infinity=True))
@settings(max_examples=300, deadline=None)
def test_questions_are_refused_with_a_reason_or_become_inert_prompts(question, timeout):
    reason = validate_question(question, timeout, 1000)
    if reason:
        assert isinstance(reason, str) and reason
        return
    assert question.strip() and len(question) <= 1000
    assert math.isfinite(timeout) and timeout > 0
    request = _builder.answer(_ds, question)
    # the question cannot carry markup or chat-template control into the prompt
    clean = sanitize_user_text(question)
    assert '<' not in clean and '>' not in clean
    assert clean in request.user
    assert request.prefix == _builder.prefix('answer')
