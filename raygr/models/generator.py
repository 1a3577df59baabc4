"""Generator head: predicts the next item's SID level by level from the user state.

    s_0 = h;  logits_l = query_l(s_l) . codebook_l + bias_l;  s_{l+1} = s_l + step_l(code vector_l)
    (mlp=True: s_{l+1} = s_l + MLP_l([s_l, code vector_l]), so a deeper level's logits can depend on
    the state and the chosen prefix jointly; residual codes mean different things under different prefixes)

Output embeddings are the quantizer's codebooks themselves (tied), and teacher forcing feeds the
target's straight-through code vectors, so the generator loss reaches the codebooks and, through
the Gumbel-softmax assignment, the item encoder. The last level is the collision suffix.
"""

from __future__ import annotations

import torch
from torch import nn

from raygr.models.code_decoder import CodeDecoder


class CodeGenerator(nn.Module):
    """``decoder_layers`` > 0 replaces the state-update steps by a Transformer decoder (code_decoder.py)
    that reads the decoded codes and the whole history; the tied output layer stays the same."""

    def __init__(self, dim: int, levels: int, codes: int, max_suffix: int, mlp: bool = False,
                 decoder_layers: int = 0, heads: int = 2, dropout: float = 0.1):
        super().__init__()
        self.levels = levels
        self.mlp = mlp
        self.decoder = CodeDecoder(dim, levels, decoder_layers, heads, dropout) if decoder_layers else None
        self.query = nn.ModuleList(nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim)) for _ in range(levels + 1))
        self.bias = nn.Parameter(torch.zeros(levels, codes))
        def step() -> nn.Module:
            return nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)) if mlp \
                else nn.Linear(dim, dim)
        self.step = nn.ModuleList(step() for _ in range(levels if self.decoder is None else 0))
        self.suffix = nn.Embedding(max_suffix, dim)

    def logits(self, s: torch.Tensor, level: int, codebooks: torch.Tensor) -> torch.Tensor:
        """s: [..., D] -> [..., K] for a code level, [..., S] for the suffix level (== levels)."""
        q = self.query[level](s)
        if level == self.levels:
            return q @ self.suffix.weight.T
        C = codebooks[level]
        # Deeper residual codebooks are small: unit RMS gives every level the same logit range.
        # Clamp before the square root: an all-zero codebook (each item alone in its level-0 code, so
        # no residual is left) would give sqrt an infinite gradient and NaN every loss.
        C = C * C.pow(2).mean().clamp_min(1e-12).rsqrt()
        return q @ C.T + self.bias[level]

    def advance(self, s: torch.Tensor, level: int, code_vec: torch.Tensor) -> torch.Tensor:
        """State after choosing the level's code whose vector is ``code_vec`` [..., D]."""
        if self.decoder is not None:
            raise RuntimeError("this generator decodes with its Transformer decoder: use "
                               "GenerativeRecommender.step_decoder, not the per-level steps")
        if self.mlp:
            return s + self.step[level](torch.cat([s, code_vec.expand_as(s)], -1))
        return s + self.step[level](code_vec)
