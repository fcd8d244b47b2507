"""MLLM backends behind one protocol (`MllmBackend`), chosen by mllm.backend."""

from __future__ import annotations

from ..config import Config
from .base import ChatMessage, MllmBackend, MllmRequest

__all__ = ['ChatMessage', 'MllmBackend', 'MllmRequest', 'create_backend']


def create_backend(config: Config) -> MllmBackend | None:
    """Load the configured backend (None for backend 'none'); ModelLoadError when the
    weights are missing. Heavy imports happen only for the chosen backend."""
    backend = config.mllm.backend
    if backend == 'none':
        return None
    if backend == 'transformers_llm':
        from .transformers_llm import TransformersLlmBackend
        return TransformersLlmBackend(config)
    if backend == 'transformers_vlm':
        from .transformers_vlm import TransformersVlmBackend
        return TransformersVlmBackend(config)
    if backend == 'template':
        from .template_backend import TemplateBackend
        return TemplateBackend(config)
    if backend == 'llama_cpp':
        from .llama_cpp_backend import LlamaCppBackend
        return LlamaCppBackend(config)
    if backend == 'openai':
        from .openai_backend import OpenAiBackend
        return OpenAiBackend(config)
    raise ValueError(f'unknown mllm backend {backend!r}')  # config validation prevents it
