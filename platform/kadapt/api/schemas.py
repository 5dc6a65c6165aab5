"""Request bodies of the API, and the error body every route may answer with (other responses are plain JSON
documented in the route docstrings)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ERROR_RESPONSES",
    "ChatMessageIn",
    "ChatRequest",
    "ErrorResponse",
    "JsonBody",
    "KBCreate",
    "SourceCreate",
]


class JsonBody(BaseModel):
    """A request body read with JSON's types, as its schema states them: strict, so that `true` or `"8"` is
    no number (pydantic would read them as 1 and 8), except that 8.0 is the integer 8, as in JSON Schema."""

    model_config = ConfigDict(strict=True)

    @model_validator(mode="before")
    @classmethod
    def _integral_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {
            name: int(value)
            if isinstance(value, float)
            and value.is_integer()
            and name in fields
            and int in (get_args(fields[name].annotation) or (fields[name].annotation,))
            else value
            for name, value in data.items()
        }


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong and how to fix it.")
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, ...")
    param: str | None = Field(default=None, description="The request field at fault, if one is.")
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape, used by every error the API returns."""

    error: ErrorDetail


# declared on every route: a refused request (bad input, no or wrong key, a hidden KB, a limit) is a 4xx error
# body; FastAPI's default 422 is never sent, a validation error answers 400
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorResponse, "description": "The request was refused; the message says why."}
}


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = ""

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type", "text") == "text")
        return self.content or ""


class ChatRequest(JsonBody):
    """OpenAI's chat completions request; ``model`` names a KB. Unknown OpenAI fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="The KB to answer from (see GET /v1/models).")
    messages: list[ChatMessageIn] = Field(
        min_length=1, description="The conversation; the last user message is the question."
    )
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 (the default here) is greedy decoding.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = Field(
        default=None, description="Up to 4 sequences that end the answer."
    )
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1, description="Only one choice per request is supported.")
    stream_options: dict[str, Any] | None = None


class KBCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: str = Field(description="Short name, e.g. 'hr-policies'.")
    title: str = ""
    base_model: str | None = None
    reader_groups: list[str] = Field(default_factory=list)
    owner_groups: list[str] | None = Field(default=None, description="Defaults to the creating editor's groups.")


class SourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="Connector kind: files, git, web, or one a plugin adds.")
    config: dict[str, Any] = Field(default_factory=dict, description="The connector's options.")
    schedule: str | None = Field(
        default=None, max_length=100, description="Sync schedule: a cron expression ('0 3 * * *') or '@daily'."
    )


class SourceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedule: str | None = Field(
        max_length=100, description="Sync schedule: a cron expression ('0 3 * * *'), '@daily', or null for none."
    )
