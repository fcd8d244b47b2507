"""OpenAiBackend against a real local HTTP server speaking the chat-completions protocol
(test/helpers/openai_stub_server.py): payload, image transport, grounding through SceneReasoner,
credentials, retries, back-off, timeouts and every failure mode. 127.0.0.1 only."""

from __future__ import annotations

import base64
import logging
import math
import time
import traceback
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import numpy as np
import pytest
from helpers.openai_stub_server import (
    StubOpenAiServer,
    drop,
    fail,
    malformed,
    no_choices,
    raw,
    reply,
    sleep,
    trickle,
)

from mr_mllm_ros.core.config import load_config
from mr_mllm_ros.core.errors import BackendError, ConfigError
from mr_mllm_ros.core.image_codecs import decode_compressed
from mr_mllm_ros.core.mllm import create_backend
from mr_mllm_ros.core.mllm.backend import ChatMessage, MllmRequest
from mr_mllm_ros.core.mllm.http_post import retry_after as _retry_after
from mr_mllm_ros.core.mllm.openai_backend import OpenAiBackend
from mr_mllm_ros.core.reasoning.scene import SceneReasoner
from mr_mllm_ros.core.types import Box, Detection, DetectionSet, Frame

pytestmark = pytest.mark.timeout(15)

KEY_ENV = 'MR_MLLM_TEST_OPENAI_KEY'
SECRET = 'sk-test-SECRET-0123456789'
BACKOFF_MAX = 0.5


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    for var in ('http_proxy', 'https_proxy', 'all_proxy', 'HTTP_PROXY', 'HTTPS_PROXY',
                'ALL_PROXY'):  # urllib honours them: 127.0.0.1 must be reached directly
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    with StubOpenAiServer() as s:
        yield s


def make_config(url: str, **overrides):
    values = {'mllm.backend': 'openai', 'mllm.openai_base_url': url,
              'mllm.model': 'stub-vlm', 'mllm.openai_api_key_env': KEY_ENV,
              'mllm.openai_timeout_s': 2.0, 'mllm.openai_retries': 2,
              'mllm.image_max_side': 64, 'mllm.max_new_tokens': 40}
    values.update({f'mllm.{k}': v for k, v in overrides.items()})
    return load_config(overrides=values)


def make_backend(url: str, *, backoff_max_s: float = BACKOFF_MAX, **overrides):
    return OpenAiBackend(make_config(url, openai_backoff_base_s=0.01,
                                     openai_backoff_max_s=backoff_max_s, **overrides))


def make_request(user: str = 'Describe the scene.', image=None, answer_prefix: str = '',
                 max_new_tokens: int = 16) -> MllmRequest:
    return MllmRequest(prefix=(ChatMessage('system', 'You describe scenes.'),), user=user,
                       image=image, answer_prefix=answer_prefix,
                       max_new_tokens=max_new_tokens)


def scene():
    dets = (Detection(0, 'person', 0.91, Box(100, 50, 300, 460)),
            Detection(16, 'dog', 0.77, Box(350, 300, 600, 470)))
    image = np.full((480, 640, 3), (40, 120, 200), np.uint8)
    return Frame(image, 0, 'cam'), DetectionSet(dets, 640, 480, model_name='stub-det')


def decode_data_url(url: str) -> np.ndarray:
    head, b64 = url.split(',', 1)
    assert head == 'data:image/jpeg;base64'
    return decode_compressed('jpeg', np.frombuffer(base64.b64decode(b64), np.uint8))


# ------------------------------------------------------------------ happy paths

def test_create_backend_name_and_token_estimate(server):
    backend = create_backend(make_config(server.url))
    assert isinstance(backend, OpenAiBackend)
    assert backend.name == f'stub-vlm (openai @ 127.0.0.1:{server.port})'
    assert backend.sees_images is True
    assert backend.count_tokens('') == 0
    assert backend.count_tokens('abcd') == 1
    assert backend.count_tokens('abcde') == 2
    backend.close()
    assert server.requests == []  # construction does not touch the server


def test_text_request_payload(server):
    backend = make_backend(server.url)
    server.push(reply('A quiet street.'))
    gen = backend.generate(make_request(max_new_tokens=12))
    assert gen.text == 'A quiet street.'
    (req,) = server.requests
    assert req.path == '/v1/chat/completions'
    assert req.headers['content-type'] == 'application/json'
    assert 'authorization' not in req.headers  # key variable unset: no header
    body = req.json
    assert body['model'] == 'stub-vlm'
    assert body['max_tokens'] == 12
    assert body['temperature'] == 0.0
    assert body['stream'] is False
    assert [m['role'] for m in body['messages']] == ['system', 'user']
    assert body['messages'][0]['content'] == 'You describe scenes.'
    assert body['messages'][1]['content'] == 'Describe the scene.'  # plain string, no image
    assert 'continue_final_message' not in body
    assert gen.prompt_tokens > 0 and gen.generated_tokens > 0  # from the server's usage
    assert gen.timings_ms['attempts'] == 1.0
    assert backend.consecutive_failures == 0 and backend.last_error == ''
    assert backend.last_latency_s is not None and backend.last_latency_s < 2.0


@pytest.mark.parametrize('max_side, expected', [(64, (38, 64)), (0, (120, 200)),
                                                (500, (120, 200))])
def test_image_sent_as_jpeg_data_url(server, max_side, expected):
    backend = make_backend(server.url, image_max_side=max_side)
    image = np.zeros((120, 200, 3), np.uint8)
    image[..., 0] = 200  # red (RGB): catches a channel swap
    image[..., 2] = 30
    server.push(reply('ok'))
    backend.generate(make_request(image=image))
    content = server.requests[0].user_content
    assert [p['type'] for p in content] == ['image_url', 'text']
    assert content[1]['text'] == 'Describe the scene.'
    decoded = decode_data_url(content[0]['image_url']['url'])
    assert decoded.shape == (*expected, 3)
    r, g, b = decoded.reshape(-1, 3).mean(axis=0)
    assert abs(r - 200) < 8 and g < 8 and abs(b - 30) < 8


def test_answer_prefix_prepended_unless_present(server):
    backend = make_backend(server.url)
    server.push(reply('A man</ground><objects><obj0></objects> walks.'),
                reply('  <ground>A man</ground><objects><obj0></objects> walks.'),
                reply('A man walks.'))
    texts = [backend.generate(make_request(answer_prefix='<ground>')).text for _ in range(3)]
    assert texts[0] == '<ground>A man</ground><objects><obj0></objects> walks.'
    assert texts[1] == '<ground>A man</ground><objects><obj0></objects> walks.'
    assert texts[2] == '<ground>A man walks.'  # protocol: text starts with the prefix
    for req in server.requests:  # not sent by default (not portable)
        assert req.messages[-1]['role'] == 'user'
        assert 'continue_final_message' not in req.json


def test_answer_prefix_as_continued_assistant_message(server):
    backend = OpenAiBackend(make_config(server.url), continue_final_message=True)
    server.push(reply('A man</ground><objects><obj0></objects> walks.'))
    gen = backend.generate(make_request(answer_prefix='<ground>'))
    assert gen.text == '<ground>A man</ground><objects><obj0></objects> walks.'
    body = server.requests[0].json
    assert body['messages'][-1] == {'role': 'assistant', 'content': '<ground>'}
    assert body['continue_final_message'] is True
    assert body['add_generation_prompt'] is False


def test_scene_reasoner_grounded_answer(server):
    config = make_config(server.url)
    reasoner = SceneReasoner(config, make_backend(server.url))
    server.push(reply('<ground>A man</ground><objects><obj0></objects> walks '
                      '<ground>a dog</ground><objects><obj1></objects>.'))
    frame, dets = scene()
    answer = reasoner.answer(frame, dets, 'What is happening?')
    g = answer.grounded_text
    assert g.grounded, g.problems
    assert g.text == 'A man walks a dog.'
    assert [(p.text, p.indices) for p in g.phrases] == [('A man', (0,)), ('a dog', (1,))]
    assert answer.mllm_model == reasoner.model_name
    req = server.requests[0]
    assert req.json['max_tokens'] == config.mllm.max_new_tokens
    assert 'You see the camera image' in req.messages[0]['content']  # sees_images prompt
    assert 'person (1):\n<obj0>' in req.user_text and 'dog (1):\n<obj1>' in req.user_text
    image_part = req.user_content[0]
    assert decode_data_url(image_part['image_url']['url']).shape == (48, 64, 3)


def test_scene_reasoner_drops_reference_to_missing_object(server):
    reasoner = SceneReasoner(make_config(server.url), make_backend(server.url))
    server.push(reply('<ground>A man</ground><objects><obj7></objects> stands near '
                      '<ground>a dog</ground><objects><obj1></objects>.'))
    frame, dets = scene()
    g = reasoner.answer(frame, dets, 'What is happening?').grounded_text
    assert g.grounded is False
    assert 7 not in g.cited_indices()
    assert [(p.text, p.indices) for p in g.phrases] == [('a dog', (1,))]
    assert any('<obj7>' in p for p in g.problems)
    assert g.text == 'A man stands near a dog.'


# ------------------------------------------------------------------ credentials

def test_api_key_header_and_never_in_errors_or_logs(server, monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    backend = make_backend(server.url)
    echo = lambda req: fail(  # noqa: E731 - a server that echoes the credential back
        401, body=f'invalid credential {req.headers.get("authorization")}')[0]
    echo500 = lambda req: fail(500, body=f'oops {req.headers.get("authorization")}')[0]  # noqa
    server.push(reply('ok'), echo500, reply('ok again'), echo)
    caplog.set_level(logging.DEBUG)
    assert backend.generate(make_request()).text == 'ok'
    assert server.requests[0].headers['authorization'] == f'Bearer {SECRET}'
    assert backend.generate(make_request()).text == 'ok again'  # after a logged retry
    with pytest.raises(BackendError) as info:
        backend.generate(make_request())
    message = str(info.value)
    assert 'HTTP 401' in message and '(not retried)' in message
    assert f'127.0.0.1:{server.port}/v1/chat/completions' in message
    assert 'invalid credential Bearer ***' in message
    formatted = ''.join(traceback.format_exception(info.value))
    assert info.value.__cause__ is None and info.value.__context__ is None
    for text in (message, repr(info.value), backend.last_error, caplog.text, formatted):
        assert SECRET not in text
    assert 'oops Bearer ***' in caplog.text  # the retry was logged, scrubbed


def test_base_url_must_be_http_without_credentials():
    with pytest.raises(ConfigError, match='http'):
        OpenAiBackend(make_config('ftp://127.0.0.1:1/v1'))
    with pytest.raises(ConfigError) as info:
        OpenAiBackend(make_config('http://user:hunter2@127.0.0.1:1/v1'))
    assert 'hunter2' not in str(info.value)


# ------------------------------------------------------------------ retries

def test_retries_500_then_success(server):
    backend = make_backend(server.url, openai_retries=2)
    server.push(fail(500, times=2), reply('finally'))
    gen = backend.generate(make_request())
    assert gen.text == 'finally'
    assert gen.timings_ms['attempts'] == 3.0
    assert len(server.requests) == 3
    assert backend.consecutive_failures == 0


def test_500_exhausts_retries(server):
    backend = make_backend(server.url, openai_retries=2)
    server.push(fail(500, times=3), reply('never'))
    with pytest.raises(BackendError) as info:
        backend.generate(make_request())
    message = str(info.value)
    assert f'http://127.0.0.1:{server.port}/v1/chat/completions' in message
    assert 'HTTP 500' in message and 'stub error 500' in message
    assert 'after 3 attempts' in message
    assert info.value.status == 500
    assert len(server.requests) == 3
    assert backend.consecutive_failures == 1 and backend.last_error == message
    assert backend.generate(make_request()).text == 'never'  # recovers
    assert backend.consecutive_failures == 0 and backend.last_error == ''


def test_retry_after_is_honoured(server):
    backend = make_backend(server.url, backoff_max_s=5.0)
    server.push(fail(429, headers={'Retry-After': '1'}), reply('ok'))
    t0 = time.monotonic()
    assert backend.generate(make_request()).text == 'ok'
    elapsed = time.monotonic() - t0
    assert 0.95 <= elapsed < 3.0


def test_retry_after_is_capped(server):
    backend = make_backend(server.url, backoff_max_s=0.3)
    server.push(fail(503, headers={'Retry-After': '120'}), reply('ok'))
    t0 = time.monotonic()
    assert backend.generate(make_request()).text == 'ok'
    assert time.monotonic() - t0 < 2.0
    assert len(server.requests) == 2


def test_retry_after_formats():
    assert _retry_after({'Retry-After': '2'}) == 2.0
    assert _retry_after({'Retry-After': '0.5'}) == 0.5
    assert _retry_after({}) is None
    assert _retry_after({'Retry-After': 'soon'}) is None
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert 25 < _retry_after({'Retry-After': format_datetime(when, usegmt=True)}) <= 30
    past = datetime.now(timezone.utc) - timedelta(seconds=30)
    assert _retry_after({'Retry-After': format_datetime(past, usegmt=True)}) == 0.0


def test_no_retry_on_400(server):
    backend = make_backend(server.url, openai_retries=3)
    server.push(fail(400, body={'error': {'message': 'max_tokens is too large'}}),
                reply('second call'))
    with pytest.raises(BackendError) as info:
        backend.generate(make_request())
    message = str(info.value)
    assert 'HTTP 400' in message and 'max_tokens is too large' in message
    assert '(not retried)' in message
    assert len(server.requests) == 1
    assert backend.generate(make_request()).text == 'second call'


@pytest.mark.timeout(10)
def test_timeout_is_bounded(server):
    timeout, retries = 0.3, 1
    backend = make_backend(server.url, openai_timeout_s=timeout, openai_retries=retries)
    server.push(sleep(5), sleep(5), reply('too late for this call'))
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r'timed out after 0\.3 s') as info:
        backend.generate(make_request())
    elapsed = time.monotonic() - t0
    assert (retries + 1) * timeout * 0.9 <= elapsed < (retries + 1) * timeout \
        + retries * BACKOFF_MAX + 0.5
    assert 'after 2 attempts' in str(info.value)
    assert len(server.requests) == 2
    assert backend.consecutive_failures == 1


@pytest.mark.timeout(10)
def test_trickling_reply_hits_the_hard_deadline(server):
    # One byte every 0.05 s never trips a per-recv timeout; the per-attempt deadline does.
    backend = make_backend(server.url, openai_timeout_s=0.4, openai_retries=0)
    server.push(trickle('a long reply ' * 10, 0.05))
    t0 = time.monotonic()
    with pytest.raises(BackendError, match=r'timed out after 0\.4 s'):
        backend.generate(make_request())
    assert time.monotonic() - t0 < 0.4 + 0.5


@pytest.mark.parametrize('action, detail', [
    (malformed(), 'not JSON'),
    (no_choices(), 'no choices'),
    (raw('{"choices": [{"index": 0}]}'), 'has no message'),
    (raw('{"choices": [{"message": {"role": "assistant", "content": null}, '
         '"finish_reason": "length"}]}'), 'no text content'),
    (raw('[1, 2]'), 'expected a JSON object'),
])
def test_malformed_responses(server, action, detail):
    backend = make_backend(server.url)
    server.push(action)
    with pytest.raises(BackendError) as info:
        backend.generate(make_request())
    message = str(info.value)
    assert 'malformed response' in message and detail in message
    assert f'127.0.0.1:{server.port}' in message
    assert len(server.requests) == 1  # not retried
    assert backend.consecutive_failures == 1


def test_content_as_list_of_parts(server):
    backend = make_backend(server.url)
    server.push(raw('{"choices": [{"message": {"role": "assistant", "content": '
                    '[{"type": "text", "text": "two "}, {"type": "text", "text": "parts"}]}}]}'))
    gen = backend.generate(make_request())
    assert gen.text == 'two parts'
    assert gen.prompt_tokens > 0 and gen.generated_tokens == 3  # estimates (no usage)


def test_dropped_connection_is_retried(server):
    backend = make_backend(server.url, openai_retries=1)
    server.push(drop(), reply('reconnected'))
    assert backend.generate(make_request()).text == 'reconnected'
    server.push(drop(), drop())
    with pytest.raises(BackendError, match='connection failed') as info:
        backend.generate(make_request())
    assert 'after 2 attempts' in str(info.value)


def test_connection_refused():
    with StubOpenAiServer() as s:
        url, port = s.url, s.port
    backend = make_backend(url, openai_retries=1)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as info:
        backend.generate(make_request())
    assert time.monotonic() - t0 < 3.0
    message = str(info.value)
    assert 'connection failed' in message and 'ConnectionRefusedError' in message
    assert f'http://127.0.0.1:{port}/v1/chat/completions' in message


# ------------------------------------------------------------------ yes / no

def test_yes_probability_from_logprobs(server):
    backend = make_backend(server.url)

    def answer(req):  # concurrent requests: reply by content, not by order
        if 'person' in req.user_text:
            return reply('Yes', logprobs=[('Yes', math.log(0.7)), ('No', math.log(0.15)),
                                          (' yes', math.log(0.1)), ('Maybe', math.log(0.05))])
        return reply('No', logprobs=[('No', math.log(0.6)), ('Yes', math.log(0.2)),
                                     ('\u0120no', math.log(0.2))])
    server.default = answer
    probs = backend.yes_probability([make_request('Is <obj0> a person?'),
                                     make_request('Is <obj1> a cat?')])
    assert probs == pytest.approx([0.8 / 0.95, 0.2 / 1.0])
    for req in server.requests:
        assert req.json['max_tokens'] == 1
        assert req.json['logprobs'] is True and req.json['top_logprobs'] == 5
        assert req.json['temperature'] == 0.0
    assert backend.yes_probability([]) == []


def test_yes_probability_text_fallback(server):
    backend = make_backend(server.url)
    server.push(reply('Yes.'), reply(' no'), reply('maybe'))
    assert [backend.yes_probability([make_request(f'q{i}')])[0] for i in range(3)] \
        == [1.0, 0.0, 0.5]


def test_yes_probability_when_server_rejects_logprobs(server):
    backend = make_backend(server.url)
    server.push(fail(400, body={'error': {'message': 'logprobs not supported'}}),
                reply('yes'), reply('no'))
    assert backend.yes_probability([make_request('q')]) == [1.0]
    assert backend.yes_probability([make_request('q')]) == [0.0]
    first, second, third = server.requests
    assert first.json['logprobs'] is True
    assert 'logprobs' not in second.json and 'logprobs' not in third.json


def test_yes_probability_propagates_failures(server):
    backend = make_backend(server.url, openai_retries=0)
    server.push(fail(500))
    with pytest.raises(BackendError, match='HTTP 500'):
        backend.yes_probability([make_request('q')])
