"""Search and list filters, what a query looks like (terms, identifiers, phrases), snippets and rank
fusion: the vocabulary the indexes share. The hits a search returns are memfs.results.Hit."""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Iterable, Literal

from .documents import format_time, parse_time

if TYPE_CHECKING:
    from .results import Hit

Match = Literal["any", "all"]
Mode = Literal["semantic", "keyword", "hybrid"]
MODES: tuple[str, ...] = ("semantic", "keyword", "hybrid")



@dataclass(frozen=True)
class Filters:
    """Applied by each index before its top-k cut, never to a cut list afterwards."""

    tags: tuple[str, ...] = ()
    match: Match = "any"
    type: str | None = None
    since: datetime | None = None  # created_at >= since
    until: datetime | None = None  # created_at < until

    def __post_init__(self):
        if self.match not in ("any", "all"):
            raise ValueError(f"match must be 'any' or 'all', not {self.match!r}")

    @property
    def empty(self) -> bool:
        return not self.tags and self.type is None and self.since is None and self.until is None

    def to_dict(self) -> dict:
        return {"tags": list(self.tags), "match": self.match, "type": self.type,
                "since": format_time(self.since) if self.since else None,
                "until": format_time(self.until) if self.until else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Filters":
        since, until = d.get("since"), d.get("until")
        return cls(tags=tuple(d.get("tags") or ()), match=d.get("match") or "any", type=d.get("type"),
                   since=parse_time(since, "since") if since else None,
                   until=parse_time(until, "until") if until else None)


# -- what a query looks like ---------------------------------------------------------------------------

# Words that say nothing about which memory is meant. Matching them is what made the old keyword side
# rank "what does the …" memories first (issue #12). Kept short: a word missing here only costs a
# little, through its low IDF; a content word wrongly listed here would never match.
STOP_WORDS = frozenset("""
a about above after again against all am an and any are aren as at be because been before being below
between both but by can could did didn do does doesn doing don down during each else ever few for from
further get gets got had has hasn have haven having he her here hers herself him himself his how i if in
into is isn it its itself just let lets me more most my myself no nor not now of off on once only or
other ought our ours ourselves out over own same shall she should so some such than that the their
theirs them themselves then there these they this those through to too under until up upon us very
was wasn we were weren what when where which while who whom whose why will with within without won
would you your yours yourself yourselves anything something someone anyone thing things tell know
find show give say said one ones also way use used using
""".split())

# An identifier: letters and digits mixed (E4417, PROJ-1234, v2.3.1, 0x1F), a path or dotted name
# (src/app/main.py, os.path.join), snake_case, camelCase, kebab-case with two hyphens or more, or a
# number of 3+ digits.
_IDENT_RES = (
    re.compile(r"(?=.*\d)(?=.*[^\W\d_])"),      # letters and digits
    re.compile(r"\w[./\\:_]\w|^[./~]"),          # path, dotted name, snake_case
    re.compile(r"[a-z][A-Z]"),                   # camelCase
    re.compile(r"^\d{3,}$|\d[.\-]\d"),           # long numbers, versions, dates
    re.compile(r"^\w+-\w+-\w+"),                  # kebab-case names: video-transcode-jobs
)
_TOKEN = re.compile(r"[^\W_]+")
_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”')
_EDGE_PUNCT = "\"'`“”‘’.,;:!?()[]{}<>"


@dataclass(frozen=True)
class Term:
    """One keyword term of a query: a word, an identifier or a quoted phrase."""

    text: str                 # as written in the query (what `matched_terms` reports)
    tokens: tuple[str, ...]   # lower-cased tokens, as the FTS5 tokenizer splits them
    kind: Literal["word", "identifier", "phrase", "name"]

    @property
    def exact(self) -> bool:
        return self.kind != "word"

    @property
    def pattern(self) -> "re.Pattern[str]":
        return _term_pattern(self.tokens)


@dataclass(frozen=True)
class QueryPlan:
    """What the query looks like: `exact` when it names something (see `exact`), else `natural`."""

    text: str
    terms: tuple[Term, ...]

    @property
    def exact(self) -> bool:
        """An identifier or a quoted phrase, or names for at least half of the terms: "Yuki Tanaka" is
        a lookup; "is the new search rolled out in Europe" is a question that mentions a place."""
        names = sum(t.kind == "name" for t in self.terms)
        return any(t.kind in ("identifier", "phrase") for t in self.terms) or (names and 2 * names >= len(self.terms))

    @property
    def kind(self) -> str:
        return "exact" if self.exact else "natural"

    def fts_query(self) -> str:
        """The FTS5 MATCH expression: every term a quoted phrase (safe from FTS5 syntax), OR-ed."""
        return " OR ".join(dict.fromkeys('"' + " ".join(t.tokens) + '"' for t in self.terms))


# Capitalised words that are not a sentence's first word (or are followed by another capitalised word):
# people, places, products. "What did Priya say" names Priya; "What did we say" names no one.
NAMES = True
ACRONYMS = False


def _is_name(word: str, n: int, words: list[str]) -> bool:
    if ACRONYMS and len(word) >= 2 and word.isupper() and word.isalpha():
        return True
    if not (word[:1].isupper() and any(c.islower() for c in word[1:])):
        return False
    if n > 0:
        return True
    nxt = words[1] if len(words) > 1 else ""
    return len(words) == 1 or (nxt[:1].isupper() and any(c.islower() for c in nxt[1:]))


def is_identifier(word: str) -> bool:
    return any(r.search(word) for r in _IDENT_RES)


def analyze(query: str) -> QueryPlan:
    """Split a query into keyword terms: quoted phrases, identifiers, and words that are not stop words.

    A query made only of stop words keeps them (better some keyword evidence than none).
    """
    terms: list[Term] = []
    for m in _QUOTED.finditer(query):
        phrase = m.group(1) or m.group(2)
        tokens = _tokens(phrase)
        if tokens:
            terms.append(Term(phrase.strip(), tokens, "phrase"))
    rest = _QUOTED.sub(" ", query)
    words: list[Term] = []
    stops: list[Term] = []
    raws = [w.strip(_EDGE_PUNCT) for w in rest.split()]
    for n, word in enumerate(raws):
        tokens = _tokens(word)
        if not tokens:
            continue
        if is_identifier(word) or (len(raws) == 1 and not terms and tokens[0] not in STOP_WORDS):
            # A query of one word is a lookup (allkeys-lru, ECONNRESET, Crowdin), never a question.
            terms.append(Term(word, tokens, "identifier"))
        elif NAMES and _is_name(word, n, raws) and tokens[0] not in STOP_WORDS:
            terms.append(Term(word.removesuffix("'s").removesuffix("’s"), tokens[:1], "name"))
        elif len(tokens) > 1:  # e.g. "don't", "e-mail": each part a word
            for t in tokens:
                (stops if t in STOP_WORDS or len(t) < 2 else words).append(Term(t, (t,), "word"))
        else:
            (stops if tokens[0] in STOP_WORDS else words).append(Term(word, tokens, "word"))
    terms += words
    if not terms:
        terms = stops
    unique: dict[tuple[str, ...], Term] = {}
    for t in terms:
        unique.setdefault(t.tokens, t)
    return QueryPlan(query, tuple(unique.values()))


def _tokens(text: str) -> tuple[str, ...]:
    return tuple(t.lower() for t in _TOKEN.findall(_fold(text)))


@functools.lru_cache(maxsize=1024)
def _term_pattern(tokens: tuple[str, ...]) -> "re.Pattern[str]":
    # Tokens next to each other, separated by anything that is not a letter or digit, as FTS5's
    # unicode61 tokenizer sees them; whole tokens only.
    body = r"[\W_]+".join(re.escape(t) for t in tokens)
    return re.compile(rf"(?<![^\W_]){body}(?![^\W_])", re.IGNORECASE)


def matched(plan: QueryPlan, content: str) -> tuple[Term, ...]:
    """The plan's terms that occur in `content`."""
    folded = _fold(content)
    return tuple(t for t in plan.terms if t.pattern.search(folded))


def coverage(terms: Iterable[Term], weights: dict[Term, float]) -> float:
    """The share of the query's keyword weight that these (matched) terms carry, 0–1."""
    total = sum(weights.values())
    return sum(weights.get(t, 0.0) for t in terms) / total if total > 0 else 0.0


def _fold(text: str) -> str:
    """Strip diacritics as the FTS5 tokenizer does (remove_diacritics 2), keeping string offsets."""
    if text.isascii():
        return text
    out = []
    for ch in text:
        base = unicodedata.normalize("NFD", ch)[0] if ch.isalpha() else ch
        out.append(base if len(base) == 1 else ch)
    return "".join(out)


# -- readable output -----------------------------------------------------------------------------------

SNIPPET_CHARS = 200


def term_spans(text: str, terms: Iterable[str]) -> list[tuple[int, int]]:
    """(start, end) of every occurrence of any of `terms` (query terms as written) in `text`, sorted,
    overlaps merged."""
    folded = _fold(text)
    spans: list[tuple[int, int]] = []
    for term in terms:
        tokens = _tokens(term)
        if tokens:
            spans += [m.span() for m in _term_pattern(tokens).finditer(folded)]
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    return merged


def snippet(content: str, terms: Iterable[str] = (), width: int = SNIPPET_CHARS) -> str:
    """At most `width` characters of `content` (whitespace collapsed), around the first matched term
    when there is one; '…' marks a cut."""
    text = " ".join(content.split())
    if len(text) <= width:
        return text
    spans = term_spans(text, terms)
    start = 0
    if spans:
        first = spans[0][0]
        start = max(0, min(first - width // 4, len(text) - width))
        if start:  # begin on a word
            space = text.find(" ", start, first)
            start = space + 1 if space != -1 else start
    end = min(len(text), start + width - (1 if start else 0) - 1)
    cut = text[start:end]
    if end < len(text) and " " in cut[len(cut) // 2:]:
        cut = cut[:cut.rfind(" ")]
    return ("…" if start else "") + cut + ("…" if start + len(cut) < len(text) else "")


def highlight(text: str, terms: Iterable[str], before: str = "[", after: str = "]") -> str:
    """`text` with every occurrence of the terms wrapped in `before`/`after` (e.g. rich markup
    '[bold]' / '[/bold]', or ANSI codes). Case and diacritics are ignored, as the keyword index does."""
    out, pos = [], 0
    for s, e in term_spans(text, terms):
        out += [text[pos:s], before, text[s:e], after]
        pos = e
    out.append(text[pos:])
    return "".join(out)


# -- fusion ----------------------------------------------------------------------------------------------

# Hybrid score = (1 - a) * similarity + a * keyword coverage, with `a` by kind of query. Tuned on the
# tuned half of bench/search_sets (bench/search_quality.py); docs/search.md has the figures.
# A natural question is mostly a semantic question: the keyword side only breaks near-ties.
# A query that names something (E4417, PROJ-1234, "a quoted phrase") is about the memory that
# contains it: with a = 0.6, a memory holding every exact term outranks any that holds none.
ALPHA_NATURAL = 0.0
ALPHA_EXACT = 0.5

# "No good match": the best hit's cosine similarity is below this (its keyword coverage below
# NO_MATCH_COVERAGE in keyword mode) and it contains none of the query's exact terms.
NO_MATCH_SIMILARITY = 0.27
NO_MATCH_COVERAGE = 0.5


def keyword_weight(plan: QueryPlan) -> float:
    """`a` in the hybrid score for this query."""
    return ALPHA_EXACT if plan.exact else ALPHA_NATURAL


def fused_score(similarity: float | None, cover: float, exact: bool) -> float:
    a = ALPHA_EXACT if exact else ALPHA_NATURAL
    return (1.0 - a) * max(0.0, similarity or 0.0) + a * cover


def is_good_match(hit: Hit, plan: QueryPlan) -> bool:
    """Whether a hit answers the query well enough to be listed without being asked: its similarity
    is at least NO_MATCH_SIMILARITY (keyword mode: coverage at least NO_MATCH_COVERAGE), or it
    contains one of the query's identifiers, names or quoted phrases."""
    if any(t.exact and t.text in hit.matched_terms for t in plan.terms):
        return True
    if hit.similarity is None:
        return hit.score >= NO_MATCH_COVERAGE
    return hit.similarity >= NO_MATCH_SIMILARITY


def no_match_note(query: str, hit: Hit) -> str:
    """What `search_result` says instead of listing hits that are not good matches."""
    if hit.similarity is None:
        why = f"it holds {hit.score:.0%} of the query's keyword weight (< {NO_MATCH_COVERAGE:.0%})"
    else:
        why = f"similarity {hit.similarity:.2f} < {NO_MATCH_SIMILARITY:g}"
    return (f"no good match for {query!r}: the closest memory ({hit.memory.id}) is weak ({why}) and contains "
            "none of the query's names or identifiers; pass --min-score 0 to list the nearest anyway")
