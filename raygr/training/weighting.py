"""Loss weighting of the joint objective: fixed, scheduled (pure function of the step) or adaptive.

Adaptive is GradNorm-style (UniGRF's gradient-guided weighter): every ``every`` steps it measures
the gradient norm of the generator and ranker losses on the parameters both reach (the model's
``shared_parameters()``, e.g. the shared sequence encoder's last block), and moves their weights towards
equal norms: w_i = base_i * (g_mean / g_i) ** alpha, smoothed by an EMA so one noisy batch does not swing them.
Tokenizer terms keep their configured weights.

A term with no gradient on those parameters (``model.generator_encoder_grad: 0`` cuts the generator off
the sequence encoder) leaves nothing to balance: the weights stay at their base values and the weighter
says so once, rather than looking as if it were on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn

from raygr.config import ModelConfig

MAIN_TERMS = ("generator", "ranker")


def base_weights(cfg: ModelConfig) -> dict[str, float]:
    w = {f.name: getattr(cfg.loss, f.name) for f in dataclasses.fields(cfg.loss)}
    w.pop("commitment")  # folded into the codebook term by the model
    w["sdud"] = 1.0
    return w


def listwise_ramp(cfg: ModelConfig, step: int) -> float:
    """Share of model.loss.listwise at ``step``: the ranker must learn before it can teach."""
    return min(1.0, step / cfg.listwise_warmup_steps) if cfg.listwise_warmup_steps > 0 else 1.0


def scheduled_weights(cfg: ModelConfig, step: int) -> dict[str, float]:
    """Generator at full weight from the start; the ranker and tokenizer terms ramp in linearly."""
    ramp = min(1.0, step / max(cfg.ramp_steps, 1))
    return {k: (v if k in ("generator", "sdud") else v * ramp) for k, v in base_weights(cfg).items()}


class LossWeighter:
    def __init__(self, cfg: ModelConfig, shared: list[nn.Parameter], every: int = 10, momentum: float = 0.9,
                 log: Callable[[str], None] = print):
        self.cfg, self.shared, self.every, self.momentum = cfg, [p for p in shared if p.requires_grad], every, momentum
        self.adaptive = {k: 1.0 for k in MAIN_TERMS}  # multipliers on the base weights
        self.norms: dict[str, float] = {}  # the last update's gradient norms on the shared parameters
        self.log = log
        self._warned = False

    def weights(self, step: int) -> dict[str, float]:
        if self.cfg.weighting == "scheduled":
            w = scheduled_weights(self.cfg, step)
        else:
            w = base_weights(self.cfg)
        if self.cfg.weighting == "adaptive":
            for k, m in self.adaptive.items():
                w[k] *= m
        w["listwise"] *= listwise_ramp(self.cfg, step)
        return w

    def combine(self, terms: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        if self.cfg.weighting == "adaptive" and step % self.every == 0:
            self._update(terms)
        w = self.weights(step)
        total = sum(w.get(k, 1.0) * v for k, v in terms.items() if w.get(k, 1.0) > 0)
        return total, w

    def _update(self, terms: dict[str, torch.Tensor]) -> None:
        present = [k for k in MAIN_TERMS if k in terms and terms[k].requires_grad]
        if len(present) < 2:
            return
        norms = {}
        for k in present:
            grads = torch.autograd.grad(terms[k], self.shared, retain_graph=True, allow_unused=True) \
                if self.shared else ()
            norms[k] = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
        self.norms = norms
        cut = [k for k, g in norms.items() if not g > 0]  # also NaN
        if cut:
            if not self._warned:
                self._warned = True
                self.log(f"adaptive weighting is inactive: the {' and '.join(cut)} loss has no gradient on the "
                         "parameters it balances on (the model's shared_parameters(); "
                         "model.generator_encoder_grad=0 cuts the generator off the shared encoder), so the "
                         "loss weights stay at their configured values; give both losses a path there, or set "
                         "model.weighting=fixed to say so")
            return
        g_mean = math.exp(sum(math.log(g) for g in norms.values()) / len(norms))
        for k, g in norms.items():
            target = (g_mean / g) ** self.cfg.gradnorm_alpha
            self.adaptive[k] = self.momentum * self.adaptive[k] + (1 - self.momentum) * target

    def state_dict(self) -> dict:
        return {"adaptive": dict(self.adaptive)}

    def load_state_dict(self, state: dict) -> None:
        self.adaptive.update(state.get("adaptive", {}))
