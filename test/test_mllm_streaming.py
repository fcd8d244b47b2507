"""Streaming and cancel in every MLLM backend (core.mllm.streaming): the reply's text
arrives piece by piece and joins to the reply; a cancel stops generation within one
decoding step (GenerationCancelled), and the backend then answers the next request.

transformers_llm runs the real offline default (SmolLM2-135M); transformers_vlm a tiny
random-weight Idefics3 (plumbing only: its text is noise); openai a local stub server
speaking server-sent events; llama_cpp the SmolLM2 GGUF when llama-cpp-python is
installed (optional)."""

from __future__ import annotations

import importlib.util
import threading
import time

import numpy as np
import pytest
from helpers import make_tiny_models as maker
from helpers.openai_stub_server import StubOpenAiServer, cut_stream, fail, raw, reply

from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.errors import BackendError
from mr_mllm_ros.core.mllm import create_backend
from mr_mllm_ros.core.mllm.backend import ChatMessage, MllmRequest
from mr_mllm_ros.core.mllm.openai_backend import OpenAiBackend
from mr_mllm_ros.core.mllm.streaming import (GenerationCancelled, IncrementalDecoder,
                                              TokenStream)
from mr_mllm_ros.core.mllm.template_backend import TemplateBackend

pytestmark = pytest.mark.timeout(180)
STORY = 'Tell me a long story about a dog who walks along a river every morning.'


def request(stream, user=STORY, max_new_tokens=40, image=None):
    return MllmRequest(prefix=(ChatMessage('system', 'You are a helpful assistant.'),),
                       user=user, max_new_tokens=max_new_tokens, stream=stream, image=image)


class Recorder:
    """on_text that records the pieces and cancels the stream after `cancel_after`."""

    def __init__(self, cancel_after: int | None = None):
        self.pieces: list[str] = []
        self.cancel_after = cancel_after
        self.stream = TokenStream(self.add)
        self.cancelled_at: int | None = None

    def add(self, piece: str) -> None:
        self.pieces.append(piece)
        if self.cancel_after is not None and len(self.pieces) == self.cancel_after:
            self.cancelled_at = len(self.pieces)
            self.stream.cancel()


# ------------------------------------------------------------------- the stream itself

def test_cancel_hooks_run_once_and_muted_copies_share_the_flag():
    calls = []
    s = TokenStream()
    remove = s.on_cancel(lambda: calls.append('a'))
    s.on_cancel(lambda: calls.append('b'))
    remove()
    muted = s.muted()
    assert not muted.cancelled
    muted.cancel()
    s.cancel()
    assert s.cancelled and calls == ['b']
    with pytest.raises(GenerationCancelled):
        s.check()
    late = []
    s.on_cancel(lambda: late.append(1))  # registered after the cancel: runs at once
    assert late == [1]


def test_incremental_decoder_holds_back_a_split_character():
    table = {1: b'caf', 2: b'\xc3', 3: b'\xa9', 4: b' ok'}
    decoder = IncrementalDecoder(lambda ids: b''.join(table[i] for i in ids)
                                 .decode('utf-8', 'replace'))
    assert [decoder.push([i]) for i in (1, 2, 3, 4)] == ['caf', '', '\u00e9', ' ok']


# -------------------------------------------------------------------------- backends

def check_streaming(backend, **kwargs):
    """Pieces join to the reply; a cancel after 3 pieces stops within one more step;
    the next request is answered."""
    rec = Recorder()
    gen = backend.generate(request(rec.stream, **kwargs))
    assert len(rec.pieces) >= 3, rec.pieces
    assert ''.join(rec.pieces) == gen.text
    rec = Recorder(cancel_after=3)
    with pytest.raises(GenerationCancelled):
        backend.generate(request(rec.stream, **kwargs))
    assert len(rec.pieces) <= rec.cancelled_at + 1, rec.pieces
    again = backend.generate(request(None, user='Say hello.', max_new_tokens=5,
                                     image=kwargs.get('image')))
    assert again.generated_tokens > 0
    cancelled = TokenStream()
    cancelled.cancel()
    with pytest.raises(GenerationCancelled):  # cancelled before it started: no call
        backend.generate(request(cancelled, **kwargs))


@pytest.fixture(scope='module')
def smollm2():
    backend = create_backend(load_config(overrides={'mllm.backend': 'transformers_llm'}))
    yield backend
    backend.close()


def test_transformers_llm_streams_and_cancels(smollm2):
    check_streaming(smollm2, max_new_tokens=12)


def test_transformers_llm_cancel_from_another_thread_stops_within_a_step(smollm2):
    times: list[float] = []
    stream = TokenStream(lambda piece: times.append(time.perf_counter()))
    cancel_at = []

    def cancel_when_writing():
        while len(times) < 4:
            time.sleep(0.005)
        cancel_at.append(time.perf_counter())
        stream.cancel()
    t = threading.Thread(target=cancel_when_writing)
    t.start()
    with pytest.raises(GenerationCancelled):
        smollm2.generate(request(stream, max_new_tokens=200))
    t.join()
    after = [x for x in times if x > cancel_at[0]]
    assert len(after) <= 1, f'{len(after)} tokens came after the cancel'


def test_transformers_vlm_streams_and_cancels(tmp_path):
    folder = maker.make_tiny_model('idefics3', tmp_path / 'idefics3')
    backend = create_backend(load_config(overrides={
        'mllm.backend': 'transformers_vlm', 'mllm.model': str(folder),
        'mllm.image_max_side': 64, 'mllm.no_repeat_ngram_size': 0}))
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    try:
        # random weights: force a long reply (no EOS) so there are pieces to cancel
        backend.model.generation_config.eos_token_id = None
        check_streaming(backend, image=image, max_new_tokens=12)
    finally:
        backend.close()


@pytest.fixture
def stub():
    with StubOpenAiServer() as server:
        yield server


def openai_backend(url: str) -> OpenAiBackend:
    config = load_config(overrides={'mllm.backend': 'openai', 'mllm.openai_base_url': url,
                                    'mllm.model': 'stub', 'mllm.openai_timeout_s': 10.0,
                                    'mllm.openai_retries': 1,
                                    'mllm.openai_backoff_base_s': 0.01,
                                    'mllm.openai_backoff_max_s': 0.05})
    return OpenAiBackend(config)


def test_openai_streams_server_sent_events(stub):
    stub.default = reply('A man in a grey coat holds a camera.')
    rec = Recorder()
    gen = openai_backend(stub.url).generate(request(rec.stream))
    assert stub.requests[-1].json['stream'] is True
    assert stub.requests[-1].headers['accept'] == 'text/event-stream'
    assert gen.text == 'A man in a grey coat holds a camera.'
    assert rec.pieces[:2] == ['A ', 'man '] and ''.join(rec.pieces) == gen.text
    plain = openai_backend(stub.url).generate(request(None))
    assert plain.text == gen.text and stub.requests[-1].json['stream'] is False


def test_openai_cancel_hangs_up_at_once(stub):
    stub.default = reply(' '.join(['word'] * 40), token_s=0.5)
    rec = Recorder(cancel_after=2)
    t0 = time.perf_counter()
    with pytest.raises(GenerationCancelled):
        openai_backend(stub.url).generate(request(rec.stream))
    # the second piece came at ~0.5 s; the cancel does not wait for the next (1.0 s)
    assert time.perf_counter() - t0 < 0.9
    assert rec.pieces == ['word ', 'word ']
    stub.default = reply('next one')
    assert openai_backend(stub.url).generate(request(TokenStream())).text == 'next one'


def test_openai_stream_failure_before_text_is_retried_and_after_text_is_not(stub):
    stub.push(fail(503), reply('fine now'))
    rec = Recorder()
    assert openai_backend(stub.url).generate(request(rec.stream)).text == 'fine now'
    assert ''.join(rec.pieces) == 'fine now'  # nothing doubled by the retry
    stub.push(cut_stream('half of an answer that stops', after=3))
    stub.default = reply('a retry would get this')
    n = len(stub.requests)
    rec = Recorder()
    with pytest.raises(BackendError, match='ended before the reply did'):
        openai_backend(stub.url).generate(request(rec.stream))
    assert len(stub.requests) == n + 1 and ''.join(rec.pieces) == 'half of an '


def test_openai_error_event_is_a_backend_error(stub):
    stub.default = raw(b'data: {"error": {"message": "model overloaded"}}\n\n',
                       content_type='text/event-stream')
    with pytest.raises(BackendError, match='model overloaded'):
        openai_backend(stub.url).generate(request(TokenStream()))


def test_template_backend_honours_a_cancel():
    stream = TokenStream()
    assert TemplateBackend().generate(request(stream)).text == ''
    stream.cancel()
    with pytest.raises(GenerationCancelled):
        TemplateBackend().generate(request(stream))


@pytest.mark.skipif(importlib.util.find_spec('llama_cpp') is None,
                    reason='llama-cpp-python is not installed (optional: pip install '
                           'llama-cpp-python==0.3.36)')
def test_llama_cpp_streams_and_cancels():
    backend = create_backend(load_config(overrides={'mllm.backend': 'llama_cpp'}))
    try:
        check_streaming(backend)
    finally:
        backend.close()
