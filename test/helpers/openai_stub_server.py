"""A real, local OpenAI-compatible chat-completions server for tests (not a test file).

    with StubOpenAiServer() as server:
        server.push(reply('<ground>A man</ground>...'))
        server.push(fail(500, times=2), reply('ok'))
        ... OpenAiBackend(load_config(overrides={'mllm.openai_base_url': server.url})) ...
        server.requests[0].json['max_tokens']

Listens on 127.0.0.1 on an ephemeral port (ThreadingHTTPServer). Each POST to
.../chat/completions takes the next scripted action from a queue (or `default` when the
queue is empty); an action may also be a callable(RecordedRequest) -> action, for replies
that depend on the request (concurrent clients). Every request is recorded (path,
lower-cased headers, raw body, decoded JSON) before it is answered.

Actions: reply (a chat completion, optionally with logprobs; server-sent events, a word
at a time, when the request asks for `stream: true`), fail (HTTP error status with
body and headers, N times), sleep (stall longer than the client's timeout, then reply),
trickle (a reply whose body arrives a byte at a time), malformed (invalid JSON),
no_choices (JSON without `choices`), drop (close the connection without answering).
Shutdown is bounded: stalled handlers wake on the stop event, handler threads are daemons
and are not joined.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, Sequence


# ----------------------------------------------------------------------- actions

@dataclass(frozen=True)
class Action:
    kind: str  # 'reply' | 'fail' | 'sleep' | 'trickle' | 'raw' | 'drop'
    status: int = 200
    body: bytes = b''
    headers: Mapping[str, str] = field(default_factory=dict)
    text: str = ''
    logprobs: Sequence[tuple[str, float]] | None = None
    seconds: float = 0.0
    then: 'Action | None' = None
    usage: bool = True
    token_s: float = 0.0


def cut_stream(text: str, after: int) -> Action:
    """A streamed reply that stops after `after` words: the connection closes with no
    finish_reason and no [DONE] (a server that died mid-answer)."""
    return Action('reply', text=text, seconds=float(after))


def reply(text: str, logprobs: Sequence[tuple[str, float]] | None = None,
          usage: bool = True, token_s: float = 0.0) -> Action:
    """A successful chat completion with `text` as the assistant content. `logprobs`:
    (token, logprob) pairs returned as the first token's top_logprobs (the first pair is
    the sampled token). A request with `stream: true` gets it as server-sent events, one
    chunk per word, `token_s` seconds apart."""
    return Action('reply', text=text, logprobs=tuple(logprobs) if logprobs else None,
                  usage=usage, token_s=token_s)


def fail(status: int, body: str | dict | None = None, headers: Mapping[str, str] | None = None,
         times: int = 1) -> list[Action]:
    """`times` HTTP errors with `status` (body: JSON error object by default)."""
    if body is None:
        body = {'error': {'message': f'stub error {status}', 'type': 'stub', 'code': status}}
    raw = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
    return [Action('fail', status=status, body=raw, headers=dict(headers or {}))] * times


def sleep(seconds: float, then: Action | None = None) -> Action:
    """Stall `seconds` (interrupted by server stop) before answering with `then`
    (default: a reply 'late')."""
    return Action('sleep', seconds=seconds, then=then or reply('late'))


def raw(body: bytes | str, status: int = 200,
        content_type: str = 'application/json') -> Action:
    return Action('raw', status=status,
                  body=body.encode() if isinstance(body, str) else body,
                  headers={'Content-Type': content_type})


def malformed() -> Action:
    return raw(b'{"choices": [{"message": {"content": "trunc')


def no_choices() -> Action:
    return raw(json.dumps({'id': 'chatcmpl-stub', 'object': 'chat.completion',
                           'model': 'stub', 'usage': {}}))


def trickle(text: str, interval: float) -> Action:
    """A reply whose body arrives one byte every `interval` seconds (a stalled stream
    that never trips a per-recv socket timeout)."""
    return Action('trickle', text=text, seconds=interval)


def drop() -> Action:
    """Read the request, then close the connection without a response."""
    return Action('drop')


# ---------------------------------------------------------------------- recording

@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    json: Any
    time: float

    @property
    def messages(self) -> list[dict]:
        return self.json.get('messages', []) if isinstance(self.json, dict) else []

    @property
    def user_content(self) -> Any:
        users = [m for m in self.messages if m.get('role') == 'user']
        return users[-1]['content'] if users else None

    @property
    def user_text(self) -> str:
        content = self.user_content
        if isinstance(content, list):
            return ''.join(p.get('text', '') for p in content if p.get('type') == 'text')
        return content or ''


ActionLike = Action | Callable[[RecordedRequest], Action]


# ------------------------------------------------------------------------- server

class _Handler(BaseHTTPRequestHandler):
    server: '_Server'
    protocol_version = 'HTTP/1.1'

    def log_message(self, format, *args):  # quiet
        pass

    def do_GET(self):
        if self.path.rstrip('/').endswith('/models'):
            self._send_json(200, {'object': 'list', 'data': [
                {'id': self.server.stub.model, 'object': 'model'}]})
        else:
            self._send_json(404, {'error': {'message': f'no route {self.path}'}})

    def do_POST(self):
        length = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(length) if length else b''
        try:
            decoded = json.loads(body.decode('utf-8'))
        except (UnicodeDecodeError, ValueError):
            decoded = None
        record = RecordedRequest('POST', self.path,
                                 {k.lower(): v for k, v in self.headers.items()}, body,
                                 decoded, time.monotonic())
        stub = self.server.stub
        stub._record(record)
        if not self.path.rstrip('/').endswith('/chat/completions'):
            self._send_json(404, {'error': {'message': f'no route {self.path}'}})
            return
        if decoded is None:
            self._send_json(400, {'error': {'message': 'body is not JSON'}})
            return
        self._perform(stub._next_action(record), record)

    def _perform(self, action: ActionLike, record: RecordedRequest) -> None:
        if callable(action) and not isinstance(action, Action):
            action = action(record)
        stub = self.server.stub
        if action.kind == 'sleep':
            if stub._stop.wait(action.seconds):
                self.close_connection = True
                return
            self._perform(action.then, record)
        elif action.kind == 'drop':
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        elif action.kind == 'trickle':
            body = json.dumps(stub.completion(record, action)).encode()
            try:
                self.send_response(200)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.flush()
                for i in range(len(body)):
                    if stub._stop.wait(action.seconds):
                        break
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True
        elif action.kind == 'reply' and isinstance(record.json, dict) and \
                record.json.get('stream'):
            self._stream(action, record)
        elif action.kind == 'reply':
            self._send_json(200, stub.completion(record, action))
        else:  # fail, raw
            headers = dict(action.headers)
            headers.setdefault('Content-Type', 'application/json')
            self._send(action.status, action.body, headers)

    def _stream(self, action: Action, record: RecordedRequest) -> None:
        """The reply as chat.completion.chunk events, a word at a time; stops early when
        the client hangs up (a cancel) or the server stops. `stub.streamed` counts the
        chunks written per request."""
        stub = self.server.stub
        pieces = re.findall(r'\s*\S+\s*', action.text) or ['']
        try:
            self.send_response(200)
            self.send_header('Content-Type', 'text/event-stream')
            self.send_header('Cache-Control', 'no-cache')
            self.end_headers()
            cut = int(action.seconds) if action.seconds else None  # cut_stream
            for i, piece in enumerate(pieces):
                if i == cut:
                    self.close_connection = True
                    return
                if i and stub._stop.wait(action.token_s):
                    break
                last = i == len(pieces) - 1
                chunk = {'id': 'chatcmpl-stub', 'object': 'chat.completion.chunk',
                         'choices': [{'index': 0, 'delta': {'content': piece},
                                      'finish_reason': 'stop' if last else None}]}
                self.wfile.write(b'data: ' + json.dumps(chunk).encode() + b'\n\n')
                self.wfile.flush()
                stub._count_chunk(record)
            self.wfile.write(b'data: [DONE]\n\n')
            self.wfile.flush()
        except OSError:  # the client hung up
            pass
        self.close_connection = True

    def _send_json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), {'Content-Type': 'application/json'})

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:  # the client gave up (timeout): nothing to answer
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    stub: 'StubOpenAiServer'

    def handle_error(self, request, client_address):  # client resets are expected
        pass


class StubOpenAiServer:
    def __init__(self, default: ActionLike | None = None, model: str = 'stub-model'):
        self.default: ActionLike = default or reply('stub reply')
        self.model = model
        self._queue: deque[ActionLike] = deque()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self.streamed: dict[int, int] = {}
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------- lifecycle
    def start(self) -> 'StubOpenAiServer':
        self._stop.clear()
        # port 0 the first time; a restart binds the same port (a server coming back)
        self._server = _Server(('127.0.0.1', self.port), _Handler)
        self._server.stub = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={'poll_interval': 0.05},
                                        name='openai-stub', daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop serving and close the listening socket; bounded by `timeout`."""
        self._stop.set()
        server, self._server = self._server, None
        if server is None:
            return
        done = threading.Thread(target=server.shutdown, daemon=True)
        done.start()
        done.join(timeout)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> 'StubOpenAiServer':
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL to configure (mllm.openai_base_url)."""
        return f'http://127.0.0.1:{self.port}/v1'

    # ------------------------------------------------------------- scripting
    def push(self, *actions: ActionLike | Sequence[ActionLike]) -> 'StubOpenAiServer':
        """Queue actions (lists, as returned by fail(times=N), are flattened)."""
        with self._lock:
            for a in actions:
                if isinstance(a, (list, tuple)):
                    self._queue.extend(a)
                else:
                    self._queue.append(a)
        return self

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def _record(self, record: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(record)

    def _count_chunk(self, record: RecordedRequest) -> None:
        with self._lock:
            self.streamed[id(record)] = self.streamed.get(id(record), 0) + 1

    def chunks_sent(self, record: RecordedRequest) -> int:
        """Stream chunks written for `record` (the client may not have read them all)."""
        with self._lock:
            return self.streamed.get(id(record), 0)

    def _next_action(self, record: RecordedRequest) -> ActionLike:
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def completion(self, record: RecordedRequest, action: Action) -> dict:
        """The chat.completion object answering `record` with `action`."""
        req = record.json
        n = len(self._requests)
        choice: dict[str, Any] = {'index': 0, 'finish_reason': 'stop', 'logprobs': None,
                                  'message': {'role': 'assistant', 'content': action.text}}
        if action.logprobs:
            token, lp = action.logprobs[0]
            choice['logprobs'] = {'content': [{
                'token': token, 'logprob': lp, 'bytes': list(token.encode()),
                'top_logprobs': [{'token': t, 'logprob': v, 'bytes': list(t.encode())}
                                 for t, v in action.logprobs]}]}
        out = {'id': f'chatcmpl-stub-{n}', 'object': 'chat.completion',
               'created': int(time.time()), 'model': req.get('model', self.model),
               'choices': [choice]}
        if action.usage:
            prompt, completion = len(record.body) // 4, max(1, len(action.text) // 4)
            out['usage'] = {'prompt_tokens': prompt, 'completion_tokens': completion,
                            'total_tokens': prompt + completion}
        return out
