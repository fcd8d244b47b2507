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

Failure handling: every attempt has a hard deadline of mllm.openai_timeout_s (a watchdog
shuts the socket down when it passes, so a trickling server cannot stretch it); failed
attempts are retried up to mllm.openai_retries times on connection errors, timeouts,
HTTP 408, 429 and 5xx, with exponential back-off and jitter (Retry-After honoured, both
capped at `backoff_max_s`); other 4xx and malformed replies fail at once. A call therefore
takes at most (retries + 1) * timeout + retries * backoff_max_s. Every failure is a
BackendError naming the URL (never credentials), the HTTP status and a short excerpt of
the body. The API key (from the environment variable named by mllm.openai_api_key_env;
unset or empty = no Authorization header, fine for local servers) never appears in logs or
error messages.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import http.client
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from ..config import Config
from ..errors import BackendError, ConfigError
from ..images import encode_compressed
from ..types import Generation
from .base import MllmRequest

log = logging.getLogger(__name__)

#: Spellings of a one-word yes/no answer in top-logprob tokens (compared after stripping
#: whitespace, byte-level BPE markers and case).
YES_TOKENS = frozenset({'yes', 'y'})
NO_TOKENS = frozenset({'no', 'n'})
_TOKEN_MARKERS = ' \t\r\n\u0120\u2581.,!:;"\''  # 'Ġ' (GPT-2 BPE) and '▁' (SentencePiece)

_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
_EXCERPT_CHARS = 200
_JPEG_QUALITY = 90
_YES_NO_WORKERS = 8


class _Watch:
    """Hard deadline of one HTTP attempt: when the timer fires, the attempt's socket is
    shut down, which wakes any blocked connect/send/recv at once."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.expired = False

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                _shutdown(sock)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                _shutdown(self._sock)


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _WatchedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, watch: _Watch, **kwargs):
        super().__init__(*args, **kwargs)
        self._watch = watch

    def connect(self):
        super().connect()
        self._watch.attach(self.sock)


class _WatchedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, watch: _Watch, **kwargs):
        super().__init__(*args, **kwargs)
        self._watch = watch

    def connect(self):
        super().connect()
        self._watch.attach(self.sock)


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(functools.partial(_WatchedHTTPConnection, watch=req.watch), req)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(functools.partial(_WatchedHTTPSConnection, watch=req.watch), req,
                            context=self._context)


def _build_opener() -> urllib.request.OpenerDirector:
    """Proxies from the environment as usual, but no redirect handler: a redirected POST
    would silently become a GET, so a 3xx is reported as an error instead."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                    _WatchedHTTPHandler(), _WatchedHTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


class _AttemptError(Exception):
    def __init__(self, message: str, retryable: bool, retry_after: float | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class OpenAiBackend:
    """MllmBackend over an OpenAI-compatible chat-completions server.

    Health, for diagnostics: `consecutive_failures` (failed calls since the last success),
    `last_error` (message of the last failure, '' after a success) and `last_latency_s`
    (wall time of the last successful call, retries included; None before the first)."""

    sees_images = True

    def __init__(self, config: Config, *, continue_final_message: bool | None = None,
                 backoff_base_s: float = 0.5, backoff_max_s: float = 8.0):
        cfg = config.mllm
        self.config = config
        self.model = cfg.model
        self.timeout_s = float(cfg.openai_timeout_s)
        self.retries = int(cfg.openai_retries)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        if continue_final_message is None:
            continue_final_message = cfg.openai_continue_final_message
        self.continue_final_message = continue_final_message
        self._send_logprobs = True  # off once the server rejected them (HTTP 400)
        self._api_key_env = cfg.openai_api_key_env
        self.endpoint, self.display_url, host = _endpoint(cfg.openai_base_url)
        self.name = f'{self.model} (openai @ {host})'
        self._opener = _build_opener()
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
        payload = self._payload(request, image_url, max_tokens=request.max_new_tokens)
        (data, text), attempts = self._call(payload)
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
        p = _yes_probability_from_logprobs(data)
        if p is not None:
            return p
        word = text.strip().lstrip(_TOKEN_MARKERS).lower()
        word = re.split(r'[^a-z]', word, maxsplit=1)[0]
        return 1.0 if word in YES_TOKENS else 0.0 if word in NO_TOKENS else 0.5

    # ------------------------------------------------------------------ transport
    def _call(self, payload: dict[str, Any]) -> tuple[tuple[dict[str, Any], str], int]:
        """POST with retries; ((decoded JSON object, reply text), attempts).
        Raises BackendError."""
        body = json.dumps(payload, ensure_ascii=False).encode('utf-8')
        key = os.environ.get(self._api_key_env, '') if self._api_key_env else ''
        t0 = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            failure = None
            try:
                raw = self._attempt(body, key)
                data = _decode_json(raw)
                text = _reply_text(data)
            except _AttemptError as e:
                # Only scrubbed text leaves this block: the exception itself (whose message
                # may echo the key) must not become the __context__ of the BackendError.
                failure = (_scrub(str(e), key), e.status, e.retryable, e.retry_after)
            if failure is not None:
                message, status, retryable, retry_after = failure
                if retryable and attempts <= self.retries:
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
        """One HTTP exchange within the hard deadline; the response body or _AttemptError."""
        headers = {'Content-Type': 'application/json', 'Accept': 'application/json',
                   'User-Agent': 'mr_mllm_ros'}
        if key:
            headers['Authorization'] = f'Bearer {key}'
        req = urllib.request.Request(self.endpoint, data=body, headers=headers, method='POST')
        watch = _Watch()
        req.watch = watch
        timer = threading.Timer(self.timeout_s, watch.expire)
        timer.daemon = True
        timer.start()
        timed_out = f'timed out after {self.timeout_s:g} s'
        try:
            try:
                with self._opener.open(req, timeout=self.timeout_s) as resp:
                    raw = _read_limited(resp)
            except urllib.error.HTTPError as e:
                status = e.code
                try:
                    excerpt = _excerpt(_read_limited(e, 4096))
                except (OSError, http.client.HTTPException):
                    excerpt = ''
                finally:
                    e.close()
                if watch.expired and not excerpt:
                    raise _AttemptError(f'HTTP {status}, then {timed_out}', True) from None
                detail = f'HTTP {status}' + (f': {excerpt}' if excerpt else '')
                if 300 <= status < 400:
                    location = e.headers.get('Location', '') if e.headers else ''
                    detail += (f' (redirect to {_safe_url(location)}; set '
                               'mllm.openai_base_url to the final URL)')
                retryable = status in (408, 429) or 500 <= status < 600
                retry_after = _retry_after(e.headers) if retryable else None
                raise _AttemptError(detail, retryable, retry_after, status) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                if watch.expired or isinstance(e, TimeoutError) or \
                        isinstance(getattr(e, 'reason', None), TimeoutError):
                    raise _AttemptError(timed_out, True) from None
                reason = getattr(e, 'reason', None) or e
                detail = str(reason)
                raise _AttemptError(f'connection failed: {type(reason).__name__}'
                                    + (f': {detail}' if detail else ''), True) from None
            if watch.expired:
                raise _AttemptError(timed_out, True)
            return raw
        finally:
            timer.cancel()


# ---------------------------------------------------------------------- helpers

def _endpoint(base_url: str) -> tuple[str, str, str]:
    """(POST URL, the same without query for messages, 'host:port')."""
    parts = urllib.parse.urlsplit(base_url.strip())
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise ConfigError(f'mllm.openai_base_url = {_safe_url(base_url)!r} must be an '
                          'http:// or https:// URL, e.g. http://127.0.0.1:8000/v1')
    if parts.username or parts.password:
        raise ConfigError('mllm.openai_base_url must not contain credentials; put the API '
                          'key in the environment variable named by mllm.openai_api_key_env')
    try:
        port = parts.port or (443 if parts.scheme == 'https' else 80)
    except ValueError:
        raise ConfigError(f'mllm.openai_base_url = {_safe_url(base_url)!r} has an invalid '
                          'port') from None
    path = parts.path.rstrip('/') + '/chat/completions'
    url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ''))
    display = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, '', ''))
    host = parts.hostname if ':' not in parts.hostname else f'[{parts.hostname}]'
    return url, display, f'{host}:{port}'


def _safe_url(url: str) -> str:
    """A URL for messages: no user info, no query (either may hold credentials)."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc.rsplit('@', 1)[-1]
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, '', ''))
    except ValueError:
        return '<invalid URL>'


def _read_limited(resp, limit: int = _MAX_RESPONSE_BYTES) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = resp.read(min(65536, limit + 1 - size))
        if not chunk:
            return b''.join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            if limit < _MAX_RESPONSE_BYTES:  # an error-body excerpt: the start is enough
                return b''.join(chunks)[:limit]
            raise _AttemptError(f'response larger than {limit} bytes', False)


def _excerpt(raw: bytes | str, n: int = _EXCERPT_CHARS) -> str:
    text = raw.decode('utf-8', 'replace') if isinstance(raw, bytes) else raw
    text = ' '.join(text.split())
    return text if len(text) <= n else text[:n] + '...'


def _scrub(message: str, key: str) -> str:
    if key:
        message = message.replace(key, '***')
    return message


def _retry_after(headers) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), None if absent."""
    value = headers.get('Retry-After') if headers is not None else None
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _decode_json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, ValueError):
        raise _AttemptError(f'malformed response: not JSON: {_excerpt(raw)!r}',
                            False) from None
    if not isinstance(data, dict):
        raise _AttemptError(f'malformed response: expected a JSON object, got '
                            f'{type(data).__name__}: {_excerpt(raw)!r}', False)
    return data


def _reply_text(data: dict[str, Any]) -> str:
    """choices[0].message.content (a string, or a list of text parts); a non-retryable
    _AttemptError when the reply does not have that shape."""
    choices = data.get('choices')
    if not isinstance(choices, list) or not choices:
        raise _AttemptError(f'malformed response: no choices ({_excerpt(json.dumps(data))!r})',
                            False)
    choice = choices[0]
    message = choice.get('message') if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise _AttemptError(f'malformed response: choices[0] has no message '
                            f'({_excerpt(json.dumps(choice))!r})', False)
    content = message.get('content')
    if isinstance(content, list):
        content = ''.join(p.get('text', '') for p in content
                          if isinstance(p, dict) and isinstance(p.get('text'), str))
    if not isinstance(content, str):
        raise _AttemptError(f'malformed response: choices[0].message has no text content '
                            f'(finish_reason={choice.get("finish_reason")!r}: '
                            f'{_excerpt(json.dumps(message))!r})', False)
    return content


def _yes_probability_from_logprobs(data: dict[str, Any]) -> float | None:
    """P(yes | yes or no) from the first token's top logprobs; None when unusable.
    Accepts the chat format (logprobs.content[0].top_logprobs = [{token, logprob}]) and
    the legacy completions format (logprobs.top_logprobs[0] = {token: logprob})."""
    try:
        logprobs = data['choices'][0].get('logprobs')
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    if not isinstance(logprobs, dict):
        return None
    pairs: list[tuple[str, float]] = []
    content = logprobs.get('content')
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        for entry in first.get('top_logprobs') or []:
            if isinstance(entry, dict):
                pairs.append((entry.get('token'), entry.get('logprob')))
        if not pairs:
            pairs.append((first.get('token'), first.get('logprob')))
    else:
        top = logprobs.get('top_logprobs')
        if isinstance(top, list) and top and isinstance(top[0], dict):
            pairs.extend(top[0].items())
    yes = no = 0.0
    seen = set()
    for token, lp in pairs:
        if not isinstance(token, str) or not isinstance(lp, (int, float)) or token in seen:
            continue
        seen.add(token)
        word = token.strip(_TOKEN_MARKERS).lower()
        if word in YES_TOKENS:
            yes += math.exp(lp)
        elif word in NO_TOKENS:
            no += math.exp(lp)
    if yes + no <= 0.0:
        return None
    return yes / (yes + no)
