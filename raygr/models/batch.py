"""Typed training batch, built from the dicts that Ray Data or the in-process iterator yield."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TrainBatch:
    input: torch.Tensor  # [B, T] int64 item indices, left-padded with 0
    target: torch.Tensor  # [B, T] int64 next item at each position, 0 = no target

    @classmethod
    def from_mapping(cls, batch: Mapping[str, torch.Tensor | np.ndarray], device: torch.device | str = "cpu"
                     ) -> TrainBatch:
        def t(x: torch.Tensor | np.ndarray) -> torch.Tensor:
            return torch.as_tensor(x).to(device=device, dtype=torch.long)
        return cls(input=t(batch["input"]), target=t(batch["target"]))

    @property
    def num_targets(self) -> int:
        return int((self.target > 0).sum())
