"""What the owner API's routes ask for, as FastAPI dependencies: the operations (on `app.state`, put
there by memfs.http.app.create_app), the readiness check, and a path on the owner's machine.

The token is not here: the Guard (memfs.http.guard) checks it before the body is read.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..local import LocalOperations
from .errors import ApiError
from .guard import on_unix_socket


async def operations(request: Request) -> LocalOperations:
    """The operations the app serves (async: a sync dependency costs a thread hop per request)."""
    return request.app.state.ops


Ops = Annotated[LocalOperations, Depends(operations)]


async def ready(request: Request) -> None:
    """503 not_ready while the owner's startup reconcile runs."""
    if not request.app.state.ops.owner.ready:
        raise ApiError(503, "not_ready", "the startup reconcile is still running; try again shortly")


GUARDED = [Depends(ready)]  # the routes that wait for the startup reconcile


def local_path(request: Request, value: str | None) -> str | None:
    """A path on the owner's machine (another backup directory, an archive by path) is taken only
    over the Unix socket, from a local user; over TCP, backups are named within backups/."""
    if value is not None and not on_unix_socket(request.scope):
        raise ApiError(422, "bad_request", "paths on the server are accepted only over its Unix socket; "
                                           "name a backup in its backups/ directory instead")
    return value
