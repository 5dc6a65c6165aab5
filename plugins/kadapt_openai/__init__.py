"""The ``openai`` model backend: any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, a hosted API).

Models are named ``openai:<model>``; the server is ``KADAPT_OPENAI_BASE_URL`` with ``KADAPT_OPENAI_API_KEY``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import openai

from kadapt.errors import ConfigError
from kadapt.hookspecs import hookimpl
from kadapt.models.base import ChatMessage, Completion, GenerationParams, ScoringNotSupported

__all__ = ["OpenAIBackend", "OpenAIModel"]


class OpenAIModel:
    def __init__(self, model: str, base_url: str, api_key: str, context_window: int = 8192) -> None:
        self.model_id = model
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

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> Completion:
        response = await self._async.chat.completions.create(
            model=self.model_id, messages=list(messages), **self._options(params)
        )
        return self._completion(response)

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[str | Completion]:
        response = await self._async.chat.completions.create(
            model=self.model_id,
            messages=list(messages),
            stream=True,
            stream_options={"include_usage": True},
            **self._options(params),
        )
        pieces, finish_reason, usage = [], "stop", None
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

    def open(self, model: str, settings) -> OpenAIModel:
        if not settings.openai_base_url:
            raise ConfigError(f"model 'openai:{model}' needs KADAPT_OPENAI_BASE_URL (e.g. http://vllm:8000/v1)")
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "none"
        return OpenAIModel(model, settings.openai_base_url, key)


@hookimpl
def register_models(register):
    register(OpenAIBackend())
