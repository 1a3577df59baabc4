"""The causal sequence encoder: no peeking at later items, padding ignored, inputs normalised."""

import torch

from raygr.models.sequence import SequenceEncoder


def encoder(input_norm: bool) -> SequenceEncoder:
    torch.manual_seed(0)
    return SequenceEncoder(16, 2, 2, dropout=0.0, max_len=8, input_norm=input_norm).eval()


def test_input_norm_makes_the_states_independent_of_the_item_vectors_scale():
    # The reason for input_norm: tiny item embeddings (std .02) must not be drowned by the blocks.
    x = torch.randn(3, 8, 16) * 0.1  # (smaller, and layer_norm's eps starts to show)
    pad = torch.zeros(3, 8, dtype=torch.bool)
    on, off = encoder(True), encoder(False)
    assert torch.allclose(on(x, pad), on(x * 20, pad), atol=5e-3)
    assert not torch.allclose(off(x, pad), off(x * 20, pad), atol=1e-2)


def test_states_are_causal_and_padding_is_ignored():
    enc = encoder(True)
    x = torch.randn(2, 8, 16)
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[1, :3] = True
    x[1, :3] = 0.0
    h = enc(x, pad)
    later = x.clone()
    later[:, 6:] += torch.randn(2, 2, 16)  # change the two newest items
    assert torch.allclose(enc(later, pad)[:, :6], h[:, :6], atol=1e-5)
    other_pad = x.clone()
    other_pad[1, :3] = torch.randn(3, 16)  # whatever sits in padded slots
    assert torch.allclose(enc(other_pad, pad)[1, 3:], h[1, 3:], atol=1e-5)
