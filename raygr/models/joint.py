"""The joint model: item encoder + residual quantizer + sequence encoder + code generator + ranker.

One set of parameters yields two models: a retriever (constrained beam search over SIDs) and a
ranker (dot product of the user state and the candidate's SID code vectors). Training sees every
item through the quantizer's straight-through codes, so the generator and ranker losses shape
the tokenizer (the ``joint`` preset). With ``freeze_tokenizer()`` the codes are fixed and nothing
reaches the encoder or the codebooks (the two-stage ``tiger`` preset).

    model = GenerativeRecommender(cfg.model, tokens, num_items, max_history)
    terms = model.losses(batch, step, negatives)   # dict of scalar losses (weighted elsewhere)
    model.refresh()                                # SID table, trie and item caches for inference
    items, scores = model.recommend(history, k=10, num_candidates=50)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raygr.config import ModelConfig
from raygr.models.code_decoder import BoundCodeDecoder
from raygr.models.decoding import StepDecoder, Trie, beam_search
from raygr.models.encoder import ItemEncoder
from raygr.models.generator import CodeGenerator
from raygr.models.quantizer import QuantizerOutput, ResidualQuantizer
from raygr.models.ranker import Ranker
from raygr.models.sequence import SequenceEncoder
from raygr.models.sid import SIDTable
from raygr.training.batch import TrainBatch


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


class GenerativeRecommender(nn.Module):
    def __init__(self, cfg: ModelConfig, tokens: torch.Tensor, num_items: int, max_history: int,
                 dense: torch.Tensor | None = None, sids: torch.Tensor | None = None):
        """``sids`` [N, L]: fixed SIDs (model.sid_file); the quantizer's codebooks are then only the code
        embeddings, and no tokenizer loss is computed."""
        super().__init__()
        self.cfg = cfg
        D, L, K = cfg.dim, cfg.levels, cfg.codes
        self.num_items = num_items
        self.encoder = ItemEncoder(tokens, D, cfg.token_buckets, dense, use_item_id=cfg.use_item_id)
        self.quantizer = ResidualQuantizer(L, K, D, cfg.schedule)
        self.item_in = nn.Linear(L * D, D)  # history item = level-wise projection of its L code vectors
        self.history_id = nn.Embedding(num_items + 1, D, padding_idx=0) if cfg.history_item_id else None
        if self.history_id is not None:
            nn.init.normal_(self.history_id.weight, std=0.02)
            with torch.no_grad():
                self.history_id.weight[0].zero_()
        self.seq = SequenceEncoder(D, cfg.num_layers, cfg.num_heads, cfg.dropout, max_history,
                                   cfg.input_norm)
        self.generator = CodeGenerator(D, L, K, cfg.max_suffix, cfg.generator_mlp, cfg.generator_layers,
                                       cfg.num_heads, cfg.generator_dropout)
        self.ranker = Ranker(D, L, num_items, cfg.ranker_item_id, cfg.sid_residual)
        if cfg.tie_item_ids:  # one table: what the history reads is what the ranker scores
            self.ranker.item_id = self.history_id
        if cfg.sid_residual:  # history items start as their ID embeddings; the SID projection grows in
            nn.init.zeros_(self.item_in.weight)
            nn.init.zeros_(self.item_in.bias)
        self.recon = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, D))  # SID -> content (tied bag)
        self.table: SIDTable | None = None
        self.trie: Trie | None = None
        self._item_inputs: torch.Tensor | None = None  # [N+1, D] inference cache
        self._rank_vecs: torch.Tensor | None = None  # [N+1, D]
        self._prefix_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # retrieve_prefixes' groups
        # (step, code vectors [N+1, L, D], codes [N+1, L]) every negative_codes_every steps
        self._neg_codes: tuple[int, torch.Tensor, torch.Tensor] | None = None
        self.tokenizer_frozen = False
        # [N+1, L], row 0 = padding; a buffer, so a checkpoint carries the SIDs it was trained with
        self.register_buffer("fixed_codes", None if sids is None else torch.cat([sids.new_zeros(1, L), sids]).long())
        # model.node_embeddings: an output embedding per trie node (SID prefix) at depths 1..L, added to its
        # code's. A code means one thing at level 0 but another under every prefix below it; the node's own
        # vector lets the deep levels score the prefix (nearly an item) itself, as an ID model scores items.
        # Node numbers come from the trie of the fixed SIDs, so they never move. Zero at the start: the
        # generator starts as the code-only one.
        self.node_emb: nn.ModuleList | None = None
        if cfg.node_embeddings:
            if sids is None:
                raise ValueError("model.node_embeddings needs fixed SIDs (model.sid_source file or content)")
            trie = Trie.from_table(SIDTable.from_codes(sids, K, cfg.max_suffix))
            self.node_emb = nn.ModuleList(nn.Embedding(trie.child[level + 1].shape[0], D) for level in range(L))
            for emb in self.node_emb:
                nn.init.zeros_(emb.weight)

    has_ranker = True

    @property
    def sids_fixed(self) -> bool:
        return self.fixed_codes is not None

    @property
    def reads_children(self) -> bool:  # beam search then hands level_logits each row's trie children
        return self.node_emb is not None

    # -- state that is not a parameter: the SID table travels with the checkpoint ------------------
    def get_extra_state(self) -> dict:
        t = self.table
        return {"codes": t.codes, "suffix": t.suffix} if t is not None else {}

    def set_extra_state(self, state: dict) -> None:
        if state:
            self.table = SIDTable(state["codes"], state["suffix"], self.cfg.codes, self.cfg.max_suffix)
            self.trie = None

    def freeze_tokenizer(self) -> None:
        self.tokenizer_frozen = True
        self.encoder.requires_grad_(False)
        self.recon.requires_grad_(False)
        # Fixed SIDs: the codebooks are plain code embeddings that the generator learns; otherwise they are
        # the tokenizer's centroids, frozen with it.
        self.quantizer.requires_grad_(self.sids_fixed)
        self.quantizer.sdud_scale.requires_grad_(False)

    def fixed_quantize(self, ids: torch.Tensor) -> QuantizerOutput:
        """The file's codes for items ``ids`` [M], as a quantizer output (one-hot assignment, no losses)."""
        codes = self.fixed_codes[ids]  # [M, L]
        C = self.quantizer.codebooks  # [L, K, D]
        vecs = C[torch.arange(C.shape[0], device=ids.device)[None], codes]  # [M, L, D]
        onehot = F.one_hot(codes, C.shape[1]).to(C.dtype)
        zero = C.new_zeros(())
        return QuantizerOutput(codes=codes, assign=onehot, soft=onehot, code_vecs=vecs,
                               losses={"codebook": zero, "commitment": zero, "balance": zero})

    # -- training ---------------------------------------------------------------------------------
    def quantize_items(self, ids: torch.Tensor, step: int) -> tuple[torch.Tensor, QuantizerOutput]:
        """ids: [M] unique item indices -> (z [M, D], quantizer output over M items)."""
        if self.sids_fixed:
            return None, self.fixed_quantize(ids)
        if self.tokenizer_frozen:
            with torch.no_grad():
                z = self.encoder(ids)
                return z, self.quantizer(z, step, explore=False)
        z = self.encoder(ids)
        return z, self.quantizer(z, step)

    def history_inputs(self, code_vecs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """code_vecs: [M, L, D] of items ids [M] -> their input vectors to the sequence encoder [M, D]."""
        x = self.item_in(code_vecs.flatten(1))
        return x + self.history_id(ids) if self.history_id is not None else x

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

        x_items = self.history_inputs(qo.code_vecs, ids)  # [M, D]
        x = x_items.new_zeros(*inp.shape, x_items.shape[1])
        x[has_in] = x_items[in_rows]
        H = self.seq(x, ~has_in)  # [B, T, D]
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
            H = H.detach() + g * (H - H.detach())
        states = self.teacher_forced_states(H, has_in, has_tgt, qo.code_vecs[tgt_rows])
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
            suffix = self.table.suffix.to(tgt.device)[tgt[has_tgt]].clamp(max=cfg.max_suffix - 1)
            logits = self.level_logits(states[cfg.levels], cfg.levels)
            if valid is not None:
                ok = valid[cfg.levels] | F.one_hot(suffix, logits.shape[-1]).bool()
                logits = logits.masked_fill(~ok, -1e9)
            gen = gen + F.cross_entropy(logits, suffix)
        terms["generator"] = gen / (cfg.levels + 1)

        if not self.tokenizer_frozen and not self.sids_fixed:
            terms.update(self.tokenizer_losses(z, qo, ids))
            if cfg.schedule.strategy == "sdud":
                terms["sdud"] = self.quantizer.sdud_loss(terms["generator"])
        return terms

    forward = losses  # so DDP wraps the loss computation

    def teacher_forced_states(self, H: torch.Tensor, has_in: torch.Tensor, has_tgt: torch.Tensor,
                              code_vecs: torch.Tensor) -> list[torch.Tensor]:
        """The generator's L+1 states [P, D] per target, fed the target's own code vectors [P, L, D].

        H [B, T, D] are the history states; target p sits at position t of user b (``has_tgt``), and
        the Transformer decoder's memory for it is that user's states up to t: nothing from its future.
        """
        gen = self.generator
        s = H[has_tgt]  # [P, D]
        if gen.decoder is None:
            states = [s]
            for level in range(self.cfg.levels):
                states.append(gen.advance(states[-1], level, code_vecs[:, level]))
            return states
        b, t = has_tgt.nonzero(as_tuple=True)  # [P] each, the same order as H[has_tgt]
        T = H.shape[1]
        allowed = (torch.arange(T, device=H.device)[None] <= t[:, None]) & has_in[b]  # [P, T]
        allowed[torch.arange(len(t), device=H.device), t] = True
        seq = gen.decoder.start(s)
        for level in range(self.cfg.levels):
            seq = gen.decoder.append(seq, level, code_vecs[:, level])
        return list(gen.decoder(seq, H[b], allowed).unbind(1))

    @torch.no_grad()
    def trie_children(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """For target SIDs ``codes`` [P, L]: per level (and the suffix level), where each token leads from
        the target's prefix [P, V_l] (a node, at the suffix level an item; -1 = no item has that prefix).
        A prefix the trie does not hold (codes that moved since the last refresh) has no children."""
        child = self.trie.child
        node = torch.zeros(codes.shape[0], dtype=torch.long, device=codes.device)
        out = []
        for level in range(len(child)):
            rows = child[level].to(codes.device)[node.clamp(min=0)]  # [P, V_l]
            out.append(rows.masked_fill((node < 0)[:, None], -1))
            if level < codes.shape[1]:
                node = rows.gather(1, codes[:, level : level + 1]).squeeze(1).where(node >= 0, node)
        return out

    def valid_code_masks(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """Which tokens continue each target's prefix to some item, per level [P, V_l] (model.trie_softmax)."""
        return [c >= 0 for c in self.trie_children(codes)]

    @torch.no_grad()
    def negative_code_vecs(self, step: int) -> torch.Tensor:
        """Code vectors [N+1, L, D] of every item (row 0 = padding), recomputed every negative_codes_every steps.

        A pure function of the parameters at the refresh step, so DDP replicas hold the same table.
        """
        every = self.cfg.negative_codes_every
        if self._neg_codes is None or not 0 <= step - self._neg_codes[0] < every:
            codes, vecs = self.item_codes()
            self._neg_codes = (step, torch.cat([vecs.new_zeros(1, *vecs.shape[1:]), vecs]),
                               torch.cat([codes.new_zeros(1, codes.shape[1]), codes]))
            if self.training:
                # Only the batch's items are quantized with exploration now, so without this every code
                # that no recent batch happened to use would look dead and be re-seeded under the items
                # that hold it (maybe_revive_codes).
                for level in range(codes.shape[1]):
                    self.quantizer.last_used[level, codes[:, level]] = step
        return self._neg_codes[1]

    # -- inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def item_codes(self, chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
        """Deterministic codes [N, L] and code vectors [N, L, D] of items 1..N."""
        dev = self.quantizer.codebooks.device
        codes, vecs = [], []
        for start in range(1, self.num_items + 1, chunk):
            ids = torch.arange(start, min(start + chunk, self.num_items + 1), device=dev)
            qo = self.fixed_quantize(ids) if self.sids_fixed else self.quantizer(self.encoder(ids), explore=False)
            codes.append(qo.codes)
            vecs.append(qo.code_vecs)
        return torch.cat(codes), torch.cat(vecs)

    @torch.no_grad()
    def refresh(self) -> None:
        """Rebuild the SID table, the decoding trie and the item caches from the current parameters."""
        codes, vecs = self.item_codes()
        dev = vecs.device
        self.table = SIDTable.from_codes(codes.cpu(), self.cfg.codes, self.cfg.max_suffix)
        self.trie = Trie.from_table(self.table).to(dev)
        self._prefix_cache = {}
        ids = torch.arange(1, self.num_items + 1, device=dev)
        pad = vecs.new_zeros(1, vecs.shape[-1])
        self._item_inputs = torch.cat([pad, self.history_inputs(vecs, ids)])
        self._rank_vecs = torch.cat([pad, self.ranker.item_vectors(vecs, ids)])

    def _ready(self) -> None:
        if self._item_inputs is None or self.trie is None:
            self.refresh()

    def user_states(self, history: torch.Tensor) -> torch.Tensor:
        """history: [B, T] left-padded -> state after the newest item [B, D]."""
        return self.history_states(history)[:, -1]

    def history_states(self, history: torch.Tensor) -> torch.Tensor:
        """history: [B, T] left-padded -> the sequence encoder's state at every position [B, T, D]."""
        self._ready()
        return self.seq(self._item_inputs[history], history == 0)

    # Retrieval and ranking take ``states``, the history's ``history_states`` [B, T, D], so a caller that
    # runs both stages on one batch (recommend, evaluation) encodes the history once.
    def step_decoder(self, history: torch.Tensor,
                     states: torch.Tensor | None = None) -> tuple[StepDecoder, torch.Tensor]:
        """What beam search runs for these users: the decoder and its start states [B, ...]."""
        H = self.history_states(history) if states is None else states  # [B, T, D]
        dec = self.generator.decoder
        if dec is None:
            return self, H[:, -1]
        allowed = history != 0
        allowed[:, -1] = True  # an empty history still has one key: its (padding) state
        return BoundCodeDecoder(dec, self.level_logits, self.quantizer.codebooks, H, allowed), dec.start(H[:, -1])

    # StepDecoder protocol for beam search
    def level_logits(self, s: torch.Tensor, level: int, child: torch.Tensor | None = None) -> torch.Tensor:
        """Generator logits [M, V_level] from states s [M, D]; with model.node_embeddings and the rows'
        trie children ``child`` [M, V] (-1 = none), each valid token also scores the node it leads to."""
        logits = self.generator.logits(s, level, self.quantizer.codebooks)
        if child is None or self.node_emb is None or level >= len(self.node_emb):
            return logits
        m, v = (child >= 0).nonzero(as_tuple=True)  # only real children: few below the first level
        q = self.generator.query[level](s)  # [M, D]
        score = (q[m] * self.node_emb[level](child[m, v])).sum(-1)
        return logits.index_put((m, v), logits[m, v] + score)

    def advance(self, s: torch.Tensor, level: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.generator.advance(s, level, self.quantizer.codebooks[level][tokens])

    @torch.no_grad()
    def retrieve(self, history: torch.Tensor, k: int, beam: int | None = None,
                 states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Constrained beam search: top-k items [B, k] and their log-probabilities."""
        decoder, s0 = self.step_decoder(history, states)
        return beam_search(decoder, s0, self.trie, beam=max(beam or k, k), k=k, renormalize=self.cfg.trie_softmax)

    @torch.no_grad()
    def teacher_forced_hits(self, history: torch.Tensor, target: torch.Tensor,
                            states: torch.Tensor | None = None) -> torch.Tensor:
        """Per SID level (and the suffix), how many of the targets [B] the generator's top code gets right
        when fed the target's true prefix [L+1]: where a level's errors come from, beam search aside."""
        self._ready()
        H = self.history_states(history) if states is None else states  # [B, T, D]
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

    @torch.no_grad()
    def rank(self, history: torch.Tensor, candidates: torch.Tensor, states: torch.Tensor | None = None) -> torch.Tensor:
        """Ranker scores [B, C] for candidate items [B, C] (0 = empty slot, scored -inf)."""
        self._ready()
        h = self.user_states(history) if states is None else states[:, -1]  # [B, D]
        u = self.ranker.user_state(h)  # [B, D]
        scores = (self._rank_vecs[candidates] * u[:, None]).sum(-1)
        return scores.masked_fill(candidates == 0, float("-inf"))

    @torch.no_grad()
    def retrieve_prefixes(self, history: torch.Tensor, levels: int, width: int,
                          states: torch.Tensor | None = None, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item under the ``width`` best SID prefixes of ``levels`` codes [B, C] (0 = empty slot).

        The beam search decodes only the first ``levels`` codes; the items come grouped by prefix, best
        prefix first, each scored [B, C] with its prefix's log-probability (-inf in empty slots). C is
        the largest number of items any user gets in the batch, or at most ``limit`` (> 0): the first
        ``limit`` of them, the last prefix cut short.
        """
        decoder, s0 = self.step_decoder(history, states)
        trie = Trie(self.trie.child[:levels], self.trie.vocab[:levels])
        nodes, scores = beam_search(decoder, s0, trie, beam=width,
                                    renormalize=self.cfg.trie_softmax)  # [B, W] prefix nodes
        order, offsets = self._prefix_groups(levels)
        valid = torch.isfinite(scores)
        nodes = nodes.clamp(min=0)
        starts = offsets[nodes]
        counts = torch.where(valid, offsets[nodes + 1] - starts, torch.zeros_like(starts))  # [B, W]
        ends = counts.cumsum(1)  # [B, W] inclusive
        size = max(int(ends[:, -1].max()), 1)
        slot = torch.arange(min(size, limit) if limit > 0 else size, device=s0.device)  # [C]
        which = torch.searchsorted(ends, slot.expand(len(ends), -1).contiguous(), right=True)  # [B, C]
        which = which.clamp(max=nodes.shape[1] - 1)
        pos = starts.gather(1, which) + slot - (ends - counts).gather(1, which)
        filled = slot < ends[:, -1:]
        items = torch.where(filled, order[pos.clamp(max=len(order) - 1)], torch.zeros_like(pos))
        return items, scores.gather(1, which).masked_fill(~filled, float("-inf"))

    def _prefix_groups(self, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Items 1..N sorted by their prefix node at depth ``levels`` [N'], and each node's offset [nodes + 1]."""
        if levels not in self._prefix_cache:
            codes = self.table.codes.to(self.trie.child[0].device)
            node = torch.zeros(len(codes), dtype=torch.long, device=codes.device)
            for level in range(levels):
                node = self.trie.child[level][node.clamp(min=0), codes[:, level]].where(node >= 0, node)
            node[0] = -1  # padding
            items = torch.nonzero(node >= 0).squeeze(1)
            order = items[torch.argsort(node[items], stable=True)]
            counts = torch.bincount(node[items], minlength=int(self.trie.child[levels - 1].max()) + 1)
            self._prefix_cache[levels] = (order, F.pad(counts.cumsum(0), (1, 0)))
        return self._prefix_cache[levels]

    def candidates(self, history: torch.Tensor, num_candidates: int, prefix_levels: int = 0,
                   num_prefixes: int = 0, states: torch.Tensor | None = None, max_candidates: int = 0) -> torch.Tensor:
        """What retrieval hands the ranker [B, C]: whole SIDs, or the items under the best prefixes (at
        most ``max_candidates`` > 0 of them)."""
        if prefix_levels > 0:
            return self.retrieve_prefixes(history, prefix_levels, num_prefixes, states, max_candidates)[0]
        return self.retrieve(history, k=num_candidates, states=states)[0]

    @torch.no_grad()
    def recommend(self, history: torch.Tensor, k: int, num_candidates: int, prefix_levels: int = 0,
                  num_prefixes: int = 0, max_candidates: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Retrieve candidates (see ``candidates``), re-score them with the ranker, return the top k."""
        states = self.history_states(history)  # [B, T, D], for both stages
        cands = self.candidates(history, max(num_candidates, k), prefix_levels, num_prefixes, states,
                                max_candidates)  # as serving cuts: fewer than k come back padded
        return self.rerank(history, cands, k, states)

    @torch.no_grad()
    def rerank(self, history: torch.Tensor, candidates: torch.Tensor, k: int,
               states: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The ranker's top k [B, k] of candidates [B, C], with their scores."""
        scores = self.rank(history, candidates, states)
        top = scores.topk(min(k, candidates.shape[1]), dim=1)
        items = candidates.gather(1, top.indices).masked_fill(~torch.isfinite(top.values), 0)
        pad = k - items.shape[1]  # fewer candidates than k: empty slots, as retrieve gives them
        return F.pad(items, (0, pad)), F.pad(top.values, (0, pad), value=float("-inf"))
