"""model.generator_distill: the generator's per-level targets are the ranker's item distribution
summed by SID code (checked against a slow per-row loop), and mixing them in trains the generator."""

import dataclasses

import torch

from raygr.models.joint import ranker_code_targets
from raygr.training.factory import build_model
from raygr.training.loop import initialise
from tests.helpers import tiny_config, tiny_dataset
from tests.test_gradients import first_batch


def reference_targets(pos, neg, target_codes, neg_codes, K):
    """Row by row: P(code_l | prefix) = sum of the ranker's probabilities of the items under prefix + code_l."""
    out = [torch.zeros(pos.shape[0], K) for _ in range(target_codes.shape[1])]
    for r in range(pos.shape[0]):
        p = torch.softmax(torch.cat([pos[r], neg[r]]).double(), 0).tolist()
        codes = [target_codes[r].tolist()] + neg_codes.tolist()  # the positive is column 0
        for level in range(target_codes.shape[1]):
            under = [i for i in range(len(codes)) if codes[i][:level] == codes[0][:level]]
            mass = sum(p[i] for i in under)
            for i in under:
                out[level][r, codes[i][level]] += p[i] / mass
    return out


def test_targets_match_the_slow_reference_and_chain_to_the_ranker():
    g = torch.Generator().manual_seed(0)
    P, Nn, L, K = 7, 40, 3, 4  # few codes: many items share each prefix
    pos, neg = torch.randn(P, 1, generator=g), torch.randn(P, Nn, generator=g) * 2
    neg[0, 5] = float("-inf")  # an excluded negative (the target itself, in the full-softmax case)
    neg_codes = torch.randint(0, K, (Nn, L), generator=g)
    target_codes = torch.randint(0, K, (P, L), generator=g)
    target_codes[1] = neg_codes[3]  # a target whose SID some negative shares
    fast = ranker_code_targets(pos, neg, target_codes, neg_codes, K)
    slow = reference_targets(pos, neg, target_codes, neg_codes, K)
    for level in range(L):
        assert torch.allclose(fast[level], slow[level].float(), atol=1e-6), level
        assert torch.allclose(fast[level].sum(-1), torch.ones(P))
    # Chain rule: the product of the levels' targets at the target's codes is the ranker's probability
    # of the items sharing the target's whole SID.
    p = torch.softmax(torch.cat([pos, neg], 1), -1)
    same = (neg_codes[None] == target_codes[:, None]).all(-1)  # [P, Nn]
    chained = torch.stack([fast[l].gather(1, target_codes[:, l : l + 1])[:, 0] for l in range(L)]).prod(0)
    assert torch.allclose(chained, p[:, 0] + (p[:, 1:] * same).sum(1), atol=1e-6)


def test_distillation_changes_only_the_generator_targets(tmp_path):
    dataset = tiny_dataset(tmp_path)
    cfg = tiny_config("model.preset=joint", "model.num_negatives=80", "model.negative_codes_every=5",
                      "model.generator_encoder_grad=0")
    model = build_model(cfg, dataset)
    initialise(model, cfg, log=lambda s: None)
    model.train()
    batch = first_batch(dataset, cfg)

    def run(alpha):
        model.cfg = dataclasses.replace(cfg.model, generator_distill=alpha)
        torch.manual_seed(0)  # same Gumbel noise and dropout
        terms = model.losses(batch, step=0, negatives=torch.arange(1, 81))
        model.zero_grad(set_to_none=True)
        terms["generator"].backward()
        return terms, torch.cat([p.grad.flatten() for p in model.generator.query.parameters()])

    base, head0 = run(0.0)
    mixed, head1 = run(0.5)
    assert torch.equal(base["ranker"], mixed["ranker"])  # the ranker is the teacher, not the student
    assert not torch.allclose(base["generator"], mixed["generator"])
    assert not torch.allclose(head0, head1) and torch.isfinite(head1).all()
