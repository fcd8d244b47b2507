"""Backend for any OpenAI-compatible chat-completions server (vLLM, llama.cpp server,
Ollama, TGI, hosted APIs), standard library only (urllib.request + json).

Request: POST {mllm.openai_base_url}/chat/completions with the request's prefix messages
and one user message. With an image, the user content is a list of parts: the image as a
JPEG data URL (downscaled so its longer side is at most mllm.image_max_side), then the
text; without one it is a plain string (text-only chat templates of some servers reject
part lists).

Answer prefix (`MllmRequest.answer_prefix`, e.g. `<ground>`): chat-completions has no
portable way to force the start of the reply. By default it is not sent; the reply is
returned as `answer_prefix + reply` unless the reply already starts with the prefix (the
backend protocol promises `Generation.text` starts with it). Servers that can continue a
partial assistant message (vLLM: `continue_final_message=true, add_generation_prompt=
false` in the body) get it as a final assistant message when `continue_final_message` is
on (`mllm.openai_continue_final_message`, or the constructor argument); the same prepend
rule then applies to the continuation.

Constrained decoding (`MllmRequest.allowed_indices`) cannot be enforced client-side: the
grounding parser (`parse_grounded` with the allowed indices) drops references to objects
that are not in the prompt and marks the reply `grounded=False`. vLLM's guided decoding
(a regex / grammar in the request body) could enforce it server-side; not implemented.

Streaming (`MllmRequest.stream`): the request asks for `stream: true` and the reply's
pieces (server-sent events, choices[0].delta.content) go to the stream as they arrive; a
cancel shuts the connection down at once (the server stops generating when it notices).

Failure handling: every attempt has a hard deadline of mllm.openai_timeout_s (a watchdog
shuts the socket down when it passes, so a trickling server cannot stretch it); failed
attempts are retried up to mllm.openai_retries times on connection errors, timeouts,
HTTP 408, 429 and 5xx, with exponential back-off and jitter from
mllm.openai_backoff_base_s (Retry-After honoured, both capped at mllm.openai_backoff_max_s);
other 4xx and malformed replies fail at once. A call therefore
takes at most (retries + 1) * timeout + retries * backoff_max_s. Every failure is a
BackendError naming the URL (never credentials), the HTTP status and a short excerpt of
the body. The API key (from the environment variable named by mllm.openai_api_key_env;
unset or empty = no Authorization header, fine for local servers) never appears in logs or
error messages.

    openai_backend    the MllmBackend: requests, retries, health (this module)
    openai_protocol   the chat-completions wire format (endpoint, reply, logprobs)
    http_post         one POST under a hard deadline (the socket watchdog)
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import numpy as np

from ..config import Config
from ..errors import BackendError
from ..image_codecs import encode_compressed
from ..types import Generation
from . import http_post, streaming
from .backend import MllmRequest
from .http_post import AttemptError
from .openai_protocol import (decode_json, endpoint, reply_text, stream_chunk,
                              yes_probability_from_logprobs, yes_probability_from_text)

log = logging.getLogger(__name__)

_JPEG_QUALITY = 90
_YES_NO_WORKERS = 8


class OpenAiBackend:
    """MllmBackend over an OpenAI-compatible chat-completions server.

    Health, for diagnostics: `consecutive_failures` (failed calls since the last success),
    `last_error` (message of the last failure, '' after a success) and `last_latency_s`
    (wall time of the last successful call, retries included; None before the first)."""

    sees_images = True

    def __init__(self, config: Config, *, continue_final_message: bool | None = None):
        cfg = config.mllm
        self.config = config
        self.model = cfg.model
        self.timeout_s = float(cfg.openai_timeout_s)
        self.retries = int(cfg.openai_retries)
        self.backoff_base_s = float(cfg.openai_backoff_base_s)
        self.backoff_max_s = float(cfg.openai_backoff_max_s)
        if continue_final_message is None:
            continue_final_message = cfg.openai_continue_final_message
        self.continue_final_message = continue_final_message
        self._send_logprobs = True  # off once the server rejected them (HTTP 400)
        self._api_key_env = cfg.openai_api_key_env
        self.endpoint, self.display_url, host = endpoint(cfg.openai_base_url)
        self.name = f'{self.model} (openai @ {host})'
        self._opener = http_post.build_opener()
        self._random = random.Random()
        self._lock = threading.Lock()
        self.consecutive_failures = 0
        self.last_error = ''
        self.last_latency_s: float | None = None

    # ------------------------------------------------------------------ protocol
    def generate(self, request: MllmRequest) -> Generation:
        t0 = time.perf_counter()
        image_url = self._image_data_url(request.image)
        t1 = time.perf_counter()
        streaming.check(request.stream)
        extra = {'stream': True} if request.stream is not None else {}
        payload = self._payload(request, image_url, max_tokens=request.max_new_tokens, **extra)
        (data, text), attempts = self._call(payload, request.stream)
        streaming.check(request.stream)  # cancelled as the reply ended: no reply
        prefix = request.answer_prefix
        if prefix:
            if self.continue_final_message:
                if not text.startswith(prefix):
                    text = prefix + text
            elif text.lstrip().startswith(prefix):
                text = text.lstrip()
            else:
                text = prefix + text.lstrip()
        usage = data.get('usage') if isinstance(data.get('usage'), dict) else {}
        prompt_tokens = usage.get('prompt_tokens')
        generated = usage.get('completion_tokens')
        if not isinstance(prompt_tokens, int):
            prompt_tokens = self.count_tokens(
                ''.join(m.content for m in request.messages()))
        if not isinstance(generated, int):
            generated = self.count_tokens(text)
        t2 = time.perf_counter()
        return Generation(text=text, prompt_tokens=prompt_tokens, generated_tokens=generated,
                          timings_ms={'encode': (t1 - t0) * 1e3, 'request': (t2 - t1) * 1e3,
                                      'attempts': float(attempts)})

    def yes_probability(self, requests: Sequence[MllmRequest]) -> list[float]:
        """P(yes) per request: one chat completion each (run concurrently, so a batching
        server sees them together) with max_tokens=1, temperature 0, `logprobs: true,
        top_logprobs: 5`. P(yes) = mass of yes spellings / (mass of yes + no spellings)
        among the top logprobs of the first token (a spelling outside the top 5 counts
        as 0). When the server returns no usable logprobs (or rejects the logprobs
        fields with HTTP 400, after which they are not sent again), the text answer
        decides: 1.0 for yes, 0.0 for no, 0.5 for anything else."""
        requests = list(requests)
        if not requests:
            return []
        if len(requests) == 1:
            return [self._yes_probability_one(requests[0])]
        with ThreadPoolExecutor(max_workers=min(_YES_NO_WORKERS, len(requests)),
                                thread_name_prefix='openai-yes-no') as pool:
            return list(pool.map(self._yes_probability_one, requests))

    def count_tokens(self, text: str) -> int:
        """Estimate: ceil(len(text) / 4) (about 4 characters per token for English BPE
        vocabularies); the server's tokenizer is not available. Used only for prompt
        budgets, where a rough figure is enough."""
        return math.ceil(len(text) / 4)

    def close(self) -> None:
        """Nothing to free: every call opens and closes its own connection."""

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {'url': self.display_url, 'consecutive_failures': self.consecutive_failures,
                    'last_error': self.last_error, 'last_latency_s': self.last_latency_s}

    # ------------------------------------------------------------------ requests
    def _image_data_url(self, image: np.ndarray | None) -> str | None:
        if image is None:
            return None
        max_side = self.config.mllm.image_max_side
        h, w = image.shape[:2]
        if max_side > 0 and max(h, w) > max_side:
            import cv2
            scale = max_side / max(h, w)
            size = (max(1, min(max_side, round(w * scale))),
                    max(1, min(max_side, round(h * scale))))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        jpeg = encode_compressed(image, 'jpeg', quality=_JPEG_QUALITY)
        return 'data:image/jpeg;base64,' + base64.b64encode(jpeg).decode('ascii')

    def _payload(self, request: MllmRequest, image_url: str | None, *,
                 max_tokens: int, **extra) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [{'role': m.role, 'content': m.content}
                                          for m in request.prefix]
        if image_url is None:
            messages.append({'role': 'user', 'content': request.user})
        else:
            messages.append({'role': 'user', 'content': [
                {'type': 'image_url', 'image_url': {'url': image_url}},
                {'type': 'text', 'text': request.user}]})
        payload: dict[str, Any] = {'model': self.model, 'messages': messages,
                                   'max_tokens': max_tokens,
                                   'temperature': self.config.mllm.temperature,
                                   'stream': False}
        if request.stop:
            payload['stop'] = list(request.stop)
        if self.continue_final_message and request.answer_prefix:
            messages.append({'role': 'assistant', 'content': request.answer_prefix})
            payload.update(continue_final_message=True, add_generation_prompt=False)
        payload.update(extra)
        return payload

    def _yes_probability_one(self, request: MllmRequest) -> float:
        image_url = self._image_data_url(request.image)
        with_logprobs = self._send_logprobs
        extra: dict[str, Any] = {'temperature': 0.0}
        if with_logprobs:
            extra.update(logprobs=True, top_logprobs=5)
        try:
            (data, text), _ = self._call(
                self._payload(request, image_url, max_tokens=1, **extra))
        except BackendError as e:
            if not (with_logprobs and getattr(e, 'status', None) == 400):
                raise
            log.warning('%s: HTTP 400 with logprobs requested; yes/no from the text answer '
                        'from now on', self.display_url)
            self._send_logprobs = False
            (data, text), _ = self._call(
                self._payload(request, image_url, max_tokens=1, temperature=0.0))
        p = yes_probability_from_logprobs(data)
        return p if p is not None else yes_probability_from_text(text)

    # ------------------------------------------------------------------ transport
    def _call(self, payload: dict[str, Any],
              stream=None) -> tuple[tuple[dict[str, Any], str], int]:
        """POST with retries; ((decoded JSON object, reply text), attempts). With a
        `stream` (payload `stream: true`) the reply arrives as server-sent events, each
        piece emitted as it comes; an attempt that already emitted text is not retried, and
        a cancel shuts the connection at once (GenerationCancelled). Raises BackendError."""
        body = json.dumps(payload, ensure_ascii=False).encode('utf-8')
        key = os.environ.get(self._api_key_env, '') if self._api_key_env else ''
        t0 = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            failure = None
            parts: list[str] = []
            try:
                if stream is None:
                    raw = self._attempt(body, key)
                    data = decode_json(raw)
                    text = reply_text(data)
                else:
                    data = self._attempt_streamed(body, key, stream, parts)
                    text = ''.join(parts)
            except AttemptError as e:
                # Only scrubbed text leaves this block: the exception itself (whose message
                # may echo the key) must not become the __context__ of the BackendError.
                failure = (_scrub(str(e), key), e.status, e.retryable, e.retry_after)
            if failure is not None:
                streaming.check(stream)  # the socket was shut by a cancel, not a failure
                message, status, retryable, retry_after = failure
                if retryable and attempts <= self.retries and not parts:
                    delay = self._backoff(attempts, retry_after)
                    log.warning('%s: attempt %d/%d failed (%s); retrying in %.2f s',
                                self.display_url, attempts, self.retries + 1, message, delay)
                    time.sleep(delay)
                    continue
                if retryable and attempts > 1:
                    message = f'failed after {attempts} attempts: {message}'
                elif not retryable and status is not None:
                    message += ' (not retried)'
                self._failed(f'{self.name}: POST {self.display_url}: {message}', status)
            with self._lock:
                self.consecutive_failures = 0
                self.last_error = ''
                self.last_latency_s = time.monotonic() - t0
            return (data, text), attempts

    def _attempt_streamed(self, body: bytes, key: str, stream, parts: list[str]) -> dict:
        """One streamed exchange: text pieces to `stream` and `parts`; returns {'usage': ...}
        when the server sent usage."""
        usage: dict[str, Any] = {}
        finished = [False]

        def on_data(raw: bytes) -> None:
            piece, chunk_usage, finished[0] = stream_chunk(raw)
            if chunk_usage is not None:
                usage['usage'] = chunk_usage
            if piece:
                parts.append(piece)
                stream.emit(piece)
        end = http_post.post(self._opener, self.endpoint, body,
                             self._headers(key, 'text/event-stream'), self.timeout_s,
                             read=lambda resp: http_post.read_events(resp, on_data),
                             on_abort=stream.on_cancel)
        if end != b'[DONE]' and not finished[0]:
            raise AttemptError('the event stream ended before the reply did (no [DONE], no '
                               'finish_reason)', True)
        return usage

    def _failed(self, message: str, status: int | None) -> None:
        with self._lock:
            self.consecutive_failures += 1
            self.last_error = message
        error = BackendError(message)
        error.status = status  # HTTP status when there was one (None: transport/format)
        raise error

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max_s)
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return delay * self._random.uniform(0.5, 1.0)

    def _attempt(self, body: bytes, key: str) -> bytes:
        """One HTTP exchange within the hard deadline; the response body or AttemptError."""
        return http_post.post(self._opener, self.endpoint, body, self._headers(key),
                              self.timeout_s)

    @staticmethod
    def _headers(key: str, accept: str = 'application/json') -> dict[str, str]:
        headers = {'Content-Type': 'application/json', 'Accept': accept,
                   'User-Agent': 'mr_mllm_ros'}
        if key:
            headers['Authorization'] = f'Bearer {key}'
        return headers


def _scrub(message: str, key: str) -> str:
    if key:
        message = message.replace(key, '***')
    return message
