"""MLLM backends behind one protocol (`MllmBackend`), chosen by mllm.backend."""

from __future__ import annotations

from ..config import Config
from ..runtime.lazy_import import load_class
from .backend import ChatMessage, MllmBackend, MllmRequest

__all__ = ['ChatMessage', 'MllmBackend', 'MllmRequest', 'create_backend']

#: mllm.backend -> 'module:Class' in this package ('none': no backend)
BACKENDS = {'transformers_llm': 'transformers_llm:TransformersLlmBackend',
            'transformers_vlm': 'transformers_vlm:TransformersVlmBackend',
            'template': 'template_backend:TemplateBackend',
            'llama_cpp': 'llama_cpp_backend:LlamaCppBackend',
            'openai': 'openai_backend:OpenAiBackend'}


def create_backend(config: Config) -> MllmBackend | None:
    """Load the configured backend (None for backend 'none'); ModelLoadError when the
    weights are missing. Heavy imports happen only for the chosen backend."""
    if config.mllm.backend == 'none':
        return None
    return load_class(__package__, BACKENDS, config.mllm.backend)(config)
