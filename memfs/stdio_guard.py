"""The guard in front of `memfs mcp`'s stdio (#19): every line the client sends is checked before the
MCP SDK reads it, and a line it refuses gets a JSON-RPC error reply naming what is wrong.

Over stdio the SDK took NaN and Infinity (stored as null), and a lone surrogate, 10,000-deep nesting,
or a line that is not UTF-8 got no reply at all (the client waited forever) or U+FFFD in place of the
bytes; a 2^70 integer got a bare "Error executing tool". Here such a line is answered at once with
code -32700 and the reason; the server goes on serving. The rules are the memory files' own
(memfs.inputs): strict JSON, valid UTF-8 and Unicode, integers within 64 bits.

How: two pipes stand between the process's stdin/stdout and the SDK. A thread reads the real stdin
line by line and passes good lines on; another copies the SDK's replies to the real stdout, whole
lines, under the same lock as the refusals, so two replies never interleave.
"""

from __future__ import annotations

import json
import os
import re
import select
import threading
from typing import Any, BinaryIO

from .inputs import MAX_INT, MIN_INT, is_unicode

MAX_DEPTH = 64  # a JSON-RPC message's nesting; metadata's own limit (inputs.MAX_METADATA_DEPTH) is 32
_ID = re.compile(rb'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")')


class Refused(ValueError):
    pass


def _constant(name: str):
    raise Refused(f"{name} is not a JSON number (memfs takes strict JSON); send a string or null")


def _integer(text: str) -> int:
    value = int(text)
    if not MIN_INT <= value <= MAX_INT:
        raise Refused(f"integer {text[:30]} is beyond 64 bits; send it as a string")
    return value


def _walk(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise Refused(f"nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        if not is_unicode(value):
            raise Refused("text with a lone surrogate (such as \\ud800) is not valid Unicode")
    elif isinstance(value, dict):
        for k, v in value.items():
            _walk(k, depth + 1)
            _walk(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _walk(v, depth + 1)


def refusal(raw: bytes) -> str | None:
    """Why this line cannot be an MCP message memfs takes, or None if it can."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"the line is not valid UTF-8 (byte {e.start})"
    try:
        _walk(json.loads(text, parse_constant=_constant, parse_int=_integer), 0)
    except Refused as e:
        return str(e)
    except RecursionError:
        return f"nested more than {MAX_DEPTH} levels deep"
    except ValueError as e:
        return f"not JSON ({e})"
    return None


def error_reply(raw: bytes, why: str) -> bytes:
    """A JSON-RPC parse error for the refused line, under its id when one can be read from it."""
    m = _ID.search(raw[:4096])
    msg_id = None
    if m:
        try:
            msg_id = json.loads(m.group(1))
        except ValueError:
            msg_id = None
    message = (f"memfs refused the request: {why}. Send one JSON-RPC message per line, strict JSON: valid "
               "UTF-8, no NaN or Infinity, integers within 64 bits")
    body = {"jsonrpc": "2.0", "id": msg_id, "error": {"code": -32700, "message": message}}
    return json.dumps(body, ensure_ascii=False).encode() + b"\n"


class StdioGuard:
    """`with StdioGuard(): server.run("stdio")`: the SDK reads and writes fds 0 and 1 as usual."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop_r, self._stop_w = -1, -1  # written to once the SDK is done: copy what is left, end

    def __enter__(self) -> "StdioGuard":
        self._real_in, self._real_out = os.dup(0), os.dup(1)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        self._stop_r, self._stop_w = os.pipe()
        os.dup2(in_r, 0)
        os.dup2(out_w, 1)
        os.close(in_r)
        os.close(out_w)
        self._out = os.fdopen(self._real_out, "wb")
        for target, args in ((self._pump_in, (os.fdopen(self._real_in, "rb"), os.fdopen(in_w, "wb"))),
                             (self._pump_out, (out_r,))):
            t = threading.Thread(target=target, args=args, name=f"memfs-mcp-{target.__name__[6:]}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def _write(self, line: bytes) -> None:
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def _pump_in(self, real_in: BinaryIO, to_sdk: BinaryIO) -> None:
        with real_in, to_sdk:
            for raw in real_in:
                if not raw.strip():
                    continue
                why = refusal(raw)
                if why is not None:
                    self._write(error_reply(raw, why))
                    continue
                try:
                    to_sdk.write(raw if raw.endswith(b"\n") else raw + b"\n")
                    to_sdk.flush()
                except BrokenPipeError:  # the SDK has stopped reading: the session is over
                    return

    def _pump_out(self, from_sdk: int) -> None:
        """Copy the SDK's replies out, whole lines, until told to stop and nothing is left.

        Not until end of file: the SDK serves the wire from its own duplicate of fd 1, which it never
        closes, so the pipe's end of file never comes (every `memfs mcp` waited 10 s to exit).
        """
        pending = b""
        try:
            while True:
                ready = select.select([from_sdk, self._stop_r], [], [])[0]
                if from_sdk not in ready:  # stopping, and the SDK has written everything it will
                    break
                chunk = os.read(from_sdk, 65536)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._write(line + b"\n")
            if pending:
                self._write(pending)
        except (BrokenPipeError, ValueError):  # the client has gone
            pass
        finally:
            os.close(from_sdk)

    def __exit__(self, *exc) -> None:
        # fd 1 back to the real stdout; the SDK has returned, so its last replies are in the pipe: the
        # copying thread drains them and ends.
        os.dup2(self._real_out, 1)
        os.write(self._stop_w, b"x")
        self._threads[1].join(10)
        if not self._threads[1].is_alive():
            os.close(self._stop_r)
        os.close(self._stop_w)
        os.close(0)  # and stdin: nothing reads the pipe any more
