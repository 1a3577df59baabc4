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
from raygr.models.decoding import StepDecoder, Trie
from raygr.models.encoder import ItemEncoder
from raygr.models.generator import CodeGenerator
from raygr.models.joint_losses import JointLosses, info_nce, ranker_code_targets
from raygr.models.quantizer import QuantizerOutput, ResidualQuantizer
from raygr.models.ranker import Ranker
from raygr.models.retrieval import Retrieval
from raygr.models.sequence import SequenceEncoder
from raygr.models.sid import SIDTable

__all__ = ["GenerativeRecommender", "info_nce", "ranker_code_targets"]


class GenerativeRecommender(JointLosses, Retrieval, nn.Module):
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
        # model.shared_encoder=false: the generator reads the history through a sequence encoder of its own,
        # so neither stage's gradient bends the other's user state; they still share the history's input
        # vectors (code embeddings, item-ID table), and the ranker teaches the generator by distillation.
        self.gen_seq = None if cfg.shared_encoder else SequenceEncoder(
            D, cfg.num_layers, cfg.num_heads, cfg.dropout, max_history, cfg.input_norm)
        # model.generator_inputs=own: the generator's encoder reads codes + ID through a projection of its
        # own; history_inputs then returns [M, 2D], the ranker's input vectors then the generator's.
        # separate: an item-ID table of its own as well, so the two stages share only the SIDs' codebooks.
        self.gen_item_in = nn.Linear(L * D, D) if cfg.generator_inputs != "shared" else None
        self.gen_history_id = None
        if cfg.generator_inputs == "separate" and cfg.history_item_id:
            self.gen_history_id = nn.Embedding(num_items + 1, D, padding_idx=0)
            nn.init.normal_(self.gen_history_id.weight, std=0.02)
            with torch.no_grad():
                self.gen_history_id.weight[0].zero_()
        # model.generator_reads_ranker: the generator's states += a projection of the ranker's (detached)
        self.gen_from_ranker = nn.Linear(D, D) if cfg.generator_reads_ranker else None
        if self.gen_from_ranker is not None:
            nn.init.zeros_(self.gen_from_ranker.weight)
            nn.init.zeros_(self.gen_from_ranker.bias)
        self.generator = CodeGenerator(D, L, K, cfg.max_suffix, cfg.generator_mlp, cfg.generator_layers,
                                       cfg.num_heads, cfg.generator_dropout)
        self.ranker = Ranker(D, L, num_items, cfg.ranker_item_id, cfg.sid_residual, cfg.ranker_codes)
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
        self.frozen_by_fix: list[nn.Parameter] = []  # see adopt_sids
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

    @torch.no_grad()
    def adopt_sids(self, codes: torch.Tensor) -> None:
        """Make ``codes`` [N, L] the items' fixed SIDs from now on (model.fix_sids_at_horizon, or a checkpoint
        saved after it): the model then behaves as with model.sid_source=file, tokenizer frozen."""
        codes = codes.to(self.quantizer.codebooks.device).long()
        self.fixed_codes = torch.cat([codes.new_zeros(1, codes.shape[1]), codes])
        trainable = [p for p in self.parameters() if p.requires_grad]
        self.freeze_tokenizer()
        # The optimizer of the run keeps these (they get no gradient now): a resume, which adopts the SIDs
        # before it builds its optimizer, must build the same parameter groups as the run's start did.
        self.frozen_by_fix = [p for p in trainable if not p.requires_grad]
        self._neg_codes = None
        self.refresh()

    def fixed_quantize(self, ids: torch.Tensor) -> QuantizerOutput:
        """The file's codes for items ``ids`` [M], as a quantizer output (one-hot assignment, no losses)."""
        codes = self.fixed_codes[ids]  # [M, L]
        C = self.quantizer.codebooks  # [L, K, D]
        vecs = self.code_vectors(codes)  # [M, L, D]
        onehot = F.one_hot(codes, C.shape[1]).to(C.dtype)
        zero = C.new_zeros(())
        return QuantizerOutput(codes=codes, assign=onehot, soft=onehot, code_vecs=vecs,
                               losses={"codebook": zero, "commitment": zero, "balance": zero})

    def code_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Each level's code embedding [M, L, D] for SIDs ``codes`` [M, L]."""
        C = self.quantizer.codebooks  # [L, K, D]
        return C[torch.arange(C.shape[0], device=codes.device)[None], codes]

    def suffix_tokens(self, items: torch.Tensor) -> torch.Tensor:
        """The collision-suffix token of items [...] in the SID table, within the model.max_suffix slots."""
        return self.table.suffix.to(items.device)[items].clamp(max=self.cfg.max_suffix - 1)

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
        flat = code_vecs.flatten(1)
        idv = self.history_id(ids) if self.history_id is not None else None
        x = self.item_in(flat) if idv is None else self.item_in(flat) + idv
        if self.gen_item_in is None:
            return x
        gid = self.gen_history_id(ids) if self.gen_history_id is not None else idv
        xg = self.gen_item_in(flat) if gid is None else self.gen_item_in(flat) + gid
        return torch.cat([x, xg], -1)  # [M, 2D]

    def encode_inputs(self, x: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """History input vectors x [B, T, D or 2D] -> (the ranker's, the generator's) states [B, T, D]."""
        D = self.cfg.dim
        H = self.seq(x[..., :D], pad)
        if self.gen_seq is None:
            return H, H
        Hg = self.gen_seq(x[..., D:] if self.gen_item_in is not None else x, pad)
        if self.gen_from_ranker is not None:
            Hg = Hg + self.gen_from_ranker(H.detach())
        return H, Hg

    def forward(self, batch, step: int, negatives: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.losses(batch, step, negatives)  # so DDP wraps the loss computation

    def teacher_forced_states(self, H: torch.Tensor, has_in: torch.Tensor, has_tgt: torch.Tensor,
                              code_vecs: torch.Tensor) -> list[torch.Tensor]:
        """The generator's L+1 states [P, D] per target, fed the target's own code vectors [P, L, D].

        H [B, T, D] are the history states; target p sits at position t of user b (``has_tgt``), and
        the Transformer decoder's memory for it is that user's states up to t: nothing from its future.
        """
        b, t = has_tgt.nonzero(as_tuple=True)  # [P] each, the same order as H[has_tgt]
        return self.decoded_states(H, has_in, b, t, code_vecs)

    def decoded_states(self, H: torch.Tensor, has_in: torch.Tensor, b: torch.Tensor, t: torch.Tensor,
                       code_vecs: torch.Tensor) -> list[torch.Tensor]:
        """The generator's L+1 states [M, D] for M = P x W code sequences ``code_vecs`` [M, L, D]: the
        W rows of each target p (user b[p], position t[p], [P] each) follow one another and read the
        history states H [B, T, D] up to t[p]."""
        gen = self.generator
        W = code_vecs.shape[0] // len(b)
        s = H[b, t].repeat_interleave(W, 0)  # [M, D]
        if gen.decoder is None:
            states = [s]
            for level in range(self.cfg.levels):
                states.append(gen.advance(states[-1], level, code_vecs[:, level]))
            return states
        T = H.shape[1]
        allowed = (torch.arange(T, device=H.device)[None] <= t[:, None]) & has_in[b]  # [P, T]
        allowed[torch.arange(len(t), device=H.device), t] = True
        seq = gen.decoder.start(s)
        for level in range(self.cfg.levels):
            seq = gen.decoder.append(seq, level, code_vecs[:, level])
        return list(gen.decoder(seq, H[b], allowed).unbind(1))  # the decoder groups a target's W rows

    def sequence_log_probs(self, states: list[torch.Tensor], codes: torch.Tensor,
                           suffix: torch.Tensor | None) -> torch.Tensor:
        """log P(item) [M] under the generator: the sum over levels of each code's log-softmax (over the
        trie's children of its prefix with model.trie_softmax, as beam search scores), from the decoded
        ``states`` of the items' own ``codes`` [M, L] and collision ``suffix`` [M] (None: no suffix level).
        Beam search's score of a whole SID; ``item_log_probs`` is its no-training twin."""
        cfg = self.cfg
        children = self.trie_children(codes) if cfg.trie_softmax and self.trie is not None else None
        tokens = codes if suffix is None else torch.cat([codes, suffix[:, None]], 1)  # [M, L(+1)]
        total = states[0].new_zeros(codes.shape[0])
        for level in range(tokens.shape[1]):
            child = children[level] if children is not None else None
            logits = self.level_logits(states[level], level, child)
            if child is not None:  # a finite fill; the item's own token always stays in
                own = F.one_hot(tokens[:, level], logits.shape[-1]).bool()
                logits = logits.masked_fill(~((child >= 0) | own), -1e9)
            total = total + F.log_softmax(logits, -1).gather(1, tokens[:, level : level + 1]).squeeze(1)
        return total

    @torch.no_grad()
    def item_log_probs(self, history: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """The generator's log-probability [B, C] of items [B, C] as the next item after ``history`` [B, T]:
        the score ``retrieve`` gives the items it returns (its parity test), for any item."""
        self._ready()
        H = self.split_states(self.history_states(history))[1]  # [B, T, D]
        B, C = items.shape
        has_in = history != 0
        b = torch.arange(B, device=history.device)
        t = torch.full_like(b, history.shape[1] - 1)
        flat = items.flatten()
        codes = self.table.codes.to(items.device)[flat]
        states = self.decoded_states(H, has_in, b, t, self.code_vectors(codes))
        return self.sequence_log_probs(states, codes, self.suffix_tokens(flat)).view(B, C)

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
        x = self.history_inputs(vecs, ids)  # [N, D or 2D]
        self._item_inputs = torch.cat([x.new_zeros(1, x.shape[-1]), x])
        r = self.ranker.item_vectors(vecs, ids)
        self._rank_vecs = torch.cat([r.new_zeros(1, r.shape[-1]), r])

    def _ready(self) -> None:
        if self._item_inputs is None or self.trie is None:
            self.refresh()

    def user_states(self, history: torch.Tensor) -> torch.Tensor:
        """history: [B, T] left-padded -> the ranker's state after the newest item [B, D]."""
        return self.split_states(self.history_states(history))[0][:, -1]

    def history_states(self, history: torch.Tensor) -> torch.Tensor:
        """history: [B, T] left-padded -> the sequence encoder's state at every position [B, T, D]; with a
        generator encoder of its own (model.shared_encoder=false) [B, T, 2D], the ranker's then the generator's."""
        self._ready()
        H, Hg = self.encode_inputs(self._item_inputs[history], history == 0)
        return H if self.gen_seq is None else torch.cat([H, Hg], -1)

    def split_states(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``history_states`` [..., D or 2D] -> (the ranker's, the generator's) [..., D] each."""
        if self.gen_seq is None:
            return states, states
        D = self.cfg.dim
        return states[..., :D], states[..., D:]

    def shared_parameters(self) -> list[nn.Parameter]:
        """What both the generator and the ranker loss reach, for the adaptive loss weighter: the shared
        encoder's last block, or with encoders of their own the history's input projection."""
        if self.gen_seq is None:
            return self.seq.shared_parameters()
        if self.gen_item_in is not None:  # each stage projects the codes itself: they share the tables
            if self.history_id is not None and self.gen_history_id is None:
                return [self.history_id.weight]
            return [self.quantizer.codebooks]
        return list(self.item_in.parameters())

    # Retrieval and ranking take ``states``, the history's ``history_states`` [B, T, D], so a caller that
    # runs both stages on one batch (recommend, evaluation) encodes the history once.
    def step_decoder(self, history: torch.Tensor,
                     states: torch.Tensor | None = None) -> tuple[StepDecoder, torch.Tensor]:
        """What beam search runs for these users: the decoder and its start states [B, ...]."""
        H = self.split_states(self.history_states(history) if states is None else states)[1]  # [B, T, D]
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
        q = self.generator.query[level](s)  # [M, D]
        if level == 0:  # every row's parent is the root: one matmul, not a [M x V, D] gather
            root = child[0]  # [V], the same for every row
            return logits + (q @ self.node_emb[0](root.clamp(min=0)).T) * (root >= 0)
        m, v = (child >= 0).nonzero(as_tuple=True)  # only real children: few below the first level
        score = (q[m] * self.node_emb[level](child[m, v])).sum(-1)
        return logits.index_put((m, v), logits[m, v] + score)

    def advance(self, s: torch.Tensor, level: int, tokens: torch.Tensor) -> torch.Tensor:
        return self.generator.advance(s, level, self.quantizer.codebooks[level][tokens])
