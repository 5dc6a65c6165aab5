"""Any kadapt model as a langchain-core ``BaseChatModel``, so chains and augmenters take whichever model
is configured (local transformers or an OpenAI-compatible server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from kadapt.models.base import Completion, GenerationParams

__all__ = ["KadaptChatModel"]

_ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def _messages(messages: list[BaseMessage]) -> list[dict[str, str]]:
    return [{"role": _ROLES.get(message.type, "user"), "content": str(message.content)} for message in messages]


class KadaptChatModel(BaseChatModel):
    """Wraps a loaded kadapt model (see ``kadapt.models.get_model_pool().get(spec)``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any = Field(description="A loaded kadapt model.")
    max_tokens: int = 256
    temperature: float = 0.0

    @property
    def _llm_type(self) -> str:
        return "kadapt"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": getattr(self.model, "model_id", "?"), "max_tokens": self.max_tokens}

    def _params(self, stop: list[str] | None) -> GenerationParams:
        return GenerationParams(max_tokens=self.max_tokens, temperature=self.temperature, stop=tuple(stop or ()))

    def _result(self, completion: Completion) -> ChatResult:
        usage = {
            "input_tokens": completion.prompt_tokens,
            "output_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        }
        message = AIMessage(
            content=completion.text, usage_metadata=usage, response_metadata={"finish_reason": completion.finish_reason}
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        completion = self.model.generate_batch([_messages(messages)], self._params(stop))[0]
        return self._result(completion)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(await self.model.generate(_messages(messages), self._params(stop)))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        async for piece in self.model.stream(_messages(messages), self._params(stop)):
            if isinstance(piece, Completion):
                continue
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                await run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        async def collect() -> list[ChatGenerationChunk]:
            return [chunk async for chunk in self._astream(messages, stop, None, **kwargs)]

        # the engine streams through an event loop; a sync caller gets the chunks once they are all in
        yield from asyncio.run(collect())
