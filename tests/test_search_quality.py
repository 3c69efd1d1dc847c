"""The search-quality harness runs (on a small background, so it cannot rot) and prints its table.

Figures are not asserted beyond what any working search gets: that is bench/RESULTS.md's job, at 2k/20k.
"""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "search_quality.py"


def load_harness():
    spec = importlib.util.spec_from_file_location("search_quality", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_labelled_sets_are_big_enough_and_consistent():
    sq = load_harness()
    memories, queries = sq.load_sets(sorted((BENCH.parent / "search_sets").glob("*.json")))
    ids = {m["id"] for m in memories}
    kinds = [q["kind"] for q in queries]
    assert kinds.count("paraphrase") >= 80 and kinds.count("exact") >= 40 and kinds.count("none") >= 5
    assert all(a in ids for q in queries for a in q["answers"])
    assert all(q["answers"] for q in queries if q["kind"] != "none")
    for kind in ("paraphrase", "exact", "none"):
        held = [q for q in queries if q["kind"] == kind and q["split"] == "held"]
        assert len(held) == kinds.count(kind) // 3


def test_harness_prints_its_table(tmp_path, capsys):
    sq = load_harness()
    out = tmp_path / "rows.json"
    assert sq.main(["--n", "40", "--store", str(tmp_path / "store"), "--exact", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| mode | kind | half |" in printed and "hybrid ÷ semantic" in printed
    for mode in ("semantic", "keyword", "hybrid", "exact"):
        for kind in ("paraphrase", "exact", "none"):
            for half in ("tuned", "held", "all"):
                assert f"| {mode} | {kind} | {half} |" in printed
    summary = {(s["mode"], s["kind"], s["split"]): s for s in json.loads(out.read_text())["summary"]}
    # Any working search finds identifiers by keyword; a tiny background makes paraphrases easy.
    assert summary[("keyword", "exact", "all")]["r@1"] >= 0.9
    assert summary[("hybrid", "exact", "all")]["r@1"] >= 0.9
    assert summary[("hybrid", "paraphrase", "all")]["r@5"] >= 0.7
