import pytest
import torch

from raygr.models.decoding import Trie, beam_search, reference_beam_search
from raygr.models.generator import CodeGenerator
from raygr.models.sid import SIDTable


class RandomDecoder:
    """A random generator head over random codebooks: enough to compare two searches."""

    def __init__(self, levels, codes, suffix, dim=8, seed=0, mlp=False):
        torch.manual_seed(seed)
        self.gen = CodeGenerator(dim, levels, codes, suffix, mlp)
        self.codebooks = torch.randn(levels, codes, dim)

    def level_logits(self, s, level):
        return self.gen.logits(s, level, self.codebooks) * 3

    def advance(self, s, level, tokens):
        return self.gen.advance(s, level, self.codebooks[level][tokens])


def random_table(num_items, levels, codes, max_suffix, seed):
    g = torch.Generator().manual_seed(seed)
    codes_t = torch.randint(0, codes, (num_items, levels), generator=g)
    codes_t[5:9] = codes_t[4]  # force a collision group
    return SIDTable.from_codes(codes_t, codes, max_suffix)


@pytest.mark.parametrize("seed, num_items, beam, mlp, renorm", [
    (0, 60, 5, False, False), (1, 200, 20, False, False), (2, 30, 10, False, False),
    (3, 200, 20, True, False),  # model.generator_mlp
    (4, 60, 5, False, True), (5, 200, 20, True, True)])  # model.trie_softmax
def test_parity_with_reference(seed, num_items, beam, mlp, renorm):
    table = random_table(num_items, 3, 6, 8, seed)
    dec = RandomDecoder(3, 6, 8, seed=seed, mlp=mlp)
    s0 = torch.randn(7, 8)
    items, scores = beam_search(dec, s0, Trie.from_table(table), beam=beam, renormalize=renorm)
    ref_items, ref_scores = reference_beam_search(dec, s0, table, beam=beam, renormalize=renorm)
    for b in range(7):
        n = len(ref_items[b])
        assert items[b, :n].tolist() == ref_items[b]
        assert torch.allclose(scores[b, :n], torch.tensor(ref_scores[b]), atol=1e-5)


def test_never_invalid_never_duplicate_and_k_beyond_catalogue():
    table = random_table(12, 2, 4, 8, seed=3)
    dec = RandomDecoder(2, 4, 8, seed=3)
    items, scores = beam_search(dec, torch.randn(5, 8), Trie.from_table(table), beam=50, k=20)
    assert items.shape == (5, 20)
    valid = items > 0
    assert (valid.sum(1) == 12).all()  # the whole catalogue, then padding
    assert torch.isinf(scores[~valid]).all() and torch.isfinite(scores[valid]).all()
    for row in items:
        got = row[row > 0].tolist()
        assert len(got) == len(set(got)) and set(got) <= set(range(1, 13))
    # Scores are sorted and are log-probabilities of whole SIDs.
    assert (scores[:, :-1] >= scores[:, 1:]).all() and (scores[valid] <= 0).all()


def test_renormalized_scores_are_item_probabilities():
    """With renormalize, every level's softmax runs over the valid children only, so the scores of the
    whole catalogue (beam >= items) are a distribution over the items: they sum to 1. Without it they
    sum to less (mass on codes that lead to no item)."""
    table = random_table(40, 3, 6, 8, seed=7)
    dec = RandomDecoder(3, 6, 8, seed=7)
    s0 = torch.randn(4, 8)
    trie = Trie.from_table(table)
    _, s_renorm = beam_search(dec, s0, trie, beam=400, k=40, renormalize=True)
    _, s_plain = beam_search(dec, s0, trie, beam=400, k=40)
    assert torch.allclose(s_renorm.exp().sum(1), torch.ones(4), atol=1e-4)
    assert (s_plain.exp().sum(1) < 0.99).all()


def test_sid_table_is_one_to_one_after_collisions():
    codes = torch.tensor([[0, 1], [0, 1], [2, 3], [0, 1], [2, 3], [1, 1]])
    t = SIDTable.from_codes(codes, num_codes=4, max_suffix=4)
    sids = [tuple(r) for r in t.sids()[1:].tolist()]
    assert len(set(sids)) == 6
    assert t.suffix[1:].tolist() == [0, 1, 0, 2, 1, 0]  # rank by item index within each group
    assert t.collision_rate() == pytest.approx(5 / 6)
    # A group larger than max_suffix leaves items unreachable, and the trie leaves them out.
    small = SIDTable.from_codes(codes, num_codes=4, max_suffix=2)
    assert small.reachable()[1:].tolist() == [True, True, True, False, True, True]
    trie = Trie.from_table(small)
    assert 4 not in trie.child[-1].flatten().tolist()
