"""Causal Transformer over a user's history, shared by the generator, the ranker and SASRec.

Histories are left-padded (newest item in the last column), so a position embedding indexed by
column means "k steps before the end" for every user. With ``input_norm`` each item vector is
layer-normalised (no parameters) before the position embedding is added: item embeddings start
small (std .02), and without it the blocks' outputs swamp the item identities in the residual stream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Pre-norm self-attention + MLP block."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.dropout if self.training else 0.0)  # [B, H, T, d]
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.mlp(self.norm2(x)))


class SequenceEncoder(nn.Module):
    def __init__(self, dim: int, num_layers: int, num_heads: int, dropout: float, max_len: int,
                 input_norm: bool = True):
        super().__init__()
        self.max_len = max_len
        self.input_norm = input_norm
        self.pos = nn.Embedding(max_len, dim)
        nn.init.normal_(self.pos.weight, std=0.02)  # the default N(0, 1) would drown the item inputs
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, num_heads, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """x: [B, T, D] item inputs; pad: [B, T] True at padding. Returns states h: [B, T, D]."""
        B, T, _ = x.shape
        if T > self.max_len:
            raise ValueError(f"history of length {T} exceeds the model's maximum {self.max_len}")
        if self.input_norm:  # padding rows are zero vectors and stay zero
            x = F.layer_norm(x, (x.shape[-1],))
        x = self.drop(x + self.pos.weight[self.max_len - T:][None])
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        # A query may see earlier non-padding keys and always itself (so padded rows are not all-masked).
        allowed = (causal[None] & ~pad[:, None, :]) | torch.eye(T, dtype=torch.bool, device=x.device)[None]
        allowed = allowed[:, None]  # [B, 1, T, T]
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters that every loss reaches: the adaptive weighter balances gradient norms on them."""
        return list(self.blocks[-1].parameters()) + list(self.norm.parameters())
