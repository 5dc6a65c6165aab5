"""The ``openai`` model backend: any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, a hosted API).

Models are named ``openai:<model>``; the server is ``KADAPT_OPENAI_BASE_URL`` with ``KADAPT_OPENAI_API_KEY``.
The ``lora-server`` backend is the same client pointed at ``KADAPT_LORA_SERVER_URL``, the multi-LoRA server
(vLLM ``--enable-lora``) that serves each KB's adapter under the KB's name: ``lora-server:<kb>``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import contextmanager

import openai

from kadapt.contracts import hookimpl
from kadapt.errors import ConfigError, KadaptError
from kadapt.models.base import ChatMessage, Completion, GenerationParams, ScoringNotSupported

__all__ = ["LoRAServerBackend", "ModelServerError", "OpenAIBackend", "OpenAIModel"]


class ModelServerError(KadaptError):
    """The OpenAI-compatible server failed a request (unreachable, unknown model, server error)."""

    status_code = 502
    code = "model_server_error"


def _server_error(model: str, base_url: str, exc: openai.APIError) -> ModelServerError:
    detail = exc.message
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = f"{exc.status_code} {body.get('message') or body.get('detail') or exc.message}"
    return ModelServerError(f"the model server at {base_url} failed on model {model!r}: {detail}")


class OpenAIModel:
    def __init__(self, model: str, base_url: str, api_key: str, context_window: int = 8192) -> None:
        self.model_id = model
        self.base_url = base_url
        self.context_window = context_window
        self._async = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=2)
        self._sync = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=2)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        # The server tokenizes; ~4 characters a token is the usual estimate for budgeting before sending.
        return sum(len(message["content"]) for message in messages) // 4 + 4 * len(messages)

    def _options(self, params: GenerationParams) -> dict:
        options = {"max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p}
        if params.stop:
            options["stop"] = list(params.stop)
        if params.seed is not None:
            options["seed"] = params.seed
        return options

    @staticmethod
    def _completion(response) -> Completion:
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason or "stop",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    @contextmanager
    def _errors(self):
        try:
            yield
        except openai.APIError as exc:
            raise _server_error(self.model_id, self.base_url, exc) from exc

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        with self._errors():
            response = await self._async.chat.completions.create(
                model=self.model_id, messages=list(messages), **self._options(params)
            )
        return self._completion(response)

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str | Completion]:
        pieces, finish_reason, usage = [], "stop", None
        with self._errors():
            response = await self._async.chat.completions.create(
                model=self.model_id,
                messages=list(messages),
                stream=True,
                stream_options={"include_usage": True},
                **self._options(params),
            )
            async for chunk in response:
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.choices:
                    if chunk.choices[0].finish_reason:
                        finish_reason = chunk.choices[0].finish_reason
                    if chunk.choices[0].delta.content:
                        pieces.append(chunk.choices[0].delta.content)
                        yield chunk.choices[0].delta.content
        yield Completion(
            text="".join(pieces),
            finish_reason=finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )

    def generate_batch(
        self, conversations: Sequence[Sequence[ChatMessage]], params: GenerationParams
    ) -> list[Completion]:
        from concurrent.futures import ThreadPoolExecutor

        def one(messages):
            with self._errors():
                response = self._sync.chat.completions.create(
                    model=self.model_id, messages=list(messages), **self._options(params)
                )
            return self._completion(response)

        with ThreadPoolExecutor(max_workers=8) as pool:  # the server batches concurrent requests itself
            return list(pool.map(one, conversations))

    def score_choices(self, prompt: str, choices: Sequence[str]) -> list[float]:
        raise ScoringNotSupported("OpenAI-compatible chat servers do not return prompt log-likelihoods")


class OpenAIBackend:
    name = "openai"
    description = "Any OpenAI-compatible server, at KADAPT_OPENAI_BASE_URL: models named 'openai:<model>'."
    url_setting = "openai_base_url"
    key_setting = "openai_api_key"

    def open(self, model: str, settings) -> OpenAIModel:
        base_url = getattr(settings, self.url_setting)
        if not base_url:
            raise ConfigError(
                f"model '{self.name}:{model}' needs KADAPT_{self.url_setting.upper()} (e.g. http://vllm:8000/v1)"
            )
        secret = getattr(settings, self.key_setting)
        return OpenAIModel(model, base_url, secret.get_secret_value() if secret else "none")


class LoRAServerBackend(OpenAIBackend):
    name = "lora-server"
    description = (
        "The multi-LoRA server at KADAPT_LORA_SERVER_URL (vLLM --enable-lora): 'lora-server:<kb>' is the KB's adapter."
    )
    url_setting = "lora_server_url"
    key_setting = "lora_server_api_key"


@hookimpl
def register_models(register):
    register(OpenAIBackend())
    register(LoRAServerBackend())
