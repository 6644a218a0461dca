"""JSON error bodies with DeepSeek's status codes, and the exception handlers that produce them.

Every failure leaves the server as `{"error": {"message", "type", "param", "code"}}` with the documented
status: 400 malformed body, 401 bad key, 402 quota exhausted, 422 out-of-range parameter, 429 rate limit,
500 server error, 503 overloaded. Stack traces are logged, never sent. The Anthropic-compatible routes
get the same object with Anthropic's outer `"type": "error"` added, so both SDKs read it.

    from nanoseek.api.errors import APIError, install_error_handlers
    raise APIError(422, "temperature must be in [0, 2]", param="temperature")
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("nanoseek.api")

ERROR_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request_error"),
    401: ("authentication_error", "invalid_api_key"),
    402: ("insufficient_balance_error", "insufficient_balance"),
    403: ("permission_error", "forbidden"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    408: ("invalid_request_error", "request_timeout"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    422: ("invalid_request_error", "invalid_parameter"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "server_error"),
    503: ("server_overloaded", "server_overloaded"),
}

# pydantic error kinds that mean "the value has the right type but lies outside the allowed range":
# DeepSeek answers those with 422 Invalid Parameters; everything else about the body shape is 400.
RANGE_ERROR_KINDS = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "too_long",
    "too_short",
    "multiple_of",
    "string_too_long",
    "string_too_short",
    "list_too_long",
    "enum",
    "literal_error",
    "value_error",
}


class APIError(Exception):
    """An error with an HTTP status that the handlers turn into the JSON error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None, anthropic: bool = False
) -> dict[str, Any]:
    error_type, default_code = ERROR_TYPES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", "error")
    )
    body: dict[str, Any] = {
        "error": {"message": message, "type": error_type, "param": param, "code": code or default_code}
    }
    if anthropic:
        body["type"] = "error"
    return body


def error_response(
    request: Request | None,
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    anthropic = request is not None and request.url.path.startswith("/anthropic")
    return JSONResponse(error_body(status, message, param, code, anthropic), status_code=status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts)


def describe_validation_errors(errors: list[dict[str, Any]]) -> tuple[int, str, str | None]:
    """Turn pydantic's error list into (status, one readable message, the first offending parameter)."""
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
        return 400, f"Invalid JSON in request body: {detail}".rstrip(": "), None
    status = 422 if all(e.get("type") in RANGE_ERROR_KINDS for e in errors) else 400
    shown = []
    for e in errors[:5]:
        where = _location(tuple(e.get("loc", ())))
        msg = str(e.get("msg", "invalid value"))
        shown.append(f"{where}: {msg}" if where else msg)
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    param = _location(tuple(errors[0].get("loc", ()))) if errors else None
    return status, "; ".join(shown) + more, param or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(request, exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, param = describe_validation_errors(list(exc.errors()))
        return error_response(request, status, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 400 and "parsing the body" in message:
            # the framework does not say why; these are the two ways a body json.loads rejects gets here
            message = (
                "Invalid request body: it could not be parsed; it must be UTF-8 encoded JSON nested no deeper "
                "than a few hundred levels"
            )
        return error_response(request, exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(request, 500, "Internal server error; the details are in the server log.")
