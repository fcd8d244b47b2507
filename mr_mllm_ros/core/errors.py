"""The project's own exceptions. Every failure the core reports on bad input or bad
configuration is one of these, with a message that names the problem, so nodes can log
it once, count it in diagnostics and keep running."""

import re


class MrMllmError(Exception):
    """Base class of every error raised on purpose by mr_mllm_ros."""


class ImageConversionError(MrMllmError, ValueError):
    """An image message (or its bytes) cannot be turned into pixels, or pixels into a message."""


class ConfigError(MrMllmError, ValueError):
    """A configuration key or value is invalid; the message names key, value and what is allowed."""


class ModelLoadError(MrMllmError, RuntimeError):
    """Model weights are missing, corrupt or incompatible with the configuration."""


class BackendError(MrMllmError, RuntimeError):
    """A model backend failed at run time (inference error, server unreachable, timeout)."""


class BagError(MrMllmError, RuntimeError):
    """A bag (or part of it) cannot be read or written."""


def reason_key(message: str) -> str:
    """A stable counting key for an error message: its first line with numbers replaced,
    'step 1919 is smaller than ...' -> 'step N is smaller than ...', '640x480' -> 'NxN';
    digits inside words (rgb8, mono16) stay. The nodes' /diagnostics and replay's
    reports count rejected inputs by it."""
    first = message.split('\n', 1)[0]
    return re.sub(r'\b\d+\b', 'N', re.sub(r'\b\d+x\d+\b', 'NxN', first))[:120]
