"""Transformer decoder over SID codes that reads the whole encoded history (``model.generator_layers`` > 0).

The per-level head (generator.py) sees one vector, the user state after the newest item. This decoder,
as in TIGER, reads the sequence it has decoded so far and cross-attends to every position of the
encoded history, so the choice of a deeper code can look again at the history items that share the
chosen prefix:

    inputs   = [h, code_0, ..., code_{l-1}] (+ a position embedding)        # [M, l+1, D]
    out      = blocks(inputs, memory = history states)                       # [M, l+1, D]
    logits_l = CodeGenerator.logits(out[:, l], l)                            # tied to the codebooks

Rows and memory: ``memory`` [R, T, D] holds R users (or training targets); the decoder's M rows are
those users' beams, user-major, M = R x W. Cross-attention groups the W beams of a user as one query
sequence against that user's memory, so the memory is never copied per beam.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention over the decoded codes, cross-attention to the history, MLP."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm_self = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj_self = nn.Linear(dim, dim)
        self.norm_cross = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj_cross = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [N, S, D] -> [N, H, S, D/H]
        N, S, D = x.shape
        return x.view(N, S, self.heads, D // self.heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:  # [N, H, S, d] -> [N, S, H*d]
        N, H, S, d = x.shape
        return x.transpose(1, 2).reshape(N, S, H * d)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x: [M, P, D]; memory: [R, T, D]; allowed: [R, T] keys a user's beams may attend to."""
        M, P, D = x.shape
        R = memory.shape[0]
        p = self.dropout if self.training else 0.0
        q, k, v = self.qkv(self.norm_self(x)).chunk(3, -1)
        a = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v),
                                           is_causal=True, dropout_p=p)  # [M, H, P, d]
        x = x + self.drop(self.proj_self(self._merge(a)))
        q = self.q(self.norm_cross(x)).reshape(R, (M // R) * P, D)  # a user's beams form one query sequence
        k, v = self.kv(memory).chunk(2, -1)
        a = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v),
                                           attn_mask=allowed[:, None, None, :], dropout_p=p)  # [R, H, W*P, d]
        x = x + self.drop(self.proj_cross(self._merge(a).reshape(M, P, D)))
        return x + self.drop(self.mlp(self.norm_mlp(x)))


class CodeDecoder(nn.Module):
    def __init__(self, dim: int, levels: int, num_layers: int, num_heads: int, dropout: float):
        super().__init__()
        self.pos = nn.Parameter(torch.randn(levels + 1, dim) * 0.02)  # position 0 = the user state
        self.memory_norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, num_heads, dropout) for _ in range(num_layers))
        self.drop = nn.Dropout(dropout)

    def start(self, h: torch.Tensor) -> torch.Tensor:
        """The decoder's input sequence before any code [M, 1, D] from user states h [M, D]."""
        return (h + self.pos[0])[:, None]

    def append(self, seq: torch.Tensor, level: int, code_vec: torch.Tensor) -> torch.Tensor:
        """seq [M, P, D] + the chosen level-``level`` code vectors [M, D] -> [M, P+1, D].

        Deeper residual code vectors are much smaller than the first level's: layer-normalised, every
        level enters at the same scale (as the history items do in the sequence encoder).
        """
        x = F.layer_norm(code_vec, (code_vec.shape[-1],)) + self.pos[level + 1]
        return torch.cat([seq, x[:, None]], 1)

    def forward(self, seq: torch.Tensor, memory: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """seq [M, P, D] decoded so far, memory [R, T, D] with allowed [R, T], M = R x W -> [M, P, D]."""
        if seq.shape[0] % memory.shape[0]:
            raise ValueError(f"decoder rows ({seq.shape[0]}) must be a multiple of the memory's users "
                             f"({memory.shape[0]})")
        memory = self.memory_norm(memory)
        x = self.drop(seq)
        for block in self.blocks:
            x = block(x, memory, allowed)
        return x


class BoundCodeDecoder:
    """A ``StepDecoder`` for beam search: the decoder bound to one batch's encoded histories.

    The beam state is the decoded input sequence [M, P, D]; each level re-runs the few positions (at
    most levels + 1) instead of caching keys and values.
    """

    def __init__(self, decoder: CodeDecoder, logits, codebooks: torch.Tensor, memory: torch.Tensor,
                 allowed: torch.Tensor):
        self.decoder, self.logits, self.codebooks = decoder, logits, codebooks
        self.memory, self.allowed = memory, allowed

    @property
    def reads_children(self) -> bool:
        owner = getattr(self.logits, "__self__", None)  # the model whose level_logits this is
        return bool(getattr(owner, "reads_children", False))

    def level_logits(self, s: torch.Tensor, level: int, child: torch.Tensor | None = None) -> torch.Tensor:
        out = self.decoder(s, self.memory, self.allowed)[:, -1]
        return self.logits(out, level) if child is None else self.logits(out, level, child)

    def advance(self, s: torch.Tensor, level: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder.append(s, level, self.codebooks[level][tokens])

    def user(self, b: int) -> BoundCodeDecoder:
        """The same decoder bound to user b alone (for the one-user-at-a-time reference search)."""
        return BoundCodeDecoder(self.decoder, self.logits, self.codebooks, self.memory[b : b + 1],
                                self.allowed[b : b + 1])
