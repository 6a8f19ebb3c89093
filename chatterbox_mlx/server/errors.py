"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``.

Every refusal of the server is an :class:`APIError`; the handlers installed by
:func:`install_handlers` turn it, FastAPI's own 404/405s and any unexpected exception into
that JSON shape (an unexpected exception is logged with its traceback on the server side;
the client gets one line, never a traceback).
"""

from __future__ import annotations

import logging
import reprlib

logger = logging.getLogger("chatterbox_mlx.server")

# status -> OpenAI's error type for it
TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    403: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    421: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict = 2, 4, 4


def shown(value) -> str:
    """``repr(value)`` cut short (a message never echoes a long value back whole)."""
    return _SHORT.repr(value)


class APIError(Exception):
    """A request the server refuses: status, a message naming the problem and the fix,
    the request field it concerns (``param``) and a short machine-readable ``code``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None):
    return {
        "error": {
            "message": message,
            "type": TYPES.get(status, "invalid_request_error" if status < 500 else "server_error"),
            "param": param,
            "code": code,
        }
    }


def install_handlers(app) -> None:
    """Turn every error into the OpenAI shape (see the module docstring)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect

    from .logs import throttled

    def respond(status: int, body: dict, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(APIError)
    async def _api_error(request, err: APIError):
        return respond(err.status, err.body(), err.headers)

    @app.exception_handler(HTTPException)
    async def _http_error(request, err: HTTPException):
        if err.status_code == 404:
            message = (
                f"no such endpoint: {request.method} {request.url.path}; see GET / for the "
                "web page and the README's endpoint table"
            )
            code = "not_found"
        elif err.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
            code = "method_not_allowed"
        else:
            message, code = str(err.detail), None
        return respond(
            err.status_code,
            error_body(err.status_code, message, code=code),
            getattr(err, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, err: RequestValidationError):
        problems = err.errors()
        first = problems[0] if problems else {}
        where = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = where[-1] if where else None
        message = f"{'.'.join(where) or 'request'}: {first.get('msg', 'invalid')}"
        return respond(400, error_body(400, message, param, "invalid_value"))

    @app.exception_handler(ClientDisconnect)
    async def _client_left(request, err: ClientDisconnect):
        throttled(
            logger,
            logging.INFO,
            ("client left mid-request", request.url.path),
            "a client left while sending its request to %s %s",
            request.method,
            request.url.path,
        )
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(request, err: Exception):
        throttled(
            logger,
            logging.ERROR,
            ("internal error", request.url.path, type(err).__name__),
            "internal error on %s %s",
            request.method,
            request.url.path,
            exc_info=(type(err), err, err.__traceback__),
        )
        message = f"internal server error ({type(err).__name__}); the server log has the details"
        return respond(500, error_body(500, message, code="internal_error"))
