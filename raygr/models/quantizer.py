"""Differentiable residual quantizer: L levels x K codes, Gumbel-softmax with straight-through codes.

Per level, with residual r (the item vector z at level 0):
    logits = -standardise(||r - c_k||^2)         distances to the level's K codes, per-row z-scored
    soft   = softmax((logits + sigma * g) / tau)  g ~ Gumbel, sigma and tau from the schedule
    hard   = argmax(logits + sigma * g)           exploration: noise can pick another code
    assign = onehot(hard) - sg(soft) + soft       forward: the hard code; backward: the soft one
    q      = assign @ codebook;  r <- r - q
so any loss on the codes or the code vectors reaches both the codebooks and the item encoder.

Noise strategies (``ScheduleConfig.strategy``, formulas in ``raygr.models.schedules``): the fixed shapes
use sigma(step) for every sample and code. SDUD learns a noise scale per level with DIGER's uncertainty
loss L/(2(|s|+lam)^2) + log(|s|+lam) on the (detached) generator loss, and applies it times the cosine
decay, so exploration follows the loss and ends at the horizon. FrqUD gives every code its own decay,
faster the more often the code is an item's nearest one (an EMA of the noise-free codes' frequencies);
the noise on code k's logit is sigma[l, k], so items crowded on a popular code are pushed towards the
rarer codes, whose logits stay noisy (and, Gumbel noise having a positive mean, favoured) for longer.
From the horizon on every strategy's sigma is 0: training then sees each item's nearest code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from raygr.config import ScheduleConfig
from raygr.models.schedules import ADAPTIVE, exploration, frqud_noise, noise_scale, sdud_noise, temperature


@dataclass
class QuantizerOutput:
    codes: torch.Tensor  # [M, L] hard codes (noisy during training)
    assign: torch.Tensor  # [M, L, K] straight-through one-hot
    soft: torch.Tensor  # [M, L, K] soft assignment
    code_vecs: torch.Tensor  # [M, L, D] straight-through code vectors q_l
    losses: dict[str, torch.Tensor]  # codebook, commitment, balance

    @property
    def quantized(self) -> torch.Tensor:
        return self.code_vecs.sum(dim=1)  # [M, D] the item's reconstruction from its SID

    def prefixes(self) -> torch.Tensor:
        return self.code_vecs.cumsum(dim=1)  # [M, L, D] reconstruction from the first l+1 codes


class ResidualQuantizer(nn.Module):
    def __init__(self, levels: int, codes: int, dim: int, schedule: ScheduleConfig):
        super().__init__()
        self.levels, self.codes, self.dim = levels, codes, dim
        self.schedule = schedule
        self.codebooks = nn.Parameter(torch.randn(levels, codes, dim) * 0.1)  # [L, K, D]
        self.sdud_scale = nn.Parameter(torch.full((levels,), max(schedule.sigma_start, 1e-3)))
        self.register_buffer("code_freq", torch.full((levels, codes), 1.0 / codes))  # EMA, FrqUD
        self.register_buffer("last_used", torch.zeros(levels, codes, dtype=torch.long))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        # The mean sigma the last exploring forward applied (what the logs report): not state, a reading.
        self.last_sigma = torch.zeros(())
        self.straight_through = True

    # -- noise ------------------------------------------------------------------------------------
    def noise_scales(self, step: int) -> torch.Tensor:
        """The Gumbel noise scale in force at ``step`` per level and code [L, K]."""
        s = self.schedule
        if s.strategy == "sdud":
            return sdud_noise(s, step, self.sdud_scale)[:, None].expand(self.levels, self.codes)
        if s.strategy == "frqud":
            return frqud_noise(s, step, self.code_freq * self.codes)
        return self.code_freq.new_full((self.levels, self.codes), noise_scale(s, step))

    def explores(self, step: int) -> bool:
        """Whether any noise is left at ``step``."""
        s = self.schedule
        return (exploration(s, step) > 0 and s.sigma_start > 0) if s.strategy in ADAPTIVE else noise_scale(s, step) > 0

    def sdud_loss(self, rec_loss: torch.Tensor) -> torch.Tensor:
        """Uncertainty loss that trains SDUD's noise scale from the detached recommendation loss."""
        if self.schedule.strategy != "sdud":
            return rec_loss.new_zeros(())
        s = self.sdud_scale.abs() + self.schedule.sdud_lambda  # [L]
        return (rec_loss.detach() / (2 * s**2) + torch.log(s)).mean()

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, z: torch.Tensor, step: int = 0, explore: bool | None = None) -> QuantizerOutput:
        """z: [M, D]. ``explore`` defaults to ``self.training``."""
        explore = self.training if explore is None else explore
        tau = temperature(self.schedule, step) if explore else 1.0
        # Decided on the host (no device sync): from the horizon on no noise is drawn at all.
        noisy_any = explore and self.explores(step)
        sigmas = self.noise_scales(step).to(z.dtype) if noisy_any else None  # [L, K]
        if explore:
            self.last_sigma = sigmas.detach().mean() if noisy_any else z.new_zeros(())
        r = z
        codes, clean_codes, assigns, softs, vecs = [], [], [], [], []
        codebook_loss = commit_loss = balance = z.new_zeros(())
        for level in range(self.levels):
            C = self.codebooks[level]  # [K, D]
            dist = r.pow(2).sum(-1, keepdim=True) - 2 * r @ C.T + C.pow(2).sum(-1)[None]  # [M, K]
            # Standardised per row, so that sigma and tau mean the same whatever the scale of z.
            centred = dist - dist.mean(-1, keepdim=True)
            # The row std from the centred values: aten's std is several times slower on CPU.
            std = centred.detach().pow(2).sum(-1, keepdim=True).div_(max(self.codes - 1, 1)).sqrt_()
            logits = -centred / (std + 1e-6)
            noisy = logits
            if noisy_any:
                gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp_(1e-9, 1 - 1e-9)))
                noisy = logits + sigmas[level] * gumbel  # [K] per code, the same for every item
            soft = F.softmax(noisy / tau, dim=-1)
            hard = noisy.argmax(-1)  # [M]
            onehot = F.one_hot(hard, self.codes).to(soft.dtype)
            # The straight-through trick is the only path from a recommendation loss into the item encoder
            # (the forward value is the hard code either way); off only to prove that (tests).
            assign = onehot - soft.detach() + soft if self.straight_through else onehot
            q = assign @ C  # [M, D], forward value C[hard]
            chosen = C[hard]
            codebook_loss = codebook_loss + F.mse_loss(chosen, r.detach())
            commit_loss = commit_loss + F.mse_loss(r, chosen.detach())
            p = soft.mean(0)  # [K] batch code distribution
            balance = balance + (p * torch.log(p * self.codes + 1e-9)).sum()  # KL(p || uniform)
            codes.append(hard)
            if explore:
                clean_codes.append(logits.detach().argmax(-1) if noisy_any else hard)
            assigns.append(assign)
            softs.append(soft)
            vecs.append(q)
            r = r - q
        codes_t = torch.stack(codes, 1)
        if explore:
            self._track_usage(codes_t, torch.stack(clean_codes, 1), step)
        return QuantizerOutput(codes=codes_t, assign=torch.stack(assigns, 1), soft=torch.stack(softs, 1),
                               code_vecs=torch.stack(vecs, 1),
                               losses={"codebook": codebook_loss / self.levels,
                                       "commitment": commit_loss / self.levels,
                                       "balance": balance / self.levels})

    @torch.no_grad()
    def _track_usage(self, codes: torch.Tensor, clean: torch.Tensor, step: int) -> None:
        """``codes`` [M, L] the codes training used, ``clean`` [M, L] the noise-free ones.

        FrqUD's frequencies count the clean codes: counted on the noisy ones they would measure the noise
        itself, and a code that the noise fills would look crowded and lose its noise for no reason.
        Dead-code revival reads what training used.
        """
        m = self.schedule.frqud_momentum
        for level in range(self.levels):
            freq = torch.bincount(clean[:, level], minlength=self.codes).float() / clean.shape[0]
            self.code_freq[level].mul_(m).add_((1 - m) * freq)
            self.last_used[level, codes[:, level]] = step

    # -- initialisation and maintenance -----------------------------------------------------------
    @torch.no_grad()
    def init_kmeans(self, z: torch.Tensor, iters: int = 15, seed: int = 0) -> None:
        """Residual k-means over item vectors ``z`` [M, D] (a batch init when M is small)."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        r = z.detach().float()
        for level in range(self.levels):
            if r.shape[0] >= self.codes:
                C = r[torch.randperm(r.shape[0], generator=g)[: self.codes]].clone()
            else:
                idx = torch.randint(0, r.shape[0], (self.codes,), generator=g)
                C = r[idx] + 0.01 * r.std() * torch.randn(self.codes, self.dim, generator=g)
            for _ in range(iters):
                a = torch.cdist(r, C).argmin(1)
                sums = torch.zeros_like(C).index_add_(0, a, r)
                cnt = torch.bincount(a, minlength=self.codes).float()[:, None]
                C = torch.where(cnt > 0, sums / cnt.clamp(min=1), C)
            self.codebooks[level].copy_(C)
            r = r - C[torch.cdist(r, C).argmin(1)]
        self.initialised.fill_(True)

    @torch.no_grad()
    def revive_dead_codes(self, z: torch.Tensor, step: int, max_idle: int, seed: int) -> int:
        """Re-seed codes unused for ``max_idle`` steps with residuals of ``z`` [M, D]; returns how many.

        ``z`` and ``seed`` must be the same on every DDP worker so replicas stay identical.
        """
        g = torch.Generator(device="cpu").manual_seed(seed)
        revived = 0
        r = z.detach()
        for level in range(self.levels):
            C = self.codebooks[level]
            dead = (step - self.last_used[level]) > max_idle
            n = int(dead.sum())
            if n:
                pick = torch.randint(0, r.shape[0], (n,), generator=g).to(r.device)
                C[dead] = r[pick] + 0.01 * torch.randn(n, self.dim, generator=g).to(r.device) * r.std()
                self.last_used[level, dead] = step
                revived += n
            r = r - C[torch.cdist(r, C).argmin(1)]
        return revived

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Deterministic codes [M, L] (no noise)."""
        return self.forward(z, explore=False).codes
