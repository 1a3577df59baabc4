import math

import numpy as np
import pytest
import torch

from raygr.data.dataset import SequenceData
from raygr.data.split import eval_examples, training_item_counts
from raygr.metrics import (
    code_health,
    decoding_health,
    metrics_from_ranks,
    popularity_ranking,
    ranks_from_lists,
    ranks_from_scores,
)


def seqs(*rows):
    lengths = [len(r) for r in rows]
    return SequenceData(user_id=[f"u{i}" for i in range(len(rows))],
                        offsets=np.concatenate([[0], np.cumsum(lengths)]),
                        items=np.concatenate([np.array(r, dtype=np.int32) for r in rows]),
                        timestamps=np.arange(sum(lengths)))


def test_leave_one_out():
    s = seqs([1, 2, 3, 4, 5], [6, 7], [8])
    test = eval_examples(s, "test", max_history=3)
    assert test.user_idx.tolist() == [0, 1]  # a single-item user has no test example
    assert test.history.tolist() == [[2, 3, 4], [0, 0, 6]]
    assert test.target.tolist() == [5, 7]
    valid = eval_examples(s, "valid", max_history=3)
    assert valid.user_idx.tolist() == [0]
    assert valid.history.tolist() == [[1, 2, 3]] and valid.target.tolist() == [4]


def test_training_counts_exclude_valid_and_test():
    counts = training_item_counts(seqs([1, 2, 3, 4, 5], [1, 6, 7]), num_items=7)
    assert counts.tolist() == [0, 2, 1, 1, 0, 0, 0, 0]


def test_metrics_by_hand():
    # ranks 0, 3, 12 and a miss: recall@5 = 2/4, ndcg@5 = (1 + 1/log2(5)) / 4
    m = metrics_from_ranks(np.array([0, 3, 12, np.iinfo(np.int64).max]))
    assert m["recall@5"] == pytest.approx(0.5)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(5)) / 4)
    assert m["recall@20"] == pytest.approx(0.75)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / math.log2(5) + 1 / math.log2(14)) / 4)


def test_ranks_from_lists_and_scores():
    ranked = np.array([[5, 3, 9], [1, 2, 4]])
    assert ranks_from_lists(ranked, np.array([9, 7])).tolist() == [2, np.iinfo(np.int64).max]
    scores = torch.tensor([[-math.inf, 0.1, 0.9, 0.5], [-math.inf, 0.3, 0.2, 0.1]])
    assert ranks_from_scores(scores, torch.tensor([3, 1])).tolist() == [1, 0]


def test_popularity_and_health():
    assert popularity_ranking(np.array([99, 1, 5, 5, 0]), 3).tolist() == [2, 3, 1]
    h = code_health(np.array([[0, 1], [0, 1], [1, 0], [2, 2]]), num_codes=4)
    assert h["utilization"] == [0.75, 0.75] and h["collision_rate"] == 0.5 and h["unique_sids"] == 3
    assert h["perplexity"][0] == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))
    d = decoding_health(np.array([[1, 2, 2], [0, 3, 99]]), num_items=10)
    assert d == {"invalid_rate": pytest.approx(2 / 6), "duplicate_rate": pytest.approx(1 / 6)}
