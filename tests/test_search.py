"""Search quality and filter semantics, against the real model and real Chroma."""

from datetime import datetime, timezone

import pytest

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
