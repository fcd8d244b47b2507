"""Grounding grammar: the parser (round trips, graceful degradation) and constrained
decoding (a reference to a missing object can never be generated)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mr_mllm_ros.core.reasoning.grounding import (
    ObjectReferenceLogitsProcessor,
    ReferenceAutomaton,
    parse_grounded,
    render_grounded,
)
from mr_mllm_ros.core.types import GroundedPhrase

FIXTURES = Path(__file__).resolve().parent / 'fixtures'
REF_RE = r'<obj(\d+)>'


@pytest.fixture(scope='module', params=['tiny', 'smollm2'])
def tokenizer(request, default_config):
    from transformers import AutoTokenizer
    path = FIXTURES / 'tiny_tokenizer' if request.param == 'tiny' \
        else default_config.resolve_model_path(default_config.mllm.model)
    return AutoTokenizer.from_pretrained(str(path))


# ------------------------------------------------------------------------ parser

def test_chatrex_grammar_links_phrases_to_indices():
    raw = ('<ground>A man</ground><objects><obj0></objects> holds '
           '<ground>two ties</ground><objects><obj1><obj2></objects>.')
    g = parse_grounded(raw, allowed=range(3))
    assert g.text == 'A man holds two ties.' and g.grounded and not g.problems
    assert [(p.text, p.indices) for p in g.phrases] == [('A man', (0,)), ('two ties', (1, 2))]
    assert all(g.text[p.start:p.end] == p.text for p in g.phrases)


def test_bare_references_use_class_names():
    g = parse_grounded('The <obj1> stands beside the <obj0>.', range(2), ['dog', 'bike'])
    assert g.text == 'The bike stands beside the dog.' and g.grounded
    assert [(p.text, p.indices) for p in g.phrases] == [('bike', (1,)), ('dog', (0,))]


@pytest.mark.parametrize('raw, problem', [
    ('<ground>A man</ground> walks', 'no <objects>'),
    ('<ground>A man walks', 'unclosed <ground>'),
    ('A man</ground> walks', 'stray </ground>'),
    ('<ground>A</ground><objects><obj5></objects>', 'missing object <obj5>'),
    ('<ground>A</ground><objects><obj0>', 'unclosed <objects>'),
    ('<objects><obj0></objects> hi', 'without a preceding'),
    ('<ground>A</ground><objects>junk</objects>', 'inside <objects>'),
])
def test_malformed_output_degrades_to_flagged_plain_text(raw, problem):
    g = parse_grounded(raw, allowed=range(2))
    assert not g.grounded
    assert any(problem in p for p in g.problems), g.problems
    assert '<ground>' not in g.text and '<obj' not in g.text
    assert all(i < 2 for p in g.phrases for i in p.indices)


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_parser_never_raises_and_never_cites_missing_objects(raw):
    g = parse_grounded(raw, allowed={0, 2}, class_names=['a', 'b', 'c'])
    assert all(i in (0, 2) for p in g.phrases for i in p.indices)
    assert all(0 <= p.start <= p.end <= len(g.text) for p in g.phrases)


_plain = st.text(st.characters(blacklist_characters='<>', blacklist_categories=('Cs',)),
                 max_size=15)
_phrase = st.tuples(st.text(st.characters(blacklist_characters='<>',
                                          blacklist_categories=('Cs',)), min_size=1,
                            max_size=12),
                    st.lists(st.integers(0, 50), min_size=1, max_size=4))


@given(st.lists(st.one_of(_plain, _phrase), max_size=8))
@settings(max_examples=300, deadline=None)
def test_parser_round_trips_every_well_formed_output(segments):
    text, phrases = '', []
    for seg in segments:
        if isinstance(seg, str):
            text += seg
        else:
            words, indices = seg
            phrases.append(GroundedPhrase(words, len(text), len(text) + len(words),
                                          tuple(indices)))
            text += words
    assume(text == text.strip())
    raw = render_grounded(text, phrases)
    g = parse_grounded(raw, allowed=range(51))
    assert g.grounded and g.text == text and list(g.phrases) == phrases
    assert render_grounded(g.text, g.phrases) == raw


# ------------------------------------------------------------ constrained decoding

@pytest.mark.parametrize('text, ok', [
    ('<obj0> and <obj11>', True), ('<obj12>', False), ('<obj01>', False),
    ('<obj1x>', False), ('<objects><obj3></objects>', True), ('<o<obj5>', True),
    ('<obj', True), ('<obj1', True), ('<obj 3>', True),  # '<obj 3>' is text, not a ref
])
def test_automaton(text, ok):
    assert (ReferenceAutomaton(range(12)).feed('', text) is not None) == ok


def _decode(tokenizer, allowed, seed, steps, constrained, prefix='<ground>a</ground>'):
    """Greedy decoding by a random "model" that tries to write `x<objK>` for random K in
    0..60 (many of them missing): the token that continues its intended text gets a
    large bonus on top of random logits. When the processor blocks it, the model falls
    back to noise and re-synchronises at its next reference."""
    import random

    from mr_mllm_ros.core.reasoning.grounding import token_table
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    table = token_table(tokenizer)
    by_first: dict[str, list[int]] = {}
    for i, s in enumerate(table.strings):
        if s:
            by_first.setdefault(s[0], []).append(i)
    intended = ''.join(f'x<obj{rng.randint(0, 60)}>' for _ in range(steps))
    pos = 0
    prompt = tokenizer(prefix, add_special_tokens=False)['input_ids']
    ids = torch.tensor([prompt])
    proc = ObjectReferenceLogitsProcessor(tokenizer, allowed, len(prompt), '') \
        if constrained else None
    for _ in range(steps):
        scores = torch.randn(1, table.size + 7, generator=gen)  # + padded vocab rows
        rest = intended[pos:]
        for i in by_first.get(rest[:1], ()):
            if rest.startswith(table.strings[i]):
                scores[0, i] += 10 + len(table.strings[i])
        if proc is not None:
            scores = proc(ids, scores)
        nxt = int(scores[0, :table.size].argmax())
        s = table.strings[nxt]
        if s and rest.startswith(s):
            pos += len(s)
        else:
            found = intended.find('x<obj', pos + 1)
            pos = found if found >= 0 else len(intended) - 1
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return tokenizer.decode(ids[0, len(prompt):].tolist())


def _refs(text):
    import re
    return [int(m) for m in re.findall(REF_RE, text)]


@given(n=st.integers(0, 50), seed=st.integers(0, 2**31 - 1), subset=st.booleans())
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_constrained_decoding_never_cites_a_missing_object(tokenizer, n, seed, subset):
    rng = np.random.default_rng(seed)
    allowed = {i for i in range(n) if rng.random() < 0.5} if subset else set(range(n))
    text = _decode(tokenizer, allowed, seed, steps=40, constrained=True)
    assert all(i in allowed for i in _refs(text)), text
    assert ReferenceAutomaton(allowed).feed('', text) is not None, text


def test_the_property_is_not_vacuous(tokenizer):
    """The same biased random decoding writes many references; without the processor
    some of them point at missing objects, with it none do."""
    allowed = {0, 1, 2}
    free = [_refs(_decode(tokenizer, allowed, s, 60, False)) for s in range(12)]
    held = [_refs(_decode(tokenizer, allowed, s, 60, True)) for s in range(12)]
    assert sum(len(r) for r in held) >= 12, held
    assert any(i not in allowed for r in free for i in r), free
    assert all(i in allowed for r in held for i in r)


def test_no_objects_means_no_reference_at_all(tokenizer):
    for seed in range(5):
        assert _refs(_decode(tokenizer, set(), seed, 50, True)) == []


def test_answer_prefix_inside_a_reference_is_continued_validly(tokenizer):
    # the forced reply text already opened '<obj': the only digit that may follow is a
    # valid index (other characters are allowed: '<objects>' is ordinary markup)
    prompt = tokenizer('<ground>a</ground><objects><obj', add_special_tokens=False)['input_ids']
    proc = ObjectReferenceLogitsProcessor(tokenizer, {3}, len(prompt), '<obj')
    scores = proc(torch.tensor([prompt]), torch.zeros(1, len(tokenizer)))
    allowed_strings = {tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(i)])
                       for i in torch.nonzero(scores[0] > -1e9).flatten().tolist()}
    digits = {s for s in allowed_strings if s[:1].isdigit()}
    assert '3' in digits and all(s.startswith('3') for s in digits), digits
