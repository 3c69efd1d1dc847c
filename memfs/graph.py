"""A knowledge graph of entities, relations and observations kept as memfs memories (issue #22).

The MCP reference memory server (`@modelcontextprotocol/server-memory`) keeps its graph in one
`memory.jsonl`; here each entity and each relation is a memory of its own, in the form
`memfs import` gives that file (memfs.importers, kg-jsonl), so an imported graph and one built through
the tools are the same thing:

- an entity: namespace `kg`, key `entity:<name>`, type `entity`, tag `entity-type:<type>`, metadata
  `{name, entityType, observations}` (the truth for the graph), content "Name (type)" and one
  observation per line (what search embeds and a person reads);
- a relation: namespace `kg`, key `relation:…`, type `relation`, metadata `{from, to, relationType}`,
  content "from relationType to".

Every action runs inside the store's owner under its write lock (`GraphOperations.graph`), so two
agents creating entities at once lose nothing (the reference server loses writes: its issues #4797,
#1819). No MCP import here: memfs.mcp.graph is the tool adapter over `Operations.graph`.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Callable

from .admin import translated
from .errors import BadRequestError, NotFoundError
from .importers import KG_NAMESPACE
from .limits import MAX_CONTENT_CHARS
from .query import Filters

if TYPE_CHECKING:
    from .store import MemoryStore

ENTITY, RELATION = "entity:", "relation:"
MAX_ITEMS = 1000  # entities, relations, names or observation groups in one call
MAX_NAME = 500  # characters in a name, an entity type or a relation type
MAX_QUERY = 10_000
PAGE_BYTES = 60_000  # read_graph: a page's JSON stays at or under this (≈15k tokens), docs/mcp.md
MAX_PAGE_ITEMS = 5000  # read_graph's `limit`: entities + relations on a page
SEMANTIC_K = 10  # search_nodes: entities found by meaning, besides those containing the query
SEMANTIC_MIN = 0.3  # … and only those at least this similar (cosine; unrelated text scores under ~0.15)


# -- checks (the one request schema of every graph action, whichever door it comes through) ------------


def _text(value: Any, what: str, limit: int = MAX_NAME) -> str:
    if not isinstance(value, str):
        raise BadRequestError(f"{what} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise BadRequestError(f"{what} is empty: give a name")
    if len(value) > limit:
        raise BadRequestError(f"{what} is {len(value)} characters; at most {limit}")
    if any(ord(c) < 32 and c not in "\t\n" for c in value):
        raise BadRequestError(f"{what} {value[:60]!r} has control characters; remove them")
    return value


def _items(args: dict, field: str) -> list:
    value = args.get(field)
    if not isinstance(value, list):
        raise BadRequestError(f"'{field}' must be a list")
    if len(value) > MAX_ITEMS:
        raise BadRequestError(f"'{field}' has {len(value)} items; at most {MAX_ITEMS} in one call: split it")
    return value


def _obj(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise BadRequestError(f"{what} must be an object")
    return value


def _observations(value: Any, what: str) -> list[str]:
    if not isinstance(value, list):
        raise BadRequestError(f"{what} must be a list of strings")
    return [_text(o, f"an observation of {what}", MAX_CONTENT_CHARS) for o in value]


def _relation(r: Any) -> tuple[str, str, str]:
    r = _obj(r, "a relation")
    return (_text(r.get("from"), "a relation's 'from'"), _text(r.get("relationType"), "a relation's 'relationType'"),
            _text(r.get("to"), "a relation's 'to'"))


# -- the documents ------------------------------------------------------------------------------------


def entity_key(name: str) -> str:
    return ENTITY + name


def relation_key(src: str, rel: str, dst: str) -> str:
    # JSON keeps the three parts apart whatever characters they hold ("|" in a name, issue #25).
    return RELATION + json.dumps([src, rel, dst], ensure_ascii=False)


def entity_content(name: str, etype: str, observations: list[str]) -> str:
    return "\n".join([f"{name} ({etype})", *observations])


def entity_doc(name: str, etype: str, observations: list[str]) -> dict:
    tags = [f"entity-type:{etype}"] if len(etype) <= 100 else []
    return {"content": entity_content(name, etype, observations), "type": "entity", "namespace": KG_NAMESPACE,
            "key": entity_key(name), "tags": tags,
            "metadata": {"name": name, "entityType": etype, "observations": observations}}


def relation_doc(src: str, rel: str, dst: str) -> dict:
    return {"content": f"{src} {rel} {dst}", "type": "relation", "namespace": KG_NAMESPACE,
            "key": relation_key(src, rel, dst), "metadata": {"from": src, "to": dst, "relationType": rel}}


def as_entity(m) -> dict:
    """The reference server's shape for an entity memory (a hand-made file without metadata: from its key)."""
    meta = m.metadata or {}
    name = meta.get("name") if isinstance(meta.get("name"), str) else (m.key or ENTITY)[len(ENTITY):]
    obs = meta.get("observations")
    return {"name": name, "entityType": str(meta.get("entityType", "entity")),
            "observations": [str(o) for o in obs] if isinstance(obs, list) else []}


def as_relation(m) -> dict:
    meta = m.metadata or {}
    return {"from": str(meta.get("from", "")), "to": str(meta.get("to", "")),
            "relationType": str(meta.get("relationType", ""))}


# -- reading the graph ---------------------------------------------------------------------------------


def _keys(store: "MemoryStore") -> list[tuple[str, str]]:
    """(key, id) of every entity and relation, in key order (entities first), one id per key."""
    seen: set[str] = set()
    out = []
    for _, key, mem_id in store.catalog.keys_in(KG_NAMESPACE, time.time()):
        if key not in seen and key.startswith((ENTITY, RELATION)):
            seen.add(key)
            out.append((key, mem_id))
    return out


def _memories(store: "MemoryStore", ids: list[str]) -> list:
    entries = store.catalog.get_many(ids)
    return [entries[i].memory for i in ids if i in entries]


def _entity_memory(store: "MemoryStore", name: str):
    ids = store.catalog.ids_for_key(KG_NAMESPACE, entity_key(name))
    return store.get(ids[0]) if ids else None


def _relations(store: "MemoryStore") -> list[tuple[str, dict]]:
    """(id, relation) of every relation."""
    ids = [i for k, i in _keys(store) if k.startswith(RELATION)]
    return [(m.id, as_relation(m)) for m in _memories(store, ids)]


def _entities(store: "MemoryStore") -> list[dict]:
    return [as_entity(m) for m in _memories(store, [i for k, i in _keys(store) if k.startswith(ENTITY)])]


def _touching(store: "MemoryStore", names: set[str]) -> list[dict]:
    return [r for _, r in _relations(store) if r["from"] in names or r["to"] in names]


def _size(item: dict) -> int:
    return len(json.dumps(item, ensure_ascii=False).encode()) + 1  # + the comma


def read_graph(store: "MemoryStore", args: dict) -> dict:
    """A page of the graph: entities (by name), then relations, until `limit` items or PAGE_BYTES of JSON."""
    cursor = args.get("cursor")
    limit = args.get("limit")
    if cursor is not None and (not isinstance(cursor, str) or not cursor.startswith((ENTITY, RELATION))):
        raise BadRequestError("cursor is not one read_graph gave out; call read_graph without it to start over")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_ITEMS):
        raise BadRequestError(f"limit must be a whole number from 1 to {MAX_PAGE_ITEMS}")
    keys = [(k, i) for k, i in _keys(store) if cursor is None or k > cursor]
    budget = PAGE_BYTES - 200  # the envelope: field names, next_cursor, remaining
    page: dict[str, list] = {"entities": [], "relations": []}
    taken, last = 0, None
    for start in range(0, len(keys), 200):
        chunk = keys[start:start + 200]
        full = False
        for (key, _), m in zip(chunk, _memories(store, [i for _, i in chunk])):
            item = as_entity(m) if key.startswith(ENTITY) else as_relation(m)
            size = _size(item) + (len(key) * 2 if key.startswith(RELATION) else len(key))  # the cursor it may become
            if taken and (budget - size < 0 or taken >= (limit or MAX_PAGE_ITEMS)):
                full = True
                break
            budget -= size
            page["entities" if key.startswith(ENTITY) else "relations"].append(item)
            taken, last = taken + 1, key
        if full:
            break
    rest = [k for k, _ in keys if last is not None and k > last]
    left = {"entities": sum(k.startswith(ENTITY) for k in rest), "relations": sum(k.startswith(RELATION) for k in rest)}
    return {**page, "next_cursor": last if rest else None, "remaining": left}


def search_nodes(store: "MemoryStore", args: dict) -> dict:
    """Entities whose name, type or an observation contains the query (the reference server's match),
    then those that match it by meaning; with every relation touching one of them."""
    query = _text(args.get("query"), "query", MAX_QUERY)
    q = query.lower()
    found = [e for e in _entities(store)
             if q in e["name"].lower() or q in e["entityType"].lower() or any(q in o.lower() for o in e["observations"])]
    names = {e["name"] for e in found}
    for hit in store.search(query, k=SEMANTIC_K, mode="semantic", filters=Filters(type="entity"),
                            min_score=SEMANTIC_MIN):
        m = hit.memory
        if m.namespace == KG_NAMESPACE and (m.key or "").startswith(ENTITY):
            e = as_entity(m)
            if e["name"] not in names:
                names.add(e["name"])
                found.append(e)
    return {"entities": found, "relations": _touching(store, names)}


def open_nodes(store: "MemoryStore", args: dict) -> dict:
    names = [_text(n, "a name") for n in _items(args, "names")]
    found = [as_entity(m) for m in (_entity_memory(store, n) for n in dict.fromkeys(names)) if m is not None]
    return {"entities": found, "relations": _touching(store, {e["name"] for e in found})}


# -- changing it (the caller holds the store's write lock: GraphOperations) ---------------------------


def create_entities(store: "MemoryStore", args: dict) -> dict:
    wanted: dict[str, tuple[str, list[str]]] = {}
    for e in _items(args, "entities"):
        e = _obj(e, "an entity")
        name = _text(e.get("name"), "an entity's 'name'")
        wanted.setdefault(name, (_text(e.get("entityType"), f"entity {name!r}'s 'entityType'"),
                                 _observations(e.get("observations"), f"entity {name!r}'s 'observations'")))
    new = [(n, t, o) for n, (t, o) in wanted.items() if not store.catalog.ids_for_key(KG_NAMESPACE, entity_key(n))]
    if new:
        store.add_many([entity_doc(*e) for e in new], allow_duplicate=True)
    return {"entities": [{"name": n, "entityType": t, "observations": o} for n, t, o in new]}


def create_relations(store: "MemoryStore", args: dict) -> dict:
    wanted = list(dict.fromkeys(_relation(r) for r in _items(args, "relations")))
    have = {(r["from"], r["relationType"], r["to"]) for _, r in _relations(store)}
    new = [t for t in wanted if t not in have]
    if new:
        store.add_many([relation_doc(*t) for t in new], allow_duplicate=True)
    return {"relations": [{"from": s, "to": d, "relationType": r} for s, r, d in new]}


def add_observations(store: "MemoryStore", args: dict) -> dict:
    groups = []
    for o in _items(args, "observations"):
        o = _obj(o, "an observations entry")
        name = _text(o.get("entityName"), "'entityName'")
        groups.append((name, _observations(o.get("contents"), f"the 'contents' for {name!r}")))
    targets = {}
    for name, _ in groups:  # every entity is checked before any is changed, as the reference server does
        m = _entity_memory(store, name)
        if m is None:
            raise NotFoundError(f"Entity with name {name} not found; create_entities makes it, search_nodes "
                                "finds the names there are")
        targets[name] = m
    results = []
    for name, contents in groups:
        m = targets[name]
        e = as_entity(m)
        added = [c for c in dict.fromkeys(contents) if c not in e["observations"]]
        if added:
            targets[name] = _rewrite(store, m, e, e["observations"] + added)
        results.append({"entityName": name, "addedObservations": added})
    return {"results": results}


def _rewrite(store: "MemoryStore", m, e: dict, observations: list[str]):
    return store.update(m.id, content=entity_content(e["name"], e["entityType"], observations),
                        metadata={"name": e["name"], "entityType": e["entityType"], "observations": observations})


def delete_entities(store: "MemoryStore", args: dict) -> dict:
    names = {_text(n, "a name") for n in _items(args, "entityNames")}
    for name in names:
        for mem_id in store.catalog.ids_for_key(KG_NAMESPACE, entity_key(name)):
            _remove(store, mem_id)
    for mem_id, r in _relations(store):
        if r["from"] in names or r["to"] in names:
            _remove(store, mem_id)
    return {"success": True, "message": "Entities deleted successfully"}


def delete_observations(store: "MemoryStore", args: dict) -> dict:
    for d in _items(args, "deletions"):
        d = _obj(d, "a deletion")
        name = _text(d.get("entityName"), "'entityName'")
        gone = set(_observations(d.get("observations"), f"the observations to delete from {name!r}"))
        m = _entity_memory(store, name)
        if m is not None:  # an unknown entity is skipped, as the reference server does
            e = as_entity(m)
            kept = [o for o in e["observations"] if o not in gone]
            if kept != e["observations"]:
                _rewrite(store, m, e, kept)
    return {"success": True, "message": "Observations deleted successfully"}


def delete_relations(store: "MemoryStore", args: dict) -> dict:
    gone = {_relation(r) for r in _items(args, "relations")}
    for mem_id, r in _relations(store):
        if (r["from"], r["relationType"], r["to"]) in gone:
            _remove(store, mem_id)
    return {"success": True, "message": "Relations deleted successfully"}


def _remove(store: "MemoryStore", mem_id: str) -> None:
    try:
        store.remove(mem_id)
    except NotFoundError:
        pass  # removed meanwhile (a hand edit): the outcome asked for


READS: dict[str, Callable[["MemoryStore", dict], dict]] = {
    "read_graph": read_graph, "search_nodes": search_nodes, "open_nodes": open_nodes}
WRITES: dict[str, Callable[["MemoryStore", dict], dict]] = {
    "create_entities": create_entities, "create_relations": create_relations, "add_observations": add_observations,
    "delete_entities": delete_entities, "delete_observations": delete_observations,
    "delete_relations": delete_relations}
ACTIONS = (*WRITES, *READS)


class GraphOperations:
    """`Operations.graph` in the process that owns the store (a mixin of LocalOperations)."""

    owner: Any

    @translated
    def graph(self, action: str, args: dict) -> dict:
        """Run one graph action (ACTIONS) with the reference server's arguments; its result as a dict.
        Writes hold the store exclusively, so a check and the write it decides are one step."""
        if not isinstance(args, dict):
            raise BadRequestError("the arguments of a graph action are a JSON object")
        if action in READS:
            with self.owner.using() as store:
                return READS[action](store, args)
        if action in WRITES:
            with self.owner.exclusive() as store:
                return WRITES[action](store, args)
        raise BadRequestError(f"no graph action {action[:60]!r}; the actions are {', '.join(ACTIONS)}")
