"""The served catalogue: original item ids <-> model item indices, and the popularity fallback.

    cat = Catalogue.from_dataset(dataset)
    idx, unknown = cat.to_indices(["B0001", "B0002"])   # item_idx are 1..N (0 is padding)
    cat.to_ids([3, 1])                                  # -> ["B0003", "B0001"]
    cat.popular(k=10, exclude={3})                      # most-trained-on items, for empty histories
    cat.search("lipstick", limit=20)                    # [(item_id, title)] whose title or id matches

Ids are strings (as in ``items.parquet``); a JSON integer is read as its decimal string, so a client
of a dataset with numeric ids may send either. No torch and no Ray here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from raygr.data.dataset import Dataset
from raygr.data.split import training_item_counts
from raygr.metrics import popularity_ranking


class Catalogue:
    """Items in index order (item_idx i+1 is ``item_ids[i]``) with their training counts."""

    def __init__(self, name: str, item_ids: Sequence[str], counts: np.ndarray,
                 titles: Sequence[str] | None = None):
        self.name = name  # dataset name, reported in every response
        self.item_ids = tuple(item_ids)  # [N]
        # Display text [N] (the dataset's titles; the id where an item has none).
        self.titles = tuple(str(t) if t else i for t, i in zip(titles, self.item_ids)) if titles else self.item_ids
        self._lower = tuple(f"{t}\n{i}".lower() for t, i in zip(self.titles, self.item_ids))
        self.counts = np.asarray(counts)  # [N+1] training occurrences per item_idx (column 0 = padding)
        if len(self.counts) != len(self.item_ids) + 1:
            raise ValueError(f"counts must have num_items+1 = {len(self.item_ids) + 1} entries, got {len(self.counts)}")
        # Built once, so that a request costs O(its length): the id index and the popularity order
        # (ties broken by lower index, as the offline popularity baseline does).
        self._index = {item_id: i + 1 for i, item_id in enumerate(self.item_ids)}
        self._by_popularity = popularity_ranking(self.counts, len(self.item_ids))

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> Catalogue:
        counts = training_item_counts(dataset.sequences, dataset.num_items)
        titles = dataset.items.title
        return cls(dataset.name, tuple(str(x) for x in dataset.items.item_id), counts,
                   None if titles is None else [None if t is None else str(t) for t in titles])

    def __len__(self) -> int:
        return len(self.item_ids)

    def to_indices(self, ids: Iterable[str]) -> tuple[list[int], list[str]]:
        """Model indices of ``ids`` in order, and the ids not in the catalogue (in order, without repeats)."""
        index = self._index
        out, unknown, seen = [], [], set()
        for item_id in ids:
            i = index.get(item_id)
            if i is None:
                if item_id not in seen:
                    seen.add(item_id)
                    unknown.append(item_id)
            else:
                out.append(i)
        return out, unknown

    def to_ids(self, indices: Sequence[int]) -> list[str]:
        return [self.item_ids[i - 1] for i in indices]

    def popular(self, k: int, exclude: Iterable[int] = ()) -> tuple[list[int], list[float]]:
        """The k items most frequent in training, skipping ``exclude``; scores are the training counts."""
        skip = set(exclude)
        top = [int(i) for i in self._by_popularity[:k + len(skip)] if int(i) not in skip][:k]
        return top, [float(self.counts[i]) for i in top]

    def title(self, item_id: str) -> str | None:
        i = self._index.get(item_id)
        return None if i is None else self.titles[i - 1]

    def search(self, query: str, limit: int = 20) -> list[tuple[str, str]]:
        """Items whose title or id contains every word of ``query`` (case-insensitive), the most trained-on
        first: ``[(item_id, title)]``, at most ``limit``. An empty query gives the most popular items."""
        words = query.lower().split()
        out = []
        for i in self._by_popularity:  # popularity order: the likeliest items first
            i = int(i)
            if all(w in self._lower[i - 1] for w in words):
                out.append((self.item_ids[i - 1], self.titles[i - 1]))
                if len(out) >= limit:
                    break
        return out
