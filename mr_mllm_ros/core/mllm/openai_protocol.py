"""The OpenAI chat-completions wire format, as far as this package reads it: the endpoint
from a base URL, the reply text (whole, or chunk by chunk when streamed), and P(yes) from
the first token's top logprobs."""

from __future__ import annotations

import json
import math
import re
import urllib.parse
from typing import Any

from ..errors import ConfigError
from .http_post import AttemptError, excerpt, safe_url

#: Spellings of a one-word yes/no answer in top-logprob tokens (compared after stripping
#: whitespace, byte-level BPE markers and case).
YES_TOKENS = frozenset({'yes', 'y'})
NO_TOKENS = frozenset({'no', 'n'})
TOKEN_MARKERS = ' \t\r\n\u0120\u2581.,!:;"\''  # 'Ġ' (GPT-2 BPE) and '▁' (SentencePiece)


def endpoint(base_url: str) -> tuple[str, str, str]:
    """(POST URL, the same without query for messages, 'host:port')."""
    parts = urllib.parse.urlsplit(base_url.strip())
    if parts.scheme not in ('http', 'https') or not parts.hostname:
        raise ConfigError(f'mllm.openai_base_url = {safe_url(base_url)!r} must be an '
                          'http:// or https:// URL, e.g. http://127.0.0.1:8000/v1')
    if parts.username or parts.password:
        raise ConfigError('mllm.openai_base_url must not contain credentials; put the API '
                          'key in the environment variable named by mllm.openai_api_key_env')
    try:
        port = parts.port or (443 if parts.scheme == 'https' else 80)
    except ValueError:
        raise ConfigError(f'mllm.openai_base_url = {safe_url(base_url)!r} has an invalid '
                          'port') from None
    path = parts.path.rstrip('/') + '/chat/completions'
    url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ''))
    display = urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, '', ''))
    host = parts.hostname if ':' not in parts.hostname else f'[{parts.hostname}]'
    return url, display, f'{host}:{port}'



def decode_json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, ValueError):
        raise AttemptError(f'malformed response: not JSON: {excerpt(raw)!r}',
                            False) from None
    if not isinstance(data, dict):
        raise AttemptError(f'malformed response: expected a JSON object, got '
                            f'{type(data).__name__}: {excerpt(raw)!r}', False)
    return data


def reply_text(data: dict[str, Any]) -> str:
    """choices[0].message.content (a string, or a list of text parts); a non-retryable
    AttemptError when the reply does not have that shape."""
    choices = data.get('choices')
    if not isinstance(choices, list) or not choices:
        raise AttemptError(f'malformed response: no choices ({excerpt(json.dumps(data))!r})',
                            False)
    choice = choices[0]
    message = choice.get('message') if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raise AttemptError(f'malformed response: choices[0] has no message '
                            f'({excerpt(json.dumps(choice))!r})', False)
    content = message.get('content')
    if isinstance(content, list):
        content = ''.join(p.get('text', '') for p in content
                          if isinstance(p, dict) and isinstance(p.get('text'), str))
    if not isinstance(content, str):
        raise AttemptError(f'malformed response: choices[0].message has no text content '
                            f'(finish_reason={choice.get("finish_reason")!r}: '
                            f'{excerpt(json.dumps(message))!r})', False)
    return content


def stream_chunk(raw: bytes) -> tuple[str, dict | None, bool]:
    """(new text, usage or None, finished) of one chat.completion.chunk of a streamed
    reply (`stream: true`): choices[0].delta.content, and whether it carries a
    finish_reason; a server error sent as an event, or a chunk that is not JSON, is a
    non-retryable AttemptError."""
    data = decode_json(raw)
    if isinstance(data.get('error'), (dict, str)):
        raise AttemptError(f'error in the stream: {excerpt(json.dumps(data["error"]))!r}',
                           False)
    usage = data.get('usage') if isinstance(data.get('usage'), dict) else None
    choices = data.get('choices')
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return '', usage, False  # e.g. the final usage-only chunk
    delta = choices[0].get('delta')
    content = delta.get('content') if isinstance(delta, dict) else None
    return (content if isinstance(content, str) else ''), usage, \
        bool(choices[0].get('finish_reason'))


def yes_probability_from_logprobs(data: dict[str, Any]) -> float | None:
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
        word = token.strip(TOKEN_MARKERS).lower()
        if word in YES_TOKENS:
            yes += math.exp(lp)
        elif word in NO_TOKENS:
            no += math.exp(lp)
    if yes + no <= 0.0:
        return None
    return yes / (yes + no)


def yes_probability_from_text(text: str) -> float:
    """1.0 for a yes, 0.0 for a no, 0.5 for anything else (when there are no logprobs)."""
    word = text.strip().lstrip(TOKEN_MARKERS).lower()
    word = re.split(r'[^a-z]', word, maxsplit=1)[0]
    return 1.0 if word in YES_TOKENS else 0.0 if word in NO_TOKENS else 0.5
