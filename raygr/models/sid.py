"""The SID <-> item table: every item's codes plus a suffix token that makes SIDs one-to-one.

Items whose L codes coincide are told apart by a suffix: their rank (by item index) within the
group. Ranking by index keeps an item's suffix stable while the group's membership is unchanged,
which matters because the generator learns to predict suffixes between table refreshes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class SIDTable:
    codes: torch.Tensor  # [N+1, L] int64; row 0 (padding) is 0
    suffix: torch.Tensor  # [N+1] int64 rank within the group of items sharing all L codes
    num_codes: int
    max_suffix: int

    @classmethod
    def from_codes(cls, codes: torch.Tensor, num_codes: int, max_suffix: int) -> SIDTable:
        """codes: [N, L] for items 1..N."""
        c = codes.cpu().numpy().astype(np.int64)
        N, L = c.shape
        order = np.lexsort((np.arange(N),) + tuple(c[:, l] for l in reversed(range(L))))
        sc = c[order]
        new_group = np.ones(N, dtype=bool)
        new_group[1:] = (sc[1:] != sc[:-1]).any(axis=1)
        group_start = np.maximum.accumulate(np.where(new_group, np.arange(N), 0))
        suffix = np.empty(N, dtype=np.int64)
        suffix[order] = np.arange(N) - group_start
        full_codes = np.zeros((N + 1, L), dtype=np.int64)
        full_codes[1:] = c
        full_suffix = np.zeros(N + 1, dtype=np.int64)
        full_suffix[1:] = suffix
        return cls(torch.from_numpy(full_codes), torch.from_numpy(full_suffix), num_codes, max_suffix)

    @property
    def num_items(self) -> int:
        return self.codes.shape[0] - 1

    @property
    def levels(self) -> int:
        return self.codes.shape[1]

    def sids(self) -> torch.Tensor:
        """[N+1, L+1] codes followed by the suffix token."""
        return torch.cat([self.codes, self.suffix[:, None]], dim=1)

    def reachable(self) -> torch.Tensor:
        """[N+1] bool: items whose suffix fits in ``max_suffix`` slots (others cannot be generated)."""
        r = self.suffix < self.max_suffix
        r[0] = False
        return r

    def collision_rate(self) -> float:
        """Share of items that share their L codes with another item (before the suffix)."""
        c = self.codes[1:].numpy()
        _, inv, cnt = np.unique(c, axis=0, return_inverse=True, return_counts=True)
        return float((cnt[inv.reshape(-1)] > 1).mean())

    def to(self, device: torch.device | str) -> SIDTable:
        return SIDTable(self.codes.to(device), self.suffix.to(device), self.num_codes, self.max_suffix)
