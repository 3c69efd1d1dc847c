"""Search quality and filter semantics, against the real model and real Chroma."""

from datetime import datetime, timezone

import pytest

import memfs.store
from memfs import Filters, MemoryStore

from conftest import filler_texts

DARK = "User prefers dark theme in every editor and terminal"
ERROR = "Checkout deploy failed with error E4417 after the payment gateway timed out"
PARAPHRASE = "what colour scheme does the user like"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """≥ 50 unrelated memories plus a few targets, each with tags and dates the filter tests use."""
    s = MemoryStore.open(tmp_path_factory.mktemp("corpus") / "store", create=True)
    docs = [{"content": t, "tags": ["python", "docs"], "created_at": f"2025-03-{1 + i % 28:02d}T10:00:00Z"}
            for i, t in enumerate(filler_texts(60))]
    s.add_many(docs)
    ids = {
        "dark": s.add(DARK, tags=["ui", "prefs"], created_at="2025-06-01T09:00:00Z").memory.id,
        "error": s.add(ERROR, tags=["ops"], created_at="2025-06-02T09:00:00Z").memory.id,
        # Far from any Python-ish query, so it is not in an unfiltered top-k for one.
        "rare": s.add("The quarterly picnic moved to the lakeside park", tags=["events", "ui"],
                      created_at="2020-01-15T12:00:00Z").memory.id,
    }
    yield s, ids
    s.close()


def ids_of(hits):
    return [h.memory.id for h in hits]


def test_semantic_finds_paraphrase_at_rank_1(corpus):
    s, ids = corpus
    assert s.catalog.count() >= 53
    hits = s.search(PARAPHRASE, k=5, mode="semantic")
    assert ids_of(hits)[0] == ids["dark"]
    assert hits[0].score > hits[1].score


def test_keyword_finds_exact_identifier(corpus):
    s, ids = corpus
    assert ids_of(s.search("E4417", k=5, mode="keyword")) == [ids["error"]]
    # Semantic alone is not the tool for an opaque code; keyword is why hybrid exists.
    assert ids_of(s.search("error E4417", k=1, mode="keyword")) == [ids["error"]]


def test_hybrid_finds_both_kinds(corpus):
    s, ids = corpus
    assert ids_of(s.search(PARAPHRASE, k=3, mode="hybrid"))[0] == ids["dark"]
    assert ids_of(s.search("E4417", k=3, mode="hybrid"))[0] == ids["error"]
    assert s.search("E4417", k=3, mode="hybrid")[0].ranks["keyword"] == 1


def test_keyword_query_with_fts_syntax_is_safe(corpus):
    s, _ = corpus
    for q in ['"unbalanced', "a AND OR NOT", "col:umn", "x*", "(", "-"]:
        s.search(q, k=3, mode="keyword")  # no sqlite3.OperationalError


@pytest.mark.parametrize("mode", ["semantic", "keyword", "hybrid"])
def test_tag_filter_applies_before_top_k(corpus, mode):
    s, ids = corpus
    query = "python function arguments keyword"
    unfiltered = ids_of(s.search(query, k=3, mode=mode))
    assert ids["rare"] not in unfiltered
    hits = s.search(query, k=3, mode=mode, filters=Filters(tags=("events",)))
    if mode == "keyword":
        assert hits == []  # no shared words: keyword search honestly finds nothing
    else:
        assert ids_of(hits) == [ids["rare"]]


def test_tag_any_and_all(corpus):
    s, ids = corpus
    any_ui = s.search(PARAPHRASE, k=10, mode="semantic", filters=Filters(tags=("ui", "ops"), match="any"))
    assert set(ids_of(any_ui)) == {ids["dark"], ids["rare"], ids["error"]}
    all_ = s.search(PARAPHRASE, k=10, mode="semantic", filters=Filters(tags=("ui", "prefs"), match="all"))
    assert ids_of(all_) == [ids["dark"]]
    listed = s.list(Filters(tags=("ui", "events"), match="all"))
    assert [e.memory.id for e in listed] == [ids["rare"]]


@pytest.mark.parametrize("mode", ["semantic", "hybrid"])
def test_time_filter_applies_before_top_k(corpus, mode):
    s, ids = corpus
    query = "python function arguments keyword"
    since_2025 = Filters(since=datetime(2025, 1, 1, tzinfo=timezone.utc))
    old = Filters(until=datetime(2021, 1, 1, tzinfo=timezone.utc))
    assert ids["rare"] not in ids_of(s.search(query, k=50, mode=mode, filters=since_2025))
    assert ids_of(s.search(query, k=3, mode=mode, filters=old)) == [ids["rare"]]
    june = Filters(since=datetime(2025, 6, 1, tzinfo=timezone.utc), until=datetime(2025, 6, 2, tzinfo=timezone.utc))
    assert ids_of(s.search(query, k=5, mode=mode, filters=june)) == [ids["dark"]]


def test_type_filter(corpus):
    s, ids = corpus
    decision = s.add("We decided to keep SQLite for the catalog", type="decision").memory.id
    try:
        hits = s.search("python function arguments", k=3, mode="semantic", filters=Filters(type="decision"))
        assert ids_of(hits) == [decision]
    finally:
        s.remove(decision)


# -- issue #12: how the default decides, what a hit says --------------------------------------------

from memfs import query as q  # noqa: E402
from memfs.query import analyze, highlight, snippet  # noqa: E402
from memfs.results import Hit  # noqa: E402


@pytest.mark.parametrize("text, kind, terms", [
    ("what colour scheme does the user like", "natural", ["colour", "scheme", "user", "like"]),
    ("E4417", "exact", ["E4417"]),
    ("why did PROJ-1234 fail", "exact", ["PROJ-1234", "fail"]),
    ("where is src/app/main.py", "exact", ["src/app/main.py"]),
    ("upgrade to v2.3.1?", "exact", ["v2.3.1", "upgrade"]),
    ('notes about "the left hand" please', "exact", ["the left hand", "notes", "please"]),
    ("ValueError from os.path.join", "exact", ["ValueError", "os.path.join"]),
    ("DATABASE_URL", "exact", ["DATABASE_URL"]),
    ("what is it", "natural", ["what", "is", "it"]),  # only stop words: keep them rather than nothing
    ("video-transcode-jobs queue", "exact", ["video-transcode-jobs", "queue"]),
    ("allkeys-lru", "exact", ["allkeys-lru"]),                   # one word: a lookup
    ("ECONNRESET", "exact", ["ECONNRESET"]),
    ("why", "natural", ["why"]),
    ("a built-in function", "natural", ["built", "function"]),
    ("Yuki Tanaka", "exact", ["Yuki", "Tanaka"]),                 # a name
    ("ask Priya Raghunathan", "exact", ["Priya", "Raghunathan", "ask"]),
    ("when does Marco's plane leave", "natural", ["Marco", "plane", "leave"]),  # mentions a name
    ("What did we decide", "natural", ["decide"]),               # a capital that only starts the sentence
])
def test_query_classification(text, kind, terms):
    plan = analyze(text)
    assert plan.kind == kind
    assert [t.text for t in plan.terms] == terms


def test_keyword_query_drops_stop_words_and_keeps_identifiers_whole():
    assert analyze("what does the error E4417 mean").fts_query() == '"e4417" OR "error" OR "mean"'
    assert analyze("PROJ-1234").fts_query() == '"proj 1234"'


def test_stop_words_do_not_drag_hybrid(corpus):
    """Issue #12: 'what', 'does', 'the' matched everywhere and rank fusion let them win."""
    s, ids = corpus
    hits = s.search("what does the user like to see on the screen: what colours", k=3, mode="hybrid")
    assert ids_of(hits)[0] == ids["dark"]


def test_hybrid_identifier_beats_closer_meaning(corpus):
    s, ids = corpus
    other = s.add("Checkout deploy failed with error E4471 when the payment gateway timed out").memory.id
    try:
        assert ids_of(s.search("E4417", k=3))[0] == ids["error"]
        assert ids_of(s.search("E4471 checkout", k=3))[0] == other
    finally:
        s.remove(other)


def test_hybrid_keyword_only_match_respects_filters(corpus):
    s, ids = corpus
    # "picnic" is found by keyword; the time filter must still keep it out (filters before the cut).
    assert ids["rare"] in ids_of(s.search("picnic lakeside", k=3))
    later = Filters(since=datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert ids["rare"] not in ids_of(s.search("picnic lakeside", k=50, filters=later))
    assert ids_of(s.search("picnic lakeside", k=3, filters=Filters(tags=("events",)))) == [ids["rare"]]


def test_hit_fields(corpus):
    s, ids = corpus
    hits = s.search("error E4417 payment", k=5)
    top = hits[0]
    assert top.memory.id == ids["error"]
    assert 0.0 <= top.similarity <= 1.0 and 0.0 <= top.score <= 1.0
    assert set(top.matched_terms) == {"E4417", "error", "payment"}
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert top.ranks["keyword"] == 1 and "semantic" in top.ranks
    assert "E4417" in top.snippet and len(top.snippet) <= q.SNIPPET_CHARS + 2
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    sem = s.search(PARAPHRASE, k=2, mode="semantic")[0]
    assert sem.score == sem.similarity
    kw = s.search("E4417", k=2, mode="keyword")[0]
    assert kw.similarity is None and kw.matched_terms == ("E4417",) and kw.score == 1.0


def test_hit_round_trip(corpus):
    s, _ = corpus
    for hit in s.search("error E4417 payment", k=3):
        again = Hit.from_dict(hit.to_dict())
        assert again == hit
        assert again.to_dict() == hit.to_dict()


def test_no_good_match_says_so(corpus):
    s, ids = corpus
    r = s.search_result("how tall is the Eiffel tower", k=5)
    assert r.hits == [] and "no good match" in r.note and "--min-score" in r.note
    assert len(s.search_result("how tall is the Eiffel tower", k=5, min_score=0).hits) == 5
    good = s.search_result(PARAPHRASE, k=5)
    assert good.note is None and good.hits[0].memory.id == ids["dark"]
    # An identifier the store holds is a good match however low its similarity.
    assert s.search_result("E4417", k=5).hits[0].memory.id == ids["error"]


def test_min_score_cuts_weak_hits(corpus):
    s, _ = corpus
    all_hits = s.search(PARAPHRASE, k=10)
    cut = all_hits[2].score
    kept = s.search_result(PARAPHRASE, k=10, min_score=cut).hits
    assert kept == [h for h in all_hits if h.score >= cut] and len(kept) >= 3
    r = s.search_result(PARAPHRASE, k=10, min_score=0.999)
    assert r.hits == [] and "0.999" in r.note
    assert s.search(PARAPHRASE, k=10, min_score=cut) == kept


def test_keyword_mode_with_no_matching_word_says_so(corpus):
    s, _ = corpus
    r = s.search_result("zyzzyva", k=5, mode="keyword")
    assert r.hits == [] and "zyzzyva" in r.note


def test_snippet_and_highlight():
    text = "word " * 100 + "the error E4417 came back " + "tail " * 100
    snip = snippet(text, ["E4417"])
    assert "E4417" in snip and snip.startswith("…") and snip.endswith("…") and len(snip) <= q.SNIPPET_CHARS + 2
    assert snippet("short text", ["x"]) == "short text"
    assert highlight("Error e4417: see E4417.", ["E4417"], "<", ">") == "Error <e4417>: see <E4417>."
    assert highlight("PROJ-1234 and PROJ 1234", ["proj-1234"], "*", "*") == "*PROJ-1234* and *PROJ 1234*"
    assert highlight("Tomasz Wiśniewski", ["wisniewski"], "[", "]") == "Tomasz [Wiśniewski]"
    assert highlight("errors", ["error"]) == "errors"  # whole tokens only, as the keyword index matches


# -- exact search and the HNSW index -----------------------------------------------------------------


@pytest.fixture
def hnsw_only(monkeypatch, corpus):
    """Every vector query goes to Chroma's HNSW index, as in a store above vectors.EXACT_MAX."""
    import memfs.vectors

    s, _ = corpus
    monkeypatch.setattr(memfs.vectors, "EXACT_MAX", 0)
    monkeypatch.setattr(memfs.store, "EXACT_MAX", 0)
    s.vectors._mirror = None
    yield
    s.vectors._mirror = None


@pytest.mark.parametrize("mode", ["semantic", "hybrid"])
def test_filters_apply_before_the_cut_on_the_hnsw_path(corpus, hnsw_only, mode):
    s, ids = corpus
    query = "python function arguments keyword"
    assert ids_of(s.search(query, k=3, mode=mode, filters=Filters(tags=("events",)))) == [ids["rare"]]
    old = Filters(until=datetime(2021, 1, 1, tzinfo=timezone.utc))
    assert ids_of(s.search(query, k=3, mode=mode, filters=old)) == [ids["rare"]]
    assert s.vectors._mirror is None


def test_exact_and_hnsw_agree_on_a_small_store(corpus):
    s, _ = corpus
    v = s.embedder.embed([PARAPHRASE])[0]
    for f in (Filters(), Filters(tags=("ui", "ops")), Filters(since=datetime(2025, 3, 10, tzinfo=timezone.utc))):
        exact = s.vectors.query(v, 10, f, exact=True)
        approx = s.vectors.query(v, 10, f, exact=False)
        assert [i for i, _ in exact] == [i for i, _ in approx]
        assert [round(x, 4) for _, x in exact] == [round(x, 4) for _, x in approx]


def test_exact_copy_follows_writes(corpus):
    s, _ = corpus
    s.vectors.load()
    new = s.add("The staging database password rotates every ninety days", tags=["ops"]).memory.id
    try:
        assert ids_of(s.search("how often does the test db secret change", k=1, mode="semantic")) == [new]
        s.update(new, content="The staging database is wiped and reseeded every Sunday night")
        assert ids_of(s.search("when is the test db reset", k=1, mode="semantic")) == [new]
        s.update(new, add_tags=["weekly"])
        assert ids_of(s.search("when is the test db reset", k=1, mode="semantic",
                               filters=Filters(tags=("weekly",)))) == [new]
    finally:
        s.remove(new)
    assert new not in ids_of(s.search("when is the test db reset", k=5, mode="semantic"))
    assert len(s.vectors._mirror) == s.vectors.count()


def test_rebuild_vectors_migrates_an_old_index(tmp_path):
    """A store made before issue #12 has Chroma's default HNSW graph; reindex rebuilds it, embedding nothing."""
    import chromadb
    from chromadb.config import Settings

    from memfs.vectors import COLLECTION, HNSW, RUNTIME

    root = tmp_path / "old"
    MemoryStore.init(root)
    client = chromadb.PersistentClient(path=str(root / "data" / "embeddings"), settings=Settings(anonymized_telemetry=False))
    client.get_or_create_collection(COLLECTION, embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
    del client
    with MemoryStore.open(root) as s:
        s.add(DARK)
        s.add(ERROR)
        assert s.vectors_outdated
        for key in RUNTIME:  # set in place on open
            assert s.vectors.hnsw_config()[key] == HNSW[key], key
        before = s.embedder.embedded
        assert s.rebuild_vectors() == 2
        assert s.embedder.embedded == before
        assert not s.vectors_outdated
        assert s.vectors.hnsw_config()["max_neighbors"] == HNSW["max_neighbors"]
        assert s.search(PARAPHRASE, k=1, mode="semantic")[0].memory.content == DARK


def test_empty_results_say_why(corpus, store):
    s, _ = corpus
    assert store.search_result("anything").note == "no memory is stored"
    none = Filters(type="no-such-type")
    r = s.search_result(PARAPHRASE, filters=none)
    assert r.hits == [] and r.note == "no memory matches the filters"


def test_exact_copy_plumbing_matches_brute_force():
    """Plumbing (random vectors, no model): after upserts, re-tags and deletes that reuse rows, the
    in-memory copy answers exactly what brute force over the live rows answers, filters included."""
    import random

    import numpy as np

    from memfs.vectors import _Mirror

    rnd = random.Random(3)
    rng = np.random.default_rng(3)
    live: dict[str, tuple[np.ndarray, dict]] = {}
    m = _Mirror()

    def put(ids):
        vecs = rng.normal(size=(len(ids), 8)).astype(np.float32)
        metas = [{"created_ts": float(rnd.randrange(100)), "type": rnd.choice(["a", "b"]),
                  "tags": rnd.sample(["x", "y", "z"], rnd.randrange(3))} for _ in ids]
        m.upsert(ids, vecs, metas)
        live.update({i: (v, meta) for i, v, meta in zip(ids, vecs, metas)})

    put([f"m{i}" for i in range(3000)])
    for _ in range(5):
        gone = rnd.sample(sorted(live), 400)
        m.delete(gone)
        for i in gone:
            del live[i]
        put([f"n{rnd.randrange(10**9)}" for _ in range(300)] + rnd.sample(sorted(live), 200))
    assert len(m) == len(live)
    q = rng.normal(size=8).astype(np.float32)
    for f in (Filters(), Filters(tags=("x",)), Filters(tags=("x", "y"), match="all"), Filters(tags=("y", "z")),
              Filters(type="a", since=datetime.fromtimestamp(30, timezone.utc))):
        def ok(meta):
            tags = set(meta.get("tags", ()))
            if f.tags and not (set(f.tags) <= tags if f.match == "all" else tags & set(f.tags)):
                return False
            if f.type and meta["type"] != f.type:
                return False
            return not (f.since and meta["created_ts"] < f.since.timestamp())
        want = sorted(((float(v @ q), i) for i, (v, meta) in live.items() if ok(meta)), reverse=True)[:10]
        got = m.query(q, 10, f)
        assert [i for i, _ in got] == [i for _, i in want]
