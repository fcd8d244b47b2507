"""One HTTP POST with a hard deadline, standard library only (urllib.request).

A watchdog timer shuts the attempt's socket down when the deadline passes, which wakes any
blocked connect/send/recv at once: a trickling server cannot stretch an attempt past
`timeout_s` (urllib's own timeout is per socket operation). Redirects are not followed (a
redirected POST would silently become a GET). Every failure is an AttemptError saying
whether a retry may help; retries, back-off and credentials are the caller's business.
"""

from __future__ import annotations

import email.utils
import functools
import http.client
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from typing import Callable

MAX_RESPONSE_BYTES = 16 * 1024 * 1024
EXCERPT_CHARS = 200


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


class _Watched:
    """Connection mixin: hands the connected socket to the attempt's watchdog."""

    def __init__(self, *args, watch: _Watch, **kwargs):
        super().__init__(*args, **kwargs)
        self._watch = watch

    def connect(self):
        super().connect()
        self._watch.attach(self.sock)


class _WatchedHTTPConnection(_Watched, http.client.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, http.client.HTTPSConnection):
    pass


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(functools.partial(_WatchedHTTPConnection, watch=req.watch), req)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(functools.partial(_WatchedHTTPSConnection, watch=req.watch), req,
                            context=self._context)


def build_opener() -> urllib.request.OpenerDirector:
    """Proxies from the environment as usual, but no redirect handler: a redirected POST
    would silently become a GET, so a 3xx is reported as an error instead."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                    _WatchedHTTPHandler(), _WatchedHTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener

class AttemptError(Exception):
    def __init__(self, message: str, retryable: bool, retry_after: float | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


def post(opener: urllib.request.OpenerDirector, url: str, body: bytes, headers: dict[str, str],
         timeout_s: float, read: Callable = None, on_abort: Callable = None) -> bytes:
    """One HTTP exchange within the hard deadline; the response body (`read(resp)`, default
    read_limited) or AttemptError. `on_abort(hook)`: registers `hook` to be called when
    the caller wants the exchange stopped (a cancelled stream) and returns its remover;
    the hook shuts the socket down as the deadline does."""
    req = urllib.request.Request(url, data=body, headers=headers, method='POST')
    watch = _Watch()
    req.watch = watch
    timer = threading.Timer(timeout_s, watch.expire)
    timer.daemon = True
    timer.start()
    remove_hook = on_abort(watch.expire) if on_abort is not None else None
    timed_out = f'timed out after {timeout_s:g} s'
    try:
        try:
            with opener.open(req, timeout=timeout_s) as resp:
                raw = (read or read_limited)(resp)
        except urllib.error.HTTPError as e:
            status = e.code
            try:
                shown = excerpt(read_limited(e, 4096))
            except (OSError, http.client.HTTPException):
                shown = ''
            finally:
                e.close()
            if watch.expired and not shown:
                raise AttemptError(f'HTTP {status}, then {timed_out}', True) from None
            detail = f'HTTP {status}' + (f': {shown}' if shown else '')
            if 300 <= status < 400:
                location = e.headers.get('Location', '') if e.headers else ''
                detail += (f' (redirect to {safe_url(location)}; set '
                           'mllm.openai_base_url to the final URL)')
            retryable = status in (408, 429) or 500 <= status < 600
            wait = retry_after(e.headers) if retryable else None
            raise AttemptError(detail, retryable, wait, status) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            if watch.expired or isinstance(e, TimeoutError) or \
                    isinstance(getattr(e, 'reason', None), TimeoutError):
                raise AttemptError(timed_out, True) from None
            reason = getattr(e, 'reason', None) or e
            detail = str(reason)
            raise AttemptError(f'connection failed: {type(reason).__name__}'
                               + (f': {detail}' if detail else ''), True) from None
        if watch.expired:
            raise AttemptError(timed_out, True)
        return raw
    finally:
        timer.cancel()
        if remove_hook is not None:
            remove_hook()


def safe_url(url: str) -> str:
    """A URL for messages: no user info, no query (either may hold credentials)."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc.rsplit('@', 1)[-1]
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, '', ''))
    except ValueError:
        return '<invalid URL>'


def read_limited(resp, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    chunks, size = [], 0
    while True:
        chunk = resp.read(min(65536, limit + 1 - size))
        if not chunk:
            return b''.join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            if limit < MAX_RESPONSE_BYTES:  # an error-body excerpt: the start is enough
                return b''.join(chunks)[:limit]
            raise AttemptError(f'response larger than {limit} bytes', False)


def read_events(resp, on_data: Callable[[bytes], None],
                limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """A server-sent-events body (text/event-stream): `on_data(payload)` for each `data:`
    line as it arrives, until `data: [DONE]` (returns b'[DONE]') or the end of the body
    (returns b'')."""
    size = 0
    while True:
        line = resp.readline(65536)
        if not line:
            return b''
        size += len(line)
        if size > limit:
            raise AttemptError(f'event stream larger than {limit} bytes', False)
        line = line.strip()
        if not line.startswith(b'data:'):
            continue  # blank separators, comments (': keep-alive'), event/id fields
        data = line[5:].strip()
        if data == b'[DONE]':
            return data
        on_data(data)


def excerpt(raw: bytes | str, n: int = EXCERPT_CHARS) -> str:
    text = raw.decode('utf-8', 'replace') if isinstance(raw, bytes) else raw
    text = ' '.join(text.split())
    return text if len(text) <= n else text[:n] + '...'


def _scrub(message: str, key: str) -> str:
    if key:
        message = message.replace(key, '***')
    return message


def retry_after(headers) -> float | None:
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
