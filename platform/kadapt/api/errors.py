"""Every error leaves the API as an OpenAI-style body: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from kadapt.errors import KadaptError, error_body

__all__ = ["body_too_large", "install_error_handlers"]

log = logging.getLogger("kadapt.api")


def body_too_large(limit: int) -> dict:
    return error_body(
        413,
        f"the request body is larger than the limit of {limit:,} bytes (KADAPT_MAX_REQUEST_BYTES); send less",
        code="request_too_large",
    )


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    problems, param = [], None
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        where = ".".join(location)
        if error.get("type") == "json_invalid":
            return f"the request body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})", None
        param = param or where or None
        problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "invalid request: " + "; ".join(problems), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(KadaptError)
    async def kadapt_error(request: Request, exc: KadaptError) -> JSONResponse:
        status = 400 if exc.status_code == 422 else exc.status_code
        headers = exc.headers or None  # e.g. Retry-After on 429
        return JSONResponse(error_body(status, exc.message, code=exc.code), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _describe_validation(exc)
        return JSONResponse(error_body(400, message, code="invalid_request", param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 413:  # the body outgrew the limit while it was being read
            return JSONResponse(body_too_large(request.app.state.settings.max_request_bytes), status_code=413)
        return JSONResponse(
            error_body(exc.status_code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(DataError)
    async def unstorable_value(request: Request, exc: DataError) -> JSONResponse:
        # a value the catalog's database refuses (out of its column's range, a character it cannot hold):
        # the request's fault, and nothing was written (the session rolled back)
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "invalid value"
        log.warning("refused value on %s %s: %s", request.method, request.url.path, reason)
        return JSONResponse(error_body(400, f"a value in this request cannot be stored: {reason}"), status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body(500, "internal error; see the server log"), status_code=500)
