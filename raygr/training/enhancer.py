"""Ranking-driven enhancer (UniGRF): retrieval's high-ranked wrong items become the ranker's negatives.

Every ``every`` steps it runs constrained beam search for the batch's users (their newest position)
with the current model, and pushes the top retrieved items that are not the true next item into a
ring buffer. The model's SID table, trie and item caches are rebuilt first: the codes and the item
vectors move every step, and retrieval through the caches of the epoch's start would mine what the
retriever confused then, not now. Each step's negatives are then uniform samples plus a draw from that buffer, so the
ranker keeps learning to separate what the retriever confuses.
"""

from __future__ import annotations

import torch

from raygr.models.batch import TrainBatch


class HardNegativeMiner:
    def __init__(self, num_items: int, num_negatives: int, hard_per_user: int, every: int, pool_size: int = 4096):
        self.num_items = num_items
        self.num_negatives = num_items if num_negatives == 0 else num_negatives  # 0: every item
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
    def mine(self, model: torch.nn.Module, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Hard negatives per user [B, hard_per_user] (0 = none): the top retrieved items for ``history``
        [B, T] that are not ``target`` [B], best first, retrieved with freshly rebuilt caches."""
        was_training = model.training
        model.eval()
        try:
            model.refresh()
            items, _ = model.retrieve(history, k=self.hard_per_user + 1)  # [B, k+1]
        finally:
            model.train(was_training)
        keep = (items != target[:, None]) & (items > 0)
        keep &= keep.cumsum(1) <= self.hard_per_user  # the top hard_per_user wrong ones per user
        # Kept items moved to the front of each row, in retrieval order (a stable sort on "not kept").
        order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
        mined = torch.where(keep, items, torch.zeros_like(items)).gather(1, order)
        return mined[:, : self.hard_per_user]

    def maybe_mine(self, model: torch.nn.Module, batch: TrainBatch, step: int) -> int:
        """Mine at every ``every``-th step (not step 0); returns how many items were added."""
        if not self.enabled or step == 0 or step % self.every or not getattr(model, "has_ranker", False):
            return 0
        last = batch.target[:, -1]
        rows = last > 0
        mined = self.mine(model, batch.input[rows], last[rows])
        wrong = mined[mined > 0]
        self.pool = torch.cat([wrong.cpu(), self.pool])[: self.pool_size]
        return int(wrong.numel())
