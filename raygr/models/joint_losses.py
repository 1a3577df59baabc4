"""The joint model's losses: generator cross-entropy, ranker softmax, tokenizer terms, distillation.

A mixin of ``GenerativeRecommender`` (joint.py): ``model.losses(batch, step, negatives)`` returns the
unweighted terms (the weighter combines them), and ``teacher_forced_hits`` measures the generator's
per-level accuracy on the same teacher-forced path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raygr.models.batch import TrainBatch
from raygr.models.quantizer import QuantizerOutput


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between rows of a and b [M, D]; row i of each is the positive pair."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    logits = a @ b.T / temperature
    labels = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


@torch.no_grad()
def ranker_code_targets(pos: torch.Tensor, neg: torch.Tensor, target_codes: torch.Tensor,
                        neg_codes: torch.Tensor, num_codes: int) -> list[torch.Tensor]:
    """The ranker's softmax over items, summed into the generator's per-level code distributions.

    Level l's target is P_ranker(code_l | the target's codes before l): the items that share the
    target's prefix, their probabilities summed by their code at l. A generator that matched every
    level would score each item as the ranker does (chain rule), so its beam search would find
    what the ranker ranks high, not only the one observed next item.

    Args:
        pos: [P, 1] and neg: [P, Nn] ranker logits (-inf = excluded). target_codes: [P, L] the
        targets' codes (the generator's teacher-forced prefix). neg_codes: [Nn, L] the negatives' codes.
    Returns:
        L tensors [P, K], each row a distribution.
    """
    p = torch.softmax(torch.cat([pos, neg], 1).float(), -1)
    p_pos, p_neg = p[:, :1], p[:, 1:]  # [P, 1], [P, Nn]
    targets = []
    for level in range(target_codes.shape[1]):
        mine = target_codes[:, level : level + 1]  # [P, 1]
        q = p.new_zeros(p.shape[0], num_codes).index_add_(1, neg_codes[:, level], p_neg)
        q.scatter_add_(1, mine, p_pos)  # the target is always in its own prefix: q's rows never sum to 0
        targets.append(q / q.sum(-1, keepdim=True))
        p_neg = p_neg * (neg_codes[None, :, level] == mine)
    return targets



class JointLosses:
    """Loss terms of ``GenerativeRecommender``; every attribute used here is the model's."""

    def tokenizer_losses(self, z: torch.Tensor, qo: QuantizerOutput, ids: torch.Tensor,
                         max_rows: int = 512) -> dict[str, torch.Tensor]:
        """Reconstruction, CoST and UniSID on up to ``max_rows`` of the batch's items, plus VQ terms."""
        rows = torch.randperm(len(ids), device=ids.device)[:max_rows]
        zq = qo.quantized[rows]
        bag_w = self.encoder.bag.weight  # [buckets, D], tied output layer of the reconstruction
        toks = self.encoder.tokens[ids[rows]]  # [R, W], bucket 0 = padding
        w = (toks != 0).to(zq.dtype)
        n = w.sum(1)
        has = n > 0
        if has.any():
            # Cross-entropy against the item's normalised bag of token buckets, read off with a gather:
            # the dense [R, buckets] target it equals would cost more than the logits themselves.
            logits = self.recon(zq[has]) @ bag_w.T  # [R', buckets]
            picked = (logits.gather(1, toks[has]) * w[has]).sum(1) / n[has]
            recon = (torch.logsumexp(logits, -1) - picked).mean()
        else:
            recon = zq.new_zeros(())
        tau = self.cfg.temperature_contrast
        prefixes = qo.prefixes()[rows]  # [R, L, D]
        levels = prefixes.shape[1]
        cost = info_nce(z[rows], zq, tau)
        unisid = sum(info_nce(z[rows], prefixes[:, l], tau) for l in range(levels - 1)) / max(levels - 1, 1) \
            if levels > 1 else cost.new_zeros(())
        vq = qo.losses
        return {"codebook": vq["codebook"] + self.cfg.loss.commitment * vq["commitment"],
                "balance": vq["balance"], "reconstruction": recon, "cost": cost, "unisid": unisid}

    def listwise_loss(self, H: torch.Tensor, has_in: torch.Tensor, has_tgt: torch.Tensor, targets: torch.Tensor,
                      pos: torch.Tensor, neg: torch.Tensor, negatives: torch.Tensor, step: int) -> torch.Tensor:
        """KL(ranker || generator) over the ranker's best items, for up to model.listwise_rows targets.

        H [B, T, D]: the generator's history states; targets [P] the next items at ``has_tgt``; pos [P, 1]
        and neg [P, Nn] the ranker's logits of the targets and of ``negatives`` [Nn] (-inf = excluded).
        The candidates are each row's target and the ranker's listwise_candidates - 1 best negatives; the
        teacher is the ranker's softmax over them (no gradient), the student the generator's whole-SID
        log-probabilities (as beam search scores them) renormalised over the same items.
        """
        cfg = self.cfg
        P = targets.shape[0]
        # Rows drawn from a generator of their own: the term leaves the global RNG (dropout, Gumbel noise,
        # data order) as it was, so a run with it differs from one without by the term alone.
        g = torch.Generator().manual_seed(step)
        rows = torch.randperm(P, generator=g)[: cfg.listwise_rows].to(targets.device)  # [R]
        top = neg[rows].detach().topk(min(cfg.listwise_candidates - 1, neg.shape[1]), dim=1)  # [R, K-1]
        items = torch.cat([targets[rows, None], negatives[top.indices]], 1)  # [R, K]
        teacher = torch.softmax(torch.cat([pos[rows].detach(), top.values], 1).float(), -1)  # [R, K]
        flat = items.flatten()
        if self.sids_fixed:
            qo = self.fixed_quantize(flat)
            codes, vecs = qo.codes, qo.code_vecs  # [R*K, L], [R*K, L, D]
        else:  # the catalogue's cached codes (no gradient into the tokenizer from this term)
            vecs = self.negative_code_vecs(step)[flat]
            codes = self._neg_codes[2][flat]
        b, t = has_tgt.nonzero(as_tuple=True)
        states = self.decoded_states(H, has_in, b[rows], t[rows], vecs)
        suffix = self.suffix_tokens(flat) if self.table is not None else None
        student = self.sequence_log_probs(states, codes, suffix).view(items.shape)  # [R, K]
        if not cfg.listwise_target:  # the ranker's order among the others only (model.listwise_target)
            student, teacher = student[:, 1:], teacher[:, 1:] / teacher[:, 1:].sum(-1, keepdim=True).clamp_min(1e-12)
        return F.kl_div(F.log_softmax(student, -1), teacher, reduction="batchmean")

    def losses(self, batch: TrainBatch, step: int, negatives: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted loss terms for one batch; ``negatives`` [Nn] are shared sampled items."""
        cfg = self.cfg
        inp, tgt = batch.input, batch.target  # [B, T] each
        has_in, has_tgt = inp > 0, tgt > 0
        cached = cfg.negative_codes_every > 0
        quantized = [inp[has_in], tgt[has_tgt]] if cached else [inp[has_in], tgt[has_tgt], negatives]
        ids, inverse = torch.unique(torch.cat(quantized), return_inverse=True)
        n_in, n_tgt = int(has_in.sum()), int(has_tgt.sum())
        in_rows, tgt_rows = inverse[:n_in], inverse[n_in:n_in + n_tgt]
        neg_rows = inverse[n_in + n_tgt:]
        z, qo = self.quantize_items(ids, step)

        x_items = self.history_inputs(qo.code_vecs, ids)  # [M, D or 2D]
        x = x_items.new_zeros(*inp.shape, x_items.shape[1])
        x[has_in] = x_items[in_rows]
        H, Hg = self.encode_inputs(x, ~has_in)  # [B, T, D] each: the ranker's, what the generator reads
        h = H[has_tgt]  # [P, D] states that have a next item

        terms: dict[str, torch.Tensor] = {}
        teacher: list[torch.Tensor] | None = None
        if cfg.loss.ranker > 0:
            u = self.ranker.user_state(h)  # [P, D]
            t = tgt[has_tgt]
            if cached:
                # The positive takes its forward value from the same table as the negatives: scored from
                # fresh codes against stale ones, the ranker would learn to tell fresh from stale. Its
                # gradient still reaches the tokenizer through the fresh codes (straight-through).
                table = self.negative_code_vecs(step)
                fresh = qo.code_vecs[tgt_rows]  # [P, L, D]
                v_pos = self.ranker.item_vectors(table[t] + fresh - fresh.detach(), t)
                v_neg = self.ranker.item_vectors(table[negatives], negatives)
            else:
                v = self.ranker.item_vectors(qo.code_vecs, ids)  # [M, D]
                v_pos, v_neg = v[tgt_rows], v[neg_rows]
            pos = (u * v_pos).sum(-1, keepdim=True)  # [P, 1]
            neg = u @ v_neg.T  # [P, Nn]
            neg = neg.masked_fill(negatives[None, :] == t[:, None], float("-inf"))
            if cfg.ranker_loss == "softmax":
                terms["ranker"] = F.cross_entropy(torch.cat([pos, neg], 1), torch.zeros_like(tgt_rows))
            else:
                finite = torch.isfinite(neg)
                terms["ranker"] = F.softplus(-pos).mean() + (F.softplus(neg) * finite).sum() / finite.sum()
            if cfg.generator_distill > 0:
                neg_codes = self._neg_codes[2][negatives] if cached else qo.codes[neg_rows]
                teacher = ranker_code_targets(pos, neg, qo.codes[tgt_rows], neg_codes, cfg.codes)

        # Generator: level by level, soft (straight-through) targets, teacher-forced code vectors.
        g = cfg.generator_encoder_grad
        if g != 1:  # forward value unchanged, gradient scaled
            Hg = Hg.detach() + g * (Hg - Hg.detach())
        states = self.teacher_forced_states(Hg, has_in, has_tgt, qo.code_vecs[tgt_rows])
        alpha = cfg.generator_distill if teacher is not None else 0.0
        children = self.trie_children(qo.codes[tgt_rows]) if cfg.trie_softmax and self.trie is not None else None
        valid = [c >= 0 for c in children] if children is not None else None
        gen = h.new_zeros(())
        for level in range(cfg.levels):
            logits = self.level_logits(states[level], level, children[level] if children is not None else None)
            a = qo.assign[tgt_rows, level]
            a = a.detach() + cfg.target_assign_grad * (a - a.detach())  # forward value: the hard code
            if alpha > 0:
                a = (1 - alpha) * a + alpha * teacher[level]
            if valid is not None:  # a finite fill: 0 x -inf would be NaN where a target puts no mass
                logits = logits.masked_fill(~(valid[level] | (a.detach() > 0)), -1e9)
            gen = gen + -(a * F.log_softmax(logits, -1)).sum(-1).mean()
        if self.table is not None:
            suffix = self.suffix_tokens(tgt[has_tgt])
            logits = self.level_logits(states[cfg.levels], cfg.levels)
            if valid is not None:
                ok = valid[cfg.levels] | F.one_hot(suffix, logits.shape[-1]).bool()
                logits = logits.masked_fill(~ok, -1e9)
            gen = gen + F.cross_entropy(logits, suffix)
        terms["generator"] = gen / (cfg.levels + 1)
        if cfg.loss.listwise > 0 and cfg.loss.ranker > 0:
            terms["listwise"] = self.listwise_loss(Hg, has_in, has_tgt, tgt[has_tgt], pos, neg, negatives, step)

        if not self.tokenizer_frozen and not self.sids_fixed:
            terms.update(self.tokenizer_losses(z, qo, ids))
            if cfg.schedule.strategy == "sdud":
                terms["sdud"] = self.quantizer.sdud_loss(terms["generator"])
        return terms

    @torch.no_grad()
    def teacher_forced_hits(self, history: torch.Tensor, target: torch.Tensor,
                            states: torch.Tensor | None = None) -> torch.Tensor:
        """Per SID level (and the suffix), how many of the targets [B] the generator's top code gets right
        when fed the target's true prefix [L+1]: where a level's errors come from, beam search aside."""
        self._ready()
        H = self.split_states(self.history_states(history) if states is None else states)[1]  # [B, T, D]
        has_in = history != 0
        has_tgt = torch.zeros_like(has_in)
        has_tgt[:, -1] = True
        qo = self.fixed_quantize(target) if self.sids_fixed else self.quantizer(self.encoder(target), explore=False)
        codes = self.table.codes.to(target.device)[target]  # [B, L], what the trie was built from
        suffix = self.table.suffix.to(target.device)[target]
        tokens = torch.cat([codes, suffix[:, None]], 1)  # [B, L+1]
        states_l = self.teacher_forced_states(H, has_in | has_tgt, has_tgt, qo.code_vecs)
        children = self.trie_children(codes) if self.cfg.trie_softmax else None
        hits = []
        for level in range(self.cfg.levels + 1):
            logits = self.level_logits(states_l[level], level, children[level] if children is not None else None)
            if children is not None:
                logits = logits.masked_fill(children[level] < 0, float("-inf"))
            hits.append((logits.argmax(-1) == tokens[:, level]).sum())
        return torch.stack(hits)
