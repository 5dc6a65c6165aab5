"""Request bodies of the API, and the error body every route may answer with (other responses are plain JSON
documented in the route docstrings)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["ERROR_RESPONSES", "ChatMessageIn", "ChatRequest", "ErrorResponse", "KBCreate", "SourceCreate"]


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


class ChatRequest(BaseModel):
    """OpenAI's chat completions request; ``model`` names a KB. Unknown OpenAI fields are ignored."""

    # strict: `"top_p": true` or `"max_tokens": "8"` is refused, as the schema says, instead of read as 1.0 or 8
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str = Field(description="The KB to answer from (see GET /v1/models).")
    messages: list[ChatMessageIn] = Field(
        min_length=1, description="The conversation; the last user message is the question."
    )
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 (the default here) is greedy decoding.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1, description="Only one choice per request is supported.")
    stream_options: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value


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
    schedule: str | None = None
