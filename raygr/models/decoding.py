"""Constrained beam search over the valid SIDs: batched, vectorised, never invalid, never a repeat.

The valid SIDs form a trie stored as one dense child table per level: ``child[l][node, token]`` is
the node reached from ``node`` by ``token`` (-1 if no item has that prefix); at the last (suffix)
level the "node" is the item index itself. A beam step is then a gather plus a top-k over
``[batch, beam x vocab]``, with no Python loop over tokens or users. Every finished beam is a
distinct root-to-leaf path, and leaves are distinct items, so results never repeat.

``reference_beam_search`` is the slow, obviously-correct twin (Python dict trie, one user at a time)
that ``tests/test_decoding.py`` checks this against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from raygr.models.sid import SIDTable


class StepDecoder(Protocol):
    """Decoding state: a tensor whose first dimension is the row (user x beam, user-major); the rest is
    the decoder's own ([M, D] for the per-level head, [M, P, D] decoded inputs for the Transformer).

    A decoder with ``reads_children = True`` also gets each row's children in the trie, ``child`` [M, V]
    (the node or item each token leads to, -1 = none), so it can score a token by where it leads
    (``model.node_embeddings``), not only by the code it is."""

    def level_logits(self, s: torch.Tensor, level: int, child: torch.Tensor | None = None
                     ) -> torch.Tensor: ...  # [M, ...] -> [M, V_level]
    def advance(self, s: torch.Tensor, level: int, tokens: torch.Tensor) -> torch.Tensor: ...  # -> [M, ...]


@dataclass
class Trie:
    child: list[torch.Tensor]  # per level: [num_nodes_l, V_l] int64, -1 = invalid
    vocab: list[int]

    @property
    def depth(self) -> int:
        return len(self.child)

    @classmethod
    def from_table(cls, table: SIDTable) -> Trie:
        sids = table.sids()[1:]  # [N, L+1]
        items = torch.arange(1, table.num_items + 1)
        keep = table.reachable()[1:]
        sids, items = sids[keep], items[keep]
        vocab = [table.num_codes] * table.levels + [table.max_suffix]
        # Sort lexicographically so that items sharing a prefix are contiguous.
        order = torch.arange(len(items))
        for level in reversed(range(sids.shape[1])):
            order = order[torch.argsort(sids[order, level], stable=True)]
        sids, items = sids[order], items[order]
        depth = sids.shape[1]
        node = torch.zeros(len(items), dtype=torch.long)  # prefix id at the current level (root = 0)
        child = []
        for level in range(depth):
            if level + 1 < depth:
                changed = torch.ones(len(items), dtype=torch.bool)
                changed[1:] = (sids[1:, : level + 1] != sids[:-1, : level + 1]).any(dim=1)
                nxt = torch.cumsum(changed.long(), 0) - 1
            else:
                nxt = items
            n_nodes = int(node.max()) + 1 if len(items) else 1
            table_l = torch.full((n_nodes, vocab[level]), -1, dtype=torch.long)
            table_l[node, sids[:, level]] = nxt
            child.append(table_l)
            node = nxt
        return cls(child=child, vocab=vocab)

    def to(self, device: torch.device | str) -> Trie:
        return Trie([c.to(device) for c in self.child], self.vocab)


@torch.no_grad()
def beam_search(decoder: StepDecoder, s0: torch.Tensor, trie: Trie, beam: int, k: int | None = None,
                renormalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k items per user by the sum of per-level log-probabilities.

    Args:
        s0: [B, ...] start states, one per user. beam: width kept at every level. k: results (<= beam;
        default beam). renormalize: each level's softmax runs over the codes that continue a valid SID
        only (a model trained with ``model.trie_softmax``), so a path's score is its item's probability.
    Returns:
        items [B, k] (0 where fewer than k valid items exist) and scores [B, k] (-inf there).
    """
    k = beam if k is None else min(k, beam)
    B = s0.shape[0]
    nodes = torch.zeros(B, 1, dtype=torch.long, device=s0.device)  # [B, W]
    scores = torch.zeros(B, 1, device=s0.device)
    s = s0  # [B * W, ...], user-major
    for level in range(trie.depth):
        W, V = nodes.shape[1], trie.vocab[level]
        child = trie.child[level][nodes.clamp(min=0)]  # [B, W, V]
        logits = (decoder.level_logits(s, level, child.view(B * W, V)) if getattr(decoder, "reads_children", False)
                  else decoder.level_logits(s, level)).float().view(B, W, V)
        if renormalize:  # a row with no valid child gives NaN here; the mask below never picks it
            logits = logits.masked_fill(child < 0, float("-inf"))
        logp = F.log_softmax(logits, -1)
        cand = torch.where(child >= 0, scores[..., None] + logp, torch.full_like(logp, float("-inf")))
        width = min(beam if level + 1 < trie.depth else k, W * V)
        top = cand.view(B, W * V).topk(width, dim=1)
        parent, token = top.indices // V, top.indices % V
        nodes = child.view(B, W * V).gather(1, top.indices)
        scores = top.values
        if level + 1 < trie.depth:
            rows = (torch.arange(B, device=s.device)[:, None] * W + parent).reshape(-1)  # [B * width]
            s = decoder.advance(s[rows], level, token.reshape(-1))
    valid = torch.isfinite(scores)
    items = torch.where(valid, nodes, torch.zeros_like(nodes))
    if items.shape[1] < k:  # catalogue smaller than k
        pad = k - items.shape[1]
        items = F.pad(items, (0, pad))
        scores = F.pad(scores, (0, pad), value=float("-inf"))
    return items, scores


@torch.no_grad()
def reference_beam_search(decoder: StepDecoder, s0: torch.Tensor, table: SIDTable, beam: int,
                          k: int | None = None, renormalize: bool = False,
                          nodes: Trie | None = None) -> tuple[list[list[int]], list[list[float]]]:
    """One user at a time, a dict trie, explicit lists: slow and easy to check.

    ``nodes``: for a decoder that reads children, the trie whose node numbering it was built with; only
    its child tables are read, to tell the decoder where each token of a beam's prefix leads."""
    k = beam if k is None else min(k, beam)
    trie: dict = {}
    sids = table.sids().tolist()
    reachable = table.reachable().tolist()
    for item in range(1, table.num_items + 1):
        if not reachable[item]:
            continue
        node = trie
        for tok in sids[item][:-1]:
            node = node.setdefault(tok, {})
        node[sids[item][-1]] = item
    depth = table.levels + 1
    all_items, all_scores = [], []
    for b in range(s0.shape[0]):
        beams = [(0.0, trie, s0[b : b + 1], 0)]  # (score, trie node, state [1, ...], node number)
        for level in range(depth):
            cands = []
            for score, node, s, number in beams:
                if getattr(decoder, "reads_children", False):
                    logits = decoder.level_logits(s, level, nodes.child[level][number][None]).float()[0]
                else:
                    logits = decoder.level_logits(s, level).float()[0]
                if renormalize:
                    valid = torch.tensor(sorted(node), dtype=torch.long, device=logits.device)
                    logp = torch.full_like(logits, float("-inf"))
                    logp[valid] = F.log_softmax(logits[valid], -1)
                else:
                    logp = F.log_softmax(logits, -1)
                for tok, nxt in node.items():
                    after = int(nodes.child[level][number, tok]) if nodes is not None else 0
                    cands.append((score + float(logp[tok]), tok, nxt, s, after))
            cands.sort(key=lambda c: -c[0])
            width = beam if level + 1 < depth else k
            beams = []
            for score, tok, nxt, s, after in cands[:width]:
                if level + 1 < depth:
                    s = decoder.advance(s, level, torch.tensor([tok], device=s.device))
                beams.append((score, nxt, s, after))
        all_items.append([nxt for _, nxt, _, _ in beams])
        all_scores.append([score for score, _, _, _ in beams])
    return all_items, all_scores
