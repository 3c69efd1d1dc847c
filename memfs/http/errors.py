"""Errors as JSON, for every HTTP app memfs serves: `{"error": {"code": "not_found", "message": "…"}}`.

The code names the memfs.errors class, so memfs.remote raises the same exception the in-process path
raises. `install_error_handlers` is the one set of exception handlers; an `ErrorStyle` says how an app
words them (the owner's API, or the extended-memory service's shape with `detail` beside `error`).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import InternalError, MemfsError, relative_to_root

log = logging.getLogger("memfs.http")

HTTP_CODES = {404: "no_route", 405: "method_not_allowed", 408: "timeout", 413: "too_large", 431: "too_large"}


class ApiError(Exception):
    """A refusal a route raises itself (not an operation's MemfsError): status, code, message."""

    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message


class OrjsonResponse(JSONResponse):
    """orjson instead of the stdlib encoder; results are already plain dicts (Result.to_dict)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def error_response(status: int, code: str, message: str, *, close: bool = False,
                   detail: bool = False) -> JSONResponse:
    """The JSON error. `close`: `Connection: close` on a refusal whose body was not read, so the server
    drops the connection instead of reading (and discarding) the rest of, say, a 100 MB upload.
    `detail`: the extended-memory service's `{"detail": message}` beside memfs's `error`."""
    body = {"detail": message} if detail else {}
    body["error"] = {"code": code, "message": message}
    return JSONResponse(body, status_code=status, headers={"connection": "close"} if close else None)


@dataclass(frozen=True)
class ErrorStyle:
    """How an app words its errors.

    `bad_request`: the status of a refused input (422; the extended-memory service answers 400).
    `detail`: the service's `detail` beside `error`. `close_unread`: `Connection: close` on a 408 or
    413 (the body was not read). `roots`: the store's root as paths may name it; no absolute path of
    the store is in a response (#15): messages name files from its root."""

    bad_request: int = 422
    detail: bool = False
    close_unread: bool = True
    roots: tuple[str, ...] = ()

    def response(self, status: int, code: str, message: str, close: bool = False) -> JSONResponse:
        return error_response(status, code, message, close=close, detail=self.detail)


def invalid_message(e: RequestValidationError) -> str:
    """The first complaint: a schema check in the core's words (memfs.inputs) as they are, else where: what."""
    first = e.errors()[0] if e.errors() else {}
    if first.get("type") == "value_error":
        return str(first.get("msg", "")).removeprefix("Value error, ")
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}"


def unexpected(request: Request, e: Exception) -> InternalError:
    """An unexpected exception, logged with its traceback under an error id the answer names."""
    error_id = secrets.token_hex(4)
    log.error("unexpected error %s in %s %s", error_id, request.method, request.url.path, exc_info=e)
    return InternalError(f"unexpected error ({type(e).__name__}); the owner's log (data/logs/) has the "
                         f"details under error id {error_id}")


def install_error_handlers(app: FastAPI, style: ErrorStyle) -> None:
    """Every failure of `app` answered as JSON, in `style`'s words."""

    @app.exception_handler(ApiError)
    async def on_api_error(request, e: ApiError):
        return style.response(e.status, e.code, e.message)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request, e: RequestValidationError):
        return style.response(style.bad_request, "bad_request", invalid_message(e))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request, e: StarletteHTTPException):
        close = style.close_unread and e.status_code in (408, 413)
        return style.response(e.status_code, HTTP_CODES.get(e.status_code, "http_error"), str(e.detail), close)

    @app.exception_handler(MemfsError)
    async def on_memfs_error(request, e: MemfsError):
        status = style.bad_request if e.http_status == 422 else e.http_status
        return style.response(status, e.code, relative_to_root(str(e), list(style.roots)))

    @app.exception_handler(Exception)
    async def on_unexpected(request, e: Exception):
        err = unexpected(request, e)
        return style.response(err.http_status, err.code, str(err))
