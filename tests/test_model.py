"""The model is the one DESIGN.md §5 names, and it means what it should."""

import numpy as np
import pytest

from memfs.embedder import MODEL_DIM, MODEL_SHA256, MiniLMEmbedder, model_file_sha256


def test_packaged_weights_are_upstream_all_minilm_l6_v2():
    assert model_file_sha256() == MODEL_SHA256


def test_embeddings_are_normalised_and_meaningful():
    e = MiniLMEmbedder()
    v = e.embed(["The cat sat on the mat", "A kitten is sitting on a rug", "Quarterly tax filing deadline"])
    assert v.shape == (3, MODEL_DIM) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.5 > v[0] @ v[2]
    assert e.embedded == 3
    assert e.embed([]).shape == (0, MODEL_DIM) and e.embedded == 3


def test_once_the_model_is_loaded_numpy_blas_leaves_parallel_work_to_torch():
    """Two thread pools sized to every core fought over them: a search's matrix product left
    OpenBLAS workers spinning while the model encoded the next query (p50 7.8 -> 16 ms)."""
    from threadpoolctl import threadpool_info

    MiniLMEmbedder().embed(["load the model"])
    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(p["num_threads"] == 1 for p in blas), blas


def test_a_short_query_runs_on_one_thread_and_a_single_add_on_every_core():
    """A query is encoded on one torch thread (issue #14); a single added memory, however short, on
    torch's whole pool (issue #26: the query rule caught single adds, 25 ms instead of 18 ms)."""
    import os
    import threading

    import torch

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: one thread is every core")
    e = MiniLMEmbedder()
    seen = {}

    def run():  # torch's thread count is per calling thread: look on a fresh one
        e.embed(["a short memory about herons"])
        seen["add"] = torch.get_num_threads()
        e.embed_query("herons")
        seen["query"] = torch.get_num_threads()
        e.embed(["another short memory"])
        seen["add again"] = torch.get_num_threads()
    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen["query"] == 1
    assert seen["add"] == seen["add again"] > 1


def test_memfs_runs_the_model_as_sentence_transformers_does():
    """memfs/minilm.py runs the model on torch alone (a cold start without sentence-transformers'
    ~5 s import, issue #26); its vectors must be sentence-transformers' own: realistic paragraphs,
    white space at the ends, accents and other scripts, a text past the model's 256 word pieces,
    batches of mixed lengths."""
    from sentence_transformers import SentenceTransformer

    from conftest import filler_texts
    from memfs.embedder import model_dir, model_input

    texts = filler_texts(120) + ["  padded with spaces  ", "x", "ÜBER Straße naïve café", "日本語のテキスト",
                                 "\tTabbed\ttext\n", "word " * 3000, "the deploy window is Tuesday"]
    ours = MiniLMEmbedder().embed(texts)
    reference = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True).encode(
        [model_input(t) for t in texts], batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    assert np.abs(ours - reference).max() < 1e-5
    assert (ours * reference).sum(1).min() > 0.99999


def test_a_cold_process_that_embeds_never_imports_sentence_transformers():
    import subprocess
    import sys

    code = ("import sys; from memfs.embedder import MiniLMEmbedder; MiniLMEmbedder().embed(['x']); "
            "print(sorted(m for m in ('sentence_transformers', 'transformers', 'huggingface_hub') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout
