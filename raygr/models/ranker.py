"""Ranker: scores (user state, candidate item), the candidate seen through its SID code vectors.

It shares the sequence encoder with the generator (DIG / UniGRF): the same user state h feeds both
the code generator and this dot-product scorer, so one run yields a retriever and a ranker.
"""

from __future__ import annotations

import torch
from torch import nn


class Ranker(nn.Module):
    def __init__(self, dim: int, levels: int, num_items: int, use_item_id: bool, residual: bool = False,
                 use_codes: bool = True):
        super().__init__()
        self.use_codes = use_codes
        self.user = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.item = nn.Sequential(nn.Linear(levels * dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.item_id = nn.Embedding(num_items + 1, dim) if use_item_id else None
        if self.item_id is not None:
            nn.init.normal_(self.item_id.weight, std=0.02)
        self.residual = residual
        if residual:
            # Both branches start at zero: scores begin as SASRec's <h, item-ID embedding>.
            for branch in (self.user[-1], self.item[-1]):
                nn.init.zeros_(branch.weight)
                nn.init.zeros_(branch.bias)

    def user_state(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.user(h) if self.residual else self.user(h)  # [..., D]

    def item_vectors(self, code_vecs: torch.Tensor, item_idx: torch.Tensor) -> torch.Tensor:
        """code_vecs: [M, L, D] per-level code vectors; item_idx: [M]. Returns [M, D]."""
        if not self.use_codes:  # the config requires the ID table then
            return self.item_id(item_idx)
        v = self.item(code_vecs.flatten(1))
        if self.item_id is not None:
            v = v + self.item_id(item_idx)
        return v
