"""train.prefix_levels: the beam search decodes SID prefixes and every item under them is a candidate.

Checked against an exhaustive reference (every prefix scored by its summed level log-probabilities) in
the settings where the beam search is exact: one level, or a beam at least as wide as the codebook.
"""

import pytest
import torch
import torch.nn.functional as F

from raygr.config import ConfigError, load_config
from tests.helpers import initialised_model, tiny_config, tiny_dataset


@pytest.fixture(scope="module", params=[0, 2], ids=["head", "decoder"])  # model.generator_layers
def model(tmp_path_factory, request):
    dataset = tiny_dataset(tmp_path_factory.mktemp("prefix"), num_users=200, num_items=150)
    # few codes: several items per prefix
    cfg = tiny_config("model.preset=joint", "model.codes=8", f"model.generator_layers={request.param}")
    return initialised_model(dataset, cfg)


@torch.no_grad()
def reference_candidates(model, history, levels, width):
    """Score every prefix of ``levels`` codes exhaustively; the items under the best ``width``, by prefix."""
    codes = model.table.codes[1:, :levels].tolist()
    out = []
    for b in range(len(history)):
        decoder, s0 = model.step_decoder(history[b : b + 1])
        scored = {}
        for prefix in sorted(set(map(tuple, codes))):
            s, score = s0, 0.0
            for level, c in enumerate(prefix):
                score += float(F.log_softmax(decoder.level_logits(s, level), -1)[0, c])
                s = decoder.advance(s, level, torch.tensor([c]))
            scored[prefix] = score
        best = sorted(scored, key=lambda p: -scored[p])[:width]
        out.append([i + 1 for p in best for i in range(len(codes)) if tuple(codes[i]) == p])
    return out


@pytest.mark.parametrize("levels, width", [(1, 3), (2, 8), (2, 20)])  # exact: one level, or width >= codes
def test_candidates_are_the_items_under_the_best_prefixes(model, levels, width):
    history = torch.randint(0, model.num_items + 1, (6, 10))
    history[:, -1] = torch.randint(1, model.num_items + 1, (6,))
    got, scores = model.retrieve_prefixes(history, levels, width)
    ref = reference_candidates(model, history, levels, width)
    for b in range(len(history)):
        row = got[b].tolist()
        assert row[: len(ref[b])] == ref[b] and not any(row[len(ref[b]) :])  # then only empty slots
    # Each item carries its prefix's log-probability: best prefix first, -inf in the empty slots.
    filled = got > 0
    assert torch.isfinite(scores[filled]).all() and torch.isinf(scores[~filled]).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    # recommend = the ranker's top k of exactly those candidates
    items, scores = model.recommend(history, k=5, num_candidates=0, prefix_levels=levels, num_prefixes=width)
    want, _ = model.rerank(history, got, k=5)
    assert torch.equal(items, want) and items.shape == (6, 5)


def test_both_stages_read_the_states_they_are_given(model):
    # recommend and evaluation encode a batch once and pass the states to retrieval and ranking: with
    # another batch's states (no padding, so the masks agree) every stage answers for that batch.
    a, b = torch.randint(1, model.num_items + 1, (2, 4, 10))
    other = model.history_states(b)  # [4, 10, D]
    assert torch.equal(model.retrieve_prefixes(a, 2, 8, states=other)[0], model.retrieve_prefixes(b, 2, 8)[0])
    assert torch.equal(model.retrieve(a, k=7, states=other)[0], model.retrieve(b, k=7)[0])
    cands = torch.randint(1, model.num_items + 1, (4, 9))
    assert torch.equal(model.rank(a, cands, states=other), model.rank(b, cands))


def test_a_candidate_budget_keeps_the_best_prefixes_items(model):
    history = torch.randint(1, model.num_items + 1, (5, 10))
    every, scores = model.retrieve_prefixes(history, 2, 20)
    assert (every > 0).sum(1).max() > 25  # the budget below binds
    capped, capped_scores = model.retrieve_prefixes(history, 2, 20, limit=25)
    assert torch.equal(capped, every[:, :25]) and torch.equal(capped_scores, scores[:, :25])
    items, _ = model.recommend(history, k=5, num_candidates=0, prefix_levels=2, num_prefixes=20, max_candidates=25)
    assert torch.equal(items, model.rerank(history, every[:, :25], k=5)[0])


def test_every_prefix_gives_the_whole_catalogue_once(model):
    history = torch.randint(1, model.num_items + 1, (3, 10))
    got, _ = model.retrieve_prefixes(history, levels=model.cfg.levels, width=10_000)
    for row in got:
        items = row[row > 0].tolist()
        assert sorted(items) == list(range(1, model.num_items + 1))


def test_prefix_levels_beyond_the_sid_is_a_config_error():
    with pytest.raises(ConfigError, match="train.prefix_levels' must be <= model.levels"):
        load_config(None, ["model.levels=3", "train.prefix_levels=4"])
