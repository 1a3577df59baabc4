"""Ranking-driven enhancer (UniGRF): retrieval's high-ranked wrong items become the ranker's negatives.

Every ``every`` steps it runs constrained beam search for the batch's users (their newest position)
with the current model, and pushes the top retrieved items that are not the true next item into a
ring buffer. Each step's negatives are then uniform samples plus a draw from that buffer, so the
ranker keeps learning to separate what the retriever confuses.
"""

from __future__ import annotations

import torch

from raygr.models.batch import TrainBatch


class HardNegativeMiner:
    def __init__(self, num_items: int, num_negatives: int, hard_per_user: int, every: int, pool_size: int = 4096):
        self.num_items, self.num_negatives = num_items, num_negatives
        self.hard_per_user, self.every = hard_per_user, every
        self.pool = torch.zeros(0, dtype=torch.long)
        self.pool_size = pool_size

    @property
    def enabled(self) -> bool:
        return self.every > 0 and self.hard_per_user > 0 and self.num_negatives < self.num_items

    def negatives(self, device: torch.device | str) -> torch.Tensor:
        """[Nn] uniform negatives, plus up to half as many mined hard negatives.

        With ``num_negatives >= num_items`` every item is a negative (the full-catalogue softmax, as
        SASRec trains): there is nothing left to mine.
        """
        if self.num_negatives >= self.num_items:
            return torch.arange(1, self.num_items + 1, device=device)
        uniform = torch.randint(1, self.num_items + 1, (self.num_negatives,), device=device)
        if len(self.pool) == 0:
            return uniform
        n_hard = min(len(self.pool), self.num_negatives // 2)
        hard = self.pool[torch.randint(0, len(self.pool), (n_hard,))].to(device)
        return torch.cat([uniform, hard])

    @torch.no_grad()
    def maybe_mine(self, model: torch.nn.Module, batch: TrainBatch, step: int) -> int:
        """Mine at every ``every``-th step (not step 0); returns how many items were added."""
        if not self.enabled or step == 0 or step % self.every or not getattr(model, "has_ranker", False):
            return 0
        was_training = model.training
        model.eval()
        try:
            last = batch.target[:, -1]
            rows = last > 0
            items, _ = model.retrieve(batch.input[rows], k=self.hard_per_user + 1)
            keep = (items != last[rows][:, None]) & (items > 0)  # [B, k+1]
            keep &= keep.cumsum(1) <= self.hard_per_user  # the top hard_per_user wrong ones per user
            wrong = items[keep]
        finally:
            model.train(was_training)
        self.pool = torch.cat([wrong.cpu(), self.pool])[: self.pool_size]
        return int(wrong.numel())
