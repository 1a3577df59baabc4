"""model.generator_layers > 0: the Transformer code decoder that cross-attends to the history.

Beam search over it must match the one-user-at-a-time reference; the training path (teacher forcing, all
levels at once, memory cut at each target's position) must score exactly what decoding scores.
"""

import pytest
import torch

from raygr.models.code_decoder import BoundCodeDecoder
from raygr.models.decoding import Trie, beam_search, reference_beam_search
from raygr.models.generator import CodeGenerator
from tests.helpers import initialised_model, tiny_config, tiny_dataset
from tests.test_decoding import random_table


@pytest.mark.parametrize("seed, beam", [(0, 5), (1, 20)])
def test_beam_search_matches_reference(seed, beam):
    torch.manual_seed(seed)
    levels, codes, suffix, dim, B, T = 3, 6, 8, 8, 5, 7
    gen = CodeGenerator(dim, levels, codes, suffix, decoder_layers=2, heads=2).eval()
    codebooks = torch.randn(levels, codes, dim)
    memory, allowed = torch.randn(B, T, dim), torch.rand(B, T) > 0.3
    allowed[:, -1] = True
    dec = BoundCodeDecoder(gen.decoder, lambda s, level: gen.logits(s, level, codebooks) * 3, codebooks,
                           memory, allowed)
    s0 = gen.decoder.start(torch.randn(B, dim))
    table = random_table(200, levels, codes, suffix, seed)
    items, scores = beam_search(dec, s0, Trie.from_table(table), beam=beam)
    for b in range(B):  # the reference runs one user at a time, so it gets that user's memory alone
        ref_items, ref_scores = reference_beam_search(dec.user(b), s0[b : b + 1], table, beam=beam)
        n = len(ref_items[0])
        assert items[b, :n].tolist() == ref_items[0]
        assert torch.allclose(scores[b, :n], torch.tensor(ref_scores[0]), atol=1e-5)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    dataset = tiny_dataset(tmp_path_factory.mktemp("code_decoder"), num_users=200, num_items=120)
    cfg = tiny_config("model.preset=joint", "model.generator_layers=2", "model.history_item_id=true")
    return initialised_model(dataset, cfg)


@torch.no_grad()
def test_training_scores_what_decoding_scores(model):
    history = torch.randint(0, model.num_items + 1, (6, 10))
    history[:, -1] = torch.randint(1, model.num_items + 1, (6,))
    history[0, :4] = 0  # left padding
    target = torch.randint(1, model.num_items + 1, (6,))
    codes, vecs = model.item_codes()
    # Training path: the history's states, one target per user at the last position.
    H = model.history_states(history)
    has_tgt = torch.zeros_like(history, dtype=torch.bool)
    has_tgt[:, -1] = True
    states = model.teacher_forced_states(H, history != 0, has_tgt, vecs[target - 1])
    # Decoding path: level by level through the beam-search interface.
    dec, s = model.step_decoder(history)
    for level in range(model.cfg.levels):
        train_logits = model.generator.logits(states[level], level, model.quantizer.codebooks)
        assert torch.allclose(dec.level_logits(s, level), train_logits, atol=1e-5), level
        s = dec.advance(s, level, codes[target - 1, level])


@torch.no_grad()
def test_a_target_never_sees_the_history_after_it(model):
    history = torch.randint(1, model.num_items + 1, (3, 10))
    H = model.history_states(history)
    has_tgt = torch.zeros_like(history, dtype=torch.bool)
    has_tgt[:, 4] = True  # targets at position 4: the memory must stop there
    vecs = torch.randn(3, model.cfg.levels, model.cfg.dim)
    before = model.teacher_forced_states(H, history != 0, has_tgt, vecs)
    H2 = H.clone()
    H2[:, 5:] = torch.randn_like(H2[:, 5:])
    after = model.teacher_forced_states(H2, history != 0, has_tgt, vecs)
    assert all(torch.allclose(a, b) for a, b in zip(before, after))
    H2[:, 3] = torch.randn_like(H2[:, 3])  # and it does read the history before it
    assert not torch.allclose(model.teacher_forced_states(H2, history != 0, has_tgt, vecs)[1], before[1])

