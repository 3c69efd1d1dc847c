"""The model is the one DESIGN.md §5 names, and it means what it should."""

import numpy as np

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
