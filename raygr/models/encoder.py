"""Item encoder: item content -> a dense vector z, from raw text tokens (no external model needed).

Content tokens are hashed into ``token_buckets`` buckets and averaged by an EmbeddingBag; an optional
dense feature column (e.g. a text embedding computed elsewhere) and an optional item-ID embedding
are added before a small MLP.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn

MAX_TOKENS = 48  # per item; long descriptions add little beyond their first words


def hash_token(token: str, buckets: int) -> int:
    """Stable bucket in 1..buckets-1 (0 is padding); crc32 is stable across processes, unlike hash()."""
    return 1 + zlib.crc32(token.encode("utf-8")) % (buckets - 1)


def token_matrix(tokens: list[list[str]], buckets: int, max_tokens: int = MAX_TOKENS) -> torch.Tensor:
    """[N+1, max_tokens] bucket ids, row i+1 for item index i+1, 0-padded; row 0 is the padding item."""
    width = max(1, min(max_tokens, max((len(t) for t in tokens), default=1)))
    out = np.zeros((len(tokens) + 1, width), dtype=np.int64)
    for i, toks in enumerate(tokens):
        ids = [hash_token(t, buckets) for t in toks[:width]]
        out[i + 1, :len(ids)] = ids
    return torch.from_numpy(out)


class ItemEncoder(nn.Module):
    """Encodes item indices into content vectors.

    Args:
        tokens: [N+1, W] bucket ids per item (``token_matrix``).
        dense: optional [N+1, F] dense features.
        use_item_id: add a learned per-item embedding (makes the encoder memorise, not generalise).
    Example:
        >>> enc = ItemEncoder(token_matrix([["a"], ["b"]], 64), dim=8)
        >>> enc(torch.tensor([1, 2])).shape
        torch.Size([2, 8])
    """

    def __init__(self, tokens: torch.Tensor, dim: int, buckets: int | None = None,
                 dense: torch.Tensor | None = None, use_item_id: bool = False):
        super().__init__()
        buckets = buckets or int(tokens.max()) + 1
        self.register_buffer("tokens", tokens, persistent=False)
        self.bag = nn.EmbeddingBag(buckets, dim, mode="mean", padding_idx=0)
        self.dense_proj = None
        if dense is not None:
            self.register_buffer("dense", dense.float(), persistent=False)
            self.dense_proj = nn.Linear(dense.shape[1], dim)
        self.item_emb = nn.Embedding(tokens.shape[0], dim) if use_item_id else None
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        nn.init.normal_(self.bag.weight, std=0.1)

    @property
    def num_items(self) -> int:
        return self.tokens.shape[0] - 1

    def forward(self, item_idx: torch.Tensor) -> torch.Tensor:
        flat = item_idx.reshape(-1)
        x = self.bag(self.tokens[flat])  # [M, D]; empty bags (no tokens) give zeros
        if self.dense_proj is not None:
            x = x + self.dense_proj(self.dense[flat])
        if self.item_emb is not None:
            x = x + self.item_emb(flat)
        z = x + self.mlp(x)
        return z.reshape(*item_idx.shape, -1)  # [..., D]
