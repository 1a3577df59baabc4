"""Leave-one-out split over prepared sequences.

Per user (oldest first): the last item is the test target, the second-last the validation target,
and every earlier position is a training target (``raygr.data.windows``). Histories are capped at
``max_history`` most-recent items and left-padded with 0, so the newest item is always in the last
column. Users too short for a split are left out of it (test needs 2 items, validation 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from raygr.data.dataset import SequenceData

Split = Literal["valid", "test"]


@dataclass
class EvalExamples:
    user_idx: np.ndarray  # [n] int64
    history: np.ndarray  # [n, T] int64, left-padded with 0, newest item last
    target: np.ndarray  # [n] int64

    def __len__(self) -> int:
        return len(self.target)

    def subset(self, idx: np.ndarray) -> EvalExamples:
        return EvalExamples(self.user_idx[idx], self.history[idx], self.target[idx])


def left_pad(offsets: np.ndarray, items: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """Rows ``items[max(start, end-width):end]`` right-aligned in a ``[n, width]`` zero matrix."""
    idx = ends[:, None] - width + np.arange(width)[None, :]  # [n, width]
    valid = idx >= starts[:, None]
    out = np.where(valid, items[np.clip(idx, 0, max(len(items) - 1, 0))], 0)
    return out.astype(np.int64)


def eval_examples(seqs: SequenceData, split: Split, max_history: int) -> EvalExamples:
    """Histories and targets of the validation or test split, one example per eligible user."""
    back = {"valid": 2, "test": 1}[split]
    lengths = seqs.lengths()
    users = np.flatnonzero(lengths >= back + 1)
    starts = seqs.offsets[users]
    target_pos = seqs.offsets[users + 1] - back
    history = left_pad(seqs.offsets, seqs.items, starts, target_pos, max_history)
    return EvalExamples(users.astype(np.int64), history, seqs.items[target_pos].astype(np.int64))


def training_item_counts(seqs: SequenceData, num_items: int) -> np.ndarray:
    """Occurrences of each item in the training part (all but each user's last two): [num_items+1]."""
    return training_item_counts_csr(seqs.offsets, seqs.items, num_items)


def training_item_counts_csr(offsets: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """``training_item_counts`` of users given as CSR (offsets [U+1], items [nnz]); counts of disjoint user
    sets add up, so a dataset can be counted a record batch at a time."""
    lengths = np.diff(offsets)
    pos = np.arange(len(items)) - np.repeat(offsets[:-1], lengths)
    in_train = pos < np.repeat(np.maximum(lengths - 2, 0), lengths)
    return np.bincount(items[in_train], minlength=num_items + 1).astype(np.int64)
