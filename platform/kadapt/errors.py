"""kadapt's error hierarchy.

Every error a user can cause is a :class:`KadaptError` with an HTTP status. Messages name the bad value
and the fix. They are converted only at the edges: a JSON body in the API, one clean line and exit code 1
in the CLI.
"""

from __future__ import annotations

__all__ = [
    "KadaptError",
    "NotFound",
    "AlreadyExists",
    "InvalidInput",
    "PermissionDenied",
    "PluginError",
    "DocumentLoadError",
    "ConfigError",
    "KBTooLarge",
    "RetryLater",
    "TooManyJobs",
    "ChatQueueFull",
    "JobStillRunning",
    "KBBusy",
    "error_body",
]


class KadaptError(Exception):
    """Base of every error kadapt reports to a user."""

    status_code: int = 400
    code: str = "kadapt_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the API and the console send with this error (none unless a subclass says)."""
        return {}


class NotFound(KadaptError):
    status_code = 404
    code = "not_found"


class AlreadyExists(KadaptError):
    status_code = 409
    code = "already_exists"


class InvalidInput(KadaptError):
    status_code = 422
    code = "invalid_input"


class PermissionDenied(KadaptError):
    status_code = 403
    code = "permission_denied"


class ConfigError(KadaptError):
    status_code = 500
    code = "config_error"


class PluginError(KadaptError):
    status_code = 500
    code = "plugin_error"


class DocumentLoadError(KadaptError):
    """A single document could not be read or parsed; the sync records it and goes on."""

    status_code = 422
    code = "document_error"


class KBTooLarge(KadaptError):
    """A KB is larger than a mode accepts (``KADAPT_MAX_KB_TOKENS_*``); the message names its size, the
    limit and the setting."""

    status_code = 413
    code = "kb_too_large"


class RetryLater(KadaptError):
    """A refusal that passes: the request can be made again after ``retry_after`` seconds, which the API and
    the console send as ``Retry-After``."""

    default_retry_after = 30

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = self.default_retry_after if retry_after is None else retry_after

    @property
    def headers(self) -> dict[str, str]:
        """Response headers the API and the console send with this error."""
        return {"Retry-After": str(self.retry_after)}


class TooManyJobs(RetryLater):
    """Another job would exceed ``KADAPT_MAX_CONCURRENT_JOBS``; it can be submitted again once one finishes."""

    status_code = 429
    code = "too_many_jobs"


class ChatQueueFull(RetryLater):
    """The server holds as many chats as ``KADAPT_MAX_CHAT_QUEUE`` allows (or the key as many as
    ``KADAPT_MAX_CHAT_PER_KEY``); the chat can be sent again after Retry-After."""

    status_code = 429
    code = "chat_queue_full"
    default_retry_after = 5


class KBBusy(RetryLater):
    """A KB's lock is held (a sync runs, or a deletion or source removal is under way): the request can be
    made again once it is done. The message names the job."""

    status_code = 409
    code = "kb_busy"


class JobStillRunning(KadaptError):
    """A resume of a job whose attempt is alive (its heartbeat is fresh): two copies would race."""

    status_code = 409
    code = "job_still_running"


# the OpenAI-style type of an error body, per HTTP status
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict:
    """The body of an error response on every HTTP surface: ``{"error": {"message", "type", "param", "code"}}``."""
    return {
        "error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param, "code": code}
    }
