"""Model backends and the process-wide model pool.

A KB's ``base_model`` names a model as ``[backend:]model``; without a backend prefix the
``transformers`` backend is used. Each model is loaded once per process and shared by all requests.
"""

from __future__ import annotations

import threading

from kadapt.errors import ConfigError, NotFound
from kadapt.models.base import ChatMessage, Completion, GenerationParams, Model, ModelBackend, ScoringNotSupported

__all__ = [
    "ChatMessage",
    "Completion",
    "GenerationParams",
    "Model",
    "ModelBackend",
    "ModelPool",
    "ScoringNotSupported",
    "get_model_pool",
    "hub_id",
    "local_model_path",
    "split_model_spec",
]

DEFAULT_BACKEND = "transformers"


def split_model_spec(spec: str, backends) -> tuple[str, str]:
    """``"openai:gpt-4o-mini"`` -> ("openai", "gpt-4o-mini"); ``"smollm2-135m"`` -> ("transformers", ...)."""
    prefix, _, rest = spec.partition(":")
    if rest and prefix in backends:
        return prefix, rest
    return DEFAULT_BACKEND, spec


class ModelPool:
    """One loaded instance per model spec, created on first use under a lock."""

    def __init__(self, settings, plugins) -> None:
        self.settings = settings
        self.plugins = plugins
        self._models: dict[str, Model] = {}
        self._lock = threading.Lock()

    def get(self, spec: str) -> Model:
        model = self._models.get(spec)
        if model is not None:
            return model
        with self._lock:
            if spec not in self._models:
                backend, model_name = _backend(spec, self.plugins)
                try:
                    self._models[spec] = backend.open(model_name, self.settings)
                except (OSError, ValueError) as exc:
                    raise ConfigError(f"cannot load model {spec!r}: {exc}") from exc
            return self._models[spec]

    def loaded(self) -> dict[str, Model]:
        return dict(self._models)

    def close(self) -> None:
        for model in self._models.values():
            close = getattr(model, "close", None)
            if close is not None:
                close()
        self._models.clear()


_pools: dict[int, ModelPool] = {}


def get_model_pool() -> ModelPool:
    """The process-wide pool for the current settings and plugins."""
    from kadapt.plugins import get_plugins
    from kadapt.settings import get_settings

    plugins = get_plugins()
    key = id(plugins)
    if key not in _pools:
        _pools[key] = ModelPool(get_settings(), plugins)
    return _pools[key]


def _backend(spec: str, plugins=None) -> tuple[ModelBackend, str]:
    from kadapt.plugins import get_plugins, pick

    backends = (plugins or get_plugins()).contributions("register_models")
    backend_name, model_name = split_model_spec(spec, backends)
    backend = pick(
        backends,
        backend_name,
        "model backend",
        about=f" for model {spec!r}",
        hint=" (see `kadapt plugins`)",
        error=NotFound,
    )
    return backend, model_name


def local_model_path(spec: str, settings, plugins=None) -> str | None:
    """The local folder of model ``spec``'s weights and tokenizer, or None when its backend serves it from
    elsewhere (an OpenAI-compatible server)."""
    backend, model_name = _backend(spec, plugins)
    local_path = getattr(backend, "local_path", None)
    return local_path(model_name, settings) if local_path is not None else None


def hub_id(spec: str, plugins=None) -> str:
    """The Hugging Face id of model ``spec`` (an alias resolves to its id): the name a model server such as vLLM
    serves it under, and the ``base_model_name_or_path`` of its adapters."""
    backend, model_name = _backend(spec, plugins)
    resolve = getattr(backend, "hub_id", None)
    return resolve(model_name) if resolve is not None else model_name
