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
                backends = self.plugins.contributions("register_models")
                backend_name, model_name = split_model_spec(spec, backends)
                if backend_name not in backends:
                    raise NotFound(
                        f"no model backend {backend_name!r} for model {spec!r}; installed: "
                        f"{', '.join(sorted(backends)) or 'none'} (see `kadapt plugins`)"
                    )
                try:
                    self._models[spec] = backends[backend_name].open(model_name, self.settings)
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
