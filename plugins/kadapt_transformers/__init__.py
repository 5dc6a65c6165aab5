"""The ``transformers`` model backend (default): local Hugging Face models, SmolLM2-135M-Instruct built in."""

from __future__ import annotations

from kadapt.contracts import hookimpl

__all__ = ["TransformersBackend"]


class TransformersBackend:
    name = "transformers"
    description = "Local transformers models: 'smollm2-135m' (packaged), a Hugging Face id or a local folder."

    def open(self, model: str, settings):
        from kadapt_transformers._loading import resolve_model_path
        from kadapt_transformers.engine import TransformersModel, default_threads

        path = resolve_model_path(model, settings.effective_models_dir)
        return TransformersModel(
            path,
            model,
            max_batch_size=settings.max_batch_size,
            threads=settings.torch_threads or default_threads(),
            precision=settings.precision,
            loop_stop_tokens=settings.loop_stop_tokens,
            continuous=settings.continuous_batching,
            prefix_cache_mb=settings.prefix_cache_mb,
        )

    def local_path(self, model: str, settings) -> str:
        """The local folder of ``model``'s weights and tokenizer (the packaged model converted on first use)."""
        from kadapt_transformers._loading import resolve_model_path

        return str(resolve_model_path(model, settings.effective_models_dir))

    def hub_id(self, model: str) -> str:
        """The Hugging Face id of ``model`` (an alias resolves to its id)."""
        from kadapt_transformers._loading import ALIASES, HUB_ID

        return HUB_ID if model in ALIASES else model


@hookimpl
def register_models(register):
    register(TransformersBackend())
