"""The conflict inbox: `data/conflicts/`, one JSON file per losing version (docs/sync.md).

When two replicas changed the same memory concurrently, every replica picks the same winner and keeps
the loser here, never drops it. A file names the memory, both versions (content, tags, stamps; a
delete shows as `"deleted": true`) and when it was found. Resolving removes the file; the resolution
travels in the next change batch, so the conflict leaves every replica's inbox after its next sync.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from pathlib import Path

import orjson

from ..errors import BadRequestError, NotFoundError
from ..filestore import Layout, atomic_write

FORMAT = "memfs.conflict/1"
NAME = re.compile(r"^([^/\\\x00]{1,200})--([0-9a-f]{16})\.json$")


def inbox(layout: Layout) -> Path:
    return layout.data / "conflicts"


def conflict_id(mem_id: str, loser_v: str) -> str:
    """The memory's id and a short hash of the losing version: the same on every replica."""
    return f"{mem_id}--{hashlib.sha256(loser_v.encode()).hexdigest()[:16]}"


def _path(layout: Layout, cid: str) -> Path:
    if not isinstance(cid, str) or not NAME.match(cid + ".json"):
        raise BadRequestError(f"{cid[:80]!r} is not a conflict id; `memfs conflicts list` shows them")
    return inbox(layout) / f"{cid}.json"


def record(layout: Layout, mem_id: str, winner: dict, loser: dict) -> str:
    """Keep the losing version (idempotent: the same conflict found again writes the same file)."""
    cid = conflict_id(mem_id, loser["v"])
    path = _path(layout, cid)
    if not path.exists():
        doc = {"format": FORMAT, "conflict": cid, "memory": mem_id,
               "found_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "winner": winner, "loser": loser}
        atomic_write(path, orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    return cid


def holds(layout: Layout, mem_id: str, loser_v: str) -> bool:
    """Whether the inbox already keeps this losing version."""
    return _path(layout, conflict_id(mem_id, loser_v)).exists()


def drop(layout: Layout, cid: str) -> None:
    _path(layout, cid).unlink(missing_ok=True)


def drop_superseded(layout: Layout, mem_id: str, v: str) -> None:
    """A later version of a losing side arrived: its older loser is superseded by the new conflict."""
    drop(layout, conflict_id(mem_id, v))


def listing(layout: Layout) -> list[dict]:
    out = []
    d = inbox(layout)
    if not d.is_dir():
        return out
    for p in sorted(d.glob("*.json")):
        try:
            out.append(orjson.loads(p.read_bytes()))
        except (OSError, orjson.JSONDecodeError):
            out.append({"conflict": p.stem, "error": f"{p} does not read as JSON"})
    return out


def count(layout: Layout) -> int:
    d = inbox(layout)
    return sum(1 for _ in d.glob("*.json")) if d.is_dir() else 0


def get(layout: Layout, cid: str) -> dict:
    path = _path(layout, cid)
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise NotFoundError(f"no conflict {cid!r} in {inbox(layout)}; `memfs conflicts list` shows them "
                            "(it may have been resolved on another replica)") from None


def problems(layout: Layout) -> list[tuple[str, str]]:
    """(path, message) for `validate`: each open conflict is a finding a person should look at."""
    out = []
    for c in listing(layout):
        cid = c.get("conflict", "?")
        out.append((f"data/conflicts/{cid}.json", f"memory {c.get('memory', '?')} has a losing version from a "
                    f"concurrent edit; `memfs conflicts show {cid}`, then `memfs conflicts resolve {cid} --keep ...`"))
    return out
