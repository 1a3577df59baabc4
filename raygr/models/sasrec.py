"""SASRec: ID-based causal Transformer trained with full softmax over the catalogue (the strong baseline).

With fewer negatives than items (``model.num_negatives``, the loop's uniform draw shared by the batch)
it trains with sampled softmax instead: the target against those items, any draw of the target itself
masked. Uniform sampling shifts every negative's logit by the same log-probability, so no correction
is needed. Scoring and retrieval are over the full catalogue either way.

It shares the sequence encoder and the training/evaluation code with the generative model and
exposes the same interface (``losses``, ``refresh``, ``retrieve``, ``recommend``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raygr.config import ModelConfig
from raygr.models.batch import TrainBatch
from raygr.models.sequence import SequenceEncoder


class SASRec(nn.Module):
    has_ranker = False

    def __init__(self, cfg: ModelConfig, num_items: int, max_history: int):
        super().__init__()
        self.cfg = cfg
        self.num_items = num_items
        self.item_emb = nn.Embedding(num_items + 1, cfg.dim, padding_idx=0)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        # Untied, the output table learns what an item is as a next item, the input one what it says
        # about the user; tied, one table has to serve both.
        self.out_emb = None if cfg.tie_embeddings else nn.Embedding(num_items + 1, cfg.dim)
        if self.out_emb is not None:
            nn.init.normal_(self.out_emb.weight, std=0.02)
        self.seq = SequenceEncoder(cfg.dim, cfg.num_layers, cfg.num_heads, cfg.dropout, max_history,
                                   cfg.input_norm)

    def losses(self, batch: TrainBatch, step: int, negatives: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        has_tgt = batch.target > 0
        h = self.seq(self.item_emb(batch.input), batch.input == 0)[has_tgt]  # [P, D]
        target = batch.target[has_tgt]  # [P]
        if negatives is not None and len(negatives) < self.num_items:
            table = self.output_table()
            pos = (h * table[target]).sum(-1, keepdim=True)  # [P, 1]
            neg = h @ table[negatives].T  # [P, Nn]
            neg = neg.masked_fill(negatives[None, :] == target[:, None], float("-inf"))
            logits = torch.cat([pos, neg], 1)  # the target is class 0
            return {"generator": F.cross_entropy(logits, torch.zeros_like(target))}
        logits = h @ self.output_table().T  # [P, N+1]
        logits[:, 0] = float("-inf")
        return {"generator": F.cross_entropy(logits, target)}

    forward = losses  # so DDP wraps the loss computation

    def output_table(self) -> torch.Tensor:
        return (self.out_emb if self.out_emb is not None else self.item_emb).weight  # [N+1, D]

    def refresh(self) -> None:  # nothing cached
        pass

    @torch.no_grad()
    def scores(self, history: torch.Tensor) -> torch.Tensor:
        h = self.seq(self.item_emb(history), history == 0)[:, -1]  # [B, D]
        s = h @ self.output_table().T  # [B, N+1]
        s[:, 0] = float("-inf")
        return s

    @torch.no_grad()
    def retrieve(self, history: torch.Tensor, k: int, beam: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        top = self.scores(history).topk(min(k, self.num_items), dim=1)
        return top.indices, top.values

    def recommend(self, history: torch.Tensor, k: int, num_candidates: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return self.retrieve(history, k)
