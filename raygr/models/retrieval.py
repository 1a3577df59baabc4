"""Retrieval and ranking for ``GenerativeRecommender`` (a mixin): constrained beam search over whole
SIDs or SID prefixes, then the ranker over the candidates.

Every method takes ``states``, the history's ``history_states`` [B, T, D], so a caller that runs both
stages on one batch (recommend, evaluation) encodes the history once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raygr.models.decoding import Trie, beam_search


class Retrieval:
    """Retrieval, ranking and their composition; every attribute used here is the model's."""

    @torch.no_grad()
    def retrieve(self, history: torch.Tensor, k: int, beam: int | None = None,
                 states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Constrained beam search: top-k items [B, k] and their log-probabilities."""
        decoder, s0 = self.step_decoder(history, states)
        return beam_search(decoder, s0, self.trie, beam=max(beam or k, k), k=k, renormalize=self.cfg.trie_softmax)

    @torch.no_grad()
    def rank(self, history: torch.Tensor, candidates: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        """Ranker scores [B, C] for candidate items [B, C] (0 = empty slot, scored -inf)."""
        self._ready()
        h = self.user_states(history) if states is None else self.split_states(states)[0][:, -1]  # [B, D]
        u = self.ranker.user_state(h)  # [B, D]
        scores = (self._rank_vecs[candidates] * u[:, None]).sum(-1)
        return scores.masked_fill(candidates == 0, float("-inf"))

    @torch.no_grad()
    def retrieve_prefixes(self, history: torch.Tensor, levels: int, width: int,
                          states: torch.Tensor | None = None, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item under the ``width`` best SID prefixes of ``levels`` codes [B, C] (0 = empty slot).

        The beam search decodes only the first ``levels`` codes; the items come grouped by prefix, best
        prefix first, each scored [B, C] with its prefix's log-probability (-inf in empty slots). C is
        the largest number of items any user gets in the batch, or at most ``limit`` (> 0): the first
        ``limit`` of them, the last prefix cut short.
        """
        decoder, s0 = self.step_decoder(history, states)
        trie = Trie(self.trie.child[:levels], self.trie.vocab[:levels])
        nodes, scores = beam_search(decoder, s0, trie, beam=width,
                                    renormalize=self.cfg.trie_softmax)  # [B, W] prefix nodes
        order, offsets = self._prefix_groups(levels)
        valid = torch.isfinite(scores)
        nodes = nodes.clamp(min=0)
        starts = offsets[nodes]
        counts = torch.where(valid, offsets[nodes + 1] - starts, torch.zeros_like(starts))  # [B, W]
        ends = counts.cumsum(1)  # [B, W] inclusive
        size = max(int(ends[:, -1].max()), 1)
        slot = torch.arange(min(size, limit) if limit > 0 else size, device=s0.device)  # [C]
        which = torch.searchsorted(ends, slot.expand(len(ends), -1).contiguous(), right=True)  # [B, C]
        which = which.clamp(max=nodes.shape[1] - 1)
        pos = starts.gather(1, which) + slot - (ends - counts).gather(1, which)
        filled = slot < ends[:, -1:]
        items = torch.where(filled, order[pos.clamp(max=len(order) - 1)], torch.zeros_like(pos))
        return items, scores.gather(1, which).masked_fill(~filled, float("-inf"))

    def _prefix_groups(self, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Items 1..N sorted by their prefix node at depth ``levels`` [N'], and each node's offset [nodes + 1]."""
        if levels not in self._prefix_cache:
            codes = self.table.codes.to(self.trie.child[0].device)
            node = torch.zeros(len(codes), dtype=torch.long, device=codes.device)
            for level in range(levels):
                node = self.trie.child[level][node.clamp(min=0), codes[:, level]].where(node >= 0, node)
            node[0] = -1  # padding
            items = torch.nonzero(node >= 0).squeeze(1)
            order = items[torch.argsort(node[items], stable=True)]
            counts = torch.bincount(node[items], minlength=int(self.trie.child[levels - 1].max()) + 1)
            self._prefix_cache[levels] = (order, F.pad(counts.cumsum(0), (1, 0)))
        return self._prefix_cache[levels]

    def candidates(self, history: torch.Tensor, num_candidates: int, prefix_levels: int = 0,
                   num_prefixes: int = 0, states: torch.Tensor | None = None, max_candidates: int = 0) -> torch.Tensor:
        """What retrieval hands the ranker [B, C]: whole SIDs, or the items under the best prefixes (at
        most ``max_candidates`` > 0 of them)."""
        if prefix_levels > 0:
            return self.retrieve_prefixes(history, prefix_levels, num_prefixes, states, max_candidates)[0]
        return self.retrieve(history, k=num_candidates, states=states)[0]

    @torch.no_grad()
    def recommend(self, history: torch.Tensor, k: int, num_candidates: int, prefix_levels: int = 0,
                  num_prefixes: int = 0, max_candidates: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Retrieve candidates (see ``candidates``), re-score them with the ranker, return the top k."""
        states = self.history_states(history)  # [B, T, D], for both stages
        cands = self.candidates(history, max(num_candidates, k), prefix_levels, num_prefixes, states,
                                max_candidates)  # as serving cuts: fewer than k come back padded
        return self.rerank(history, cands, k, states)

    @torch.no_grad()
    def rerank(self, history: torch.Tensor, candidates: torch.Tensor, k: int,
               states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ranker's top k [B, k] of candidates [B, C], with their scores."""
        scores = self.rank(history, candidates, states)
        top = scores.topk(min(k, candidates.shape[1]), dim=1)
        items = candidates.gather(1, top.indices).masked_fill(~torch.isfinite(top.values), 0)
        pad = k - items.shape[1]  # fewer candidates than k: empty slots, as retrieve gives them
        return F.pad(items, (0, pad)), F.pad(top.values, (0, pad), value=float("-inf"))
