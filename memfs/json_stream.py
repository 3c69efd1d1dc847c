"""Reading a big JSON export one record at a time (issue #25): an import's memory stays flat in the
size of the file it reads.

Every JSON export memfs imports is one object whose records sit in one array member: `memories`
(memfs, mcp-memory-service) or `entries` (claude-flow). `ObjectStream(path, "memories").items()`
reads the file a chunk at a time and yields the array's elements one by one, each parsed on its own
by orjson, with its bytes (for checks on the text as written, such as integers beyond 64 bits). Every
other member of the object (small: a format name, a model, a count) is parsed whole and kept in
`head`, as it is met. The bytes of an element are dropped once it is handed out, so memory holds one
element and one chunk of the file, whatever the file's size.

Where an element ends, without walking its text twice: an element of these arrays is an object, and
its closing brace is followed by `,{` (the next element) or `]`. Each such brace is a candidate; the first candidate at
which the text from the element's start parses as JSON is the end. (JSON is read left to right: up to
the candidate, the prefix's tokens are the file's, so a prefix that parses as one whole object closes
at the element's own brace, not at one inside a string.) After a few candidates that were not it (an
element whose text holds many `},` of its own) the text is walked token by token instead
(`value_end`), slower but linear.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import orjson

CHUNK = 1 << 20  # bytes read at a time (more when one value is bigger: the read doubles)
CANDIDATES = 4  # closing braces tried as an element's end before walking its tokens

_WS = re.compile(rb"[ \t\n\r]*")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_SCALAR = re.compile(rb"[^ \t\n\r,\]}]+")  # a number, true, false or null (orjson checks which)
# The next bracket, or string, after any run of other text; a lone `"` is a string the buffer cuts.
_TOKEN = re.compile(rb'[^"\[\]{}]*([\[\]{}]|"[^"\\]*(?:\\.[^"\\]*)*"|")')
_CLOSE = re.compile(rb"}[ \t\n\r]*(?:,[ \t\n\r]*{|])")  # an element's end: the next one starts, or the array ends


class JsonStreamError(ValueError):
    """The file is not the JSON it should be (with the byte offset where that shows)."""


def container_end(data: bytes, pos: int) -> int | None:
    """End of the object or array starting at `pos`, or None if `data` ends first."""
    depth = 0
    while True:
        m = _TOKEN.match(data, pos)
        if m is None:
            return None
        token, pos = m.group(1), m.end()
        if token[0] == 0x22:  # '"': a whole string is skipped; a lone quote is cut by the buffer's end
            if len(token) == 1:
                return None
            continue
        depth += 1 if token in (b"{", b"[") else -1
        if depth == 0:
            return pos


def value_end(data: bytes, pos: int, at_eof: bool) -> int | None:
    """End of the JSON value starting at `pos` (malformed text gets an end too: orjson then refuses
    it), or None if `data` may end inside it."""
    first = data[pos:pos + 1]
    if not first:
        return None
    if first in (b"{", b"["):
        return container_end(data, pos)
    if first == b'"':
        m = _STRING.match(data, pos)
        return m.end() if m else None
    m = _SCALAR.match(data, pos)
    if m is None:
        return pos + 1  # `,` `]` `}` where a value belongs
    return None if m.end() == len(data) and not at_eof else m.end()


def element_at(data: bytes, pos: int) -> tuple[int, Any] | None:
    """(end, value) of the object element starting at `pos`, found by its candidate closing braces
    (module docstring); None if none of the first CANDIDATES parses or `data` holds none."""
    if data[pos:pos + 1] != b"{":
        return None
    for n, m in enumerate(_CLOSE.finditer(data, pos)):
        if n == CANDIDATES:
            return None
        end = m.start() + 1
        try:
            return end, orjson.loads(data[pos:end])
        except orjson.JSONDecodeError:
            continue
    return None


class _Reader:
    """The file's bytes from where parsing stands, read a chunk at a time."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.data = b""
        self.pos = 0  # in `data`
        self.offset = 0  # of data[0] in the file
        self.eof = False

    def fill(self) -> bool:
        """Drop what was parsed, read more (at least as much as is held); False at the file's end."""
        if self.eof:
            return False
        self.offset += self.pos
        self.data, self.pos = self.data[self.pos:], 0
        block = self.f.read(max(CHUNK, len(self.data)))
        if not block:
            self.eof = True
            return False
        self.data += block
        return True

    def error(self, what: str) -> JsonStreamError:
        return JsonStreamError(f"{what} at byte {self.offset + self.pos}")

    def peek(self) -> int | None:
        """The next byte that is not white space (not consumed), or None at the file's end."""
        while True:
            self.pos = _WS.match(self.data, self.pos).end()  # type: ignore[union-attr]
            if self.pos < len(self.data):
                return self.data[self.pos]
            if not self.fill():
                return None

    def skip(self, char: bytes) -> bool:
        """Consume `char` if it comes next (after white space); whether it did."""
        if self.peek() != char[0]:
            return False
        self.pos += 1
        return True

    def take(self, char: bytes) -> None:
        if not self.skip(char):
            raise self.error(f"expected {char.decode()!r}")

    def ended(self, end: bytes) -> bool:
        """After a member or an element: True at `end` (the object or array closes), False at a comma
        (another follows); both consumed. Anything else is an error."""
        if self.skip(end):
            return True
        if not self.skip(b","):
            raise self.error(f"expected ',' or {end.decode()!r}")
        return False

    def value(self, element: bool = False) -> tuple[bytes, Any]:
        """(text, value) of the next JSON value; `element`: try element_at's candidates first."""
        self.peek()
        while True:
            found = element_at(self.data, self.pos) if element else None
            if found is None:
                end = value_end(self.data, self.pos, self.eof)
                if end is not None:
                    try:
                        found = end, orjson.loads(self.data[self.pos:end])
                    except orjson.JSONDecodeError as e:
                        raise self.error(f"not valid JSON ({e})") from None
            if found is not None:
                raw, self.pos = self.data[self.pos:found[0]], found[0]
                return raw, found[1]
            if not self.fill():
                raise self.error("the file ends inside a value (cut short?)")


class ObjectStream:
    """One JSON object read member by member, its array member `array` element by element."""

    def __init__(self, path: Path, array: str):
        self.path = path
        self.array = array
        self.head: dict[str, Any] = {}  # the other members, as far as read
        self.found_array = False  # `array` was a member and a list
        self.count = 0  # elements handed out

    def items(self) -> Iterator[tuple[int, bytes, Any]]:
        """(index, text, value) of each element of the array, in order; JsonStreamError if the file is
        not one JSON object. `head` is complete once this is exhausted."""
        with open(self.path, "rb") as f:
            r = _Reader(f)
            r.take(b"{")
            if not r.skip(b"}"):
                yield from self._members(r)
            if r.peek() is not None:
                raise r.error("more text after the JSON object")

    def _members(self, r: _Reader) -> Iterator[tuple[int, bytes, Any]]:
        while True:
            if r.peek() != ord('"'):
                raise r.error("expected a member name")
            _, name = r.value()
            r.take(b":")
            if name == self.array and r.skip(b"["):
                self.found_array = True
                yield from self._elements(r)
            else:
                self.head[name] = r.value()[1]
            if r.ended(b"}"):
                return

    def _elements(self, r: _Reader) -> Iterator[tuple[int, bytes, Any]]:
        if r.skip(b"]"):
            return
        while True:
            raw, value = r.value(element=True)
            yield self.count, raw, value
            self.count += 1
            if r.ended(b"]"):
                return
