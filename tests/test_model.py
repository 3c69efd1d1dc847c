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
