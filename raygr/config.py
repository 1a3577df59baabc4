"""Frozen configuration dataclasses, loaded from YAML with dotted ``--set`` overrides.

    cfg = load_config("jobs/configs/beauty_joint.yaml", overrides=["train.epochs=5"])
    dump_config(cfg, "runs/x/config.yaml")

Every key has a default, so ``load_config(None)`` gives the ``joint`` preset. A preset name
(``model.preset``) first applies that preset's defaults, then the file, then the overrides: a
file only lists what it changes, and may start from another file (``extends: beauty_joint.yaml``).
Unknown keys and out-of-range values raise ``ConfigError`` naming the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message says which and what to change."""


Preset = Literal["joint", "tiger", "sasrec"]
DecayStrategy = Literal["constant", "linear", "exponential", "cosine", "sdud", "frqud"]
Weighting = Literal["fixed", "scheduled", "adaptive"]


@dataclass(frozen=True)
class DataConfig:
    path: str | None = None  # prepared dataset directory (``raygr data prepare`` output)
    max_history: int = 20  # history cap: items older than this are dropped (TIGER uses 20 on Amazon)
    num_eval_users: int = 0  # 0 = every user; >0 evaluates a fixed random subset (fast validation)

    def validate(self) -> None:
        _check(self.max_history >= 1, "data.max_history", "must be >= 1")
        _check(self.num_eval_users >= 0, "data.num_eval_users", "must be >= 0 (0 = all users)")


@dataclass(frozen=True)
class ScheduleConfig:
    """Gumbel exploration: temperature tau and noise scale sigma as functions of the step."""

    # Shape of the tau/sigma decay over horizon_steps: constant, linear, exponential or cosine; or DIGER's
    # adaptive decays, which take tau from the cosine and bring sigma to 0 at the horizon: sdud (a learned
    # noise scale per level, times the cosine decay) or frqud (a per-code decay: the more often a code is
    # the nearest one, the faster the noise on it fades). Exponential (the default since session 21) against
    # cosine on learned SIDs, retrieve-then-rank test N@10 (docs/results.md, sessions 16-21): Beauty +6.3 %
    # (two seeds of each), Scientific +6.8 % (one), the synthetic default +3.7 to +5.7 % (three seeds); the
    # generator alone +8 % / +1 % / +2.8 to +4.4 %. It spends less of the horizon at high noise. Cosine and
    # the other shapes were level with each other or behind.
    strategy: DecayStrategy = "exponential"
    tau_start: float = 1.0  # Gumbel-softmax temperature at step 0 (the soft assignment the gradient follows)
    tau_end: float = 0.1  # temperature at the end of the decay
    # Gumbel noise scale at step 0 (logits are z-scored distances); sdud: where its learned scale starts.
    sigma_start: float = 0.5
    # Noise scale at the end of the decay (0 = the nearest code, no exploration); sdud and frqud always end at 0.
    sigma_end: float = 0.0
    # Steps over which the decay runs, then constant; 0 = half the run's steps, resolved once when the run
    # starts and stored in its config and checkpoints (a resume keeps it, whatever train.epochs says then).
    horizon_steps: int = 0
    exp_rate: float = 5.0  # exponential: value = end + (start-end)*exp(-rate*t)
    sdud_lambda: float = 0.1  # SDUD: floor lambda in L/(2(|s|+l)^2) + log(|s|+l), the learned scale's loss
    # FrqUD: a code used R times as often as uniform decays as cosine^R, one used 1/R as often as cosine^(1/R)
    # (R = this value, the code frequency's effect saturates there); 1 = every code follows the cosine.
    frqud_threshold: float = 2.0
    frqud_momentum: float = 0.99  # FrqUD: EMA momentum of code frequencies (counted on the noise-free codes)

    def validate(self) -> None:
        _check(self.tau_end > 0 and self.tau_start > 0, "model.schedule.tau_start/tau_end", "must be > 0")
        _check(self.sigma_start >= 0 and self.sigma_end >= 0, "model.schedule.sigma_*", "must be >= 0")
        _check(self.horizon_steps >= 0, "model.schedule.horizon_steps", "must be >= 0 (0 = half the run)")
        _check(self.sdud_lambda > 0, "model.schedule.sdud_lambda", "must be > 0")
        _check(self.frqud_threshold >= 1, "model.schedule.frqud_threshold",
               "must be >= 1 (1 = no frequency effect, every code follows the cosine)")
        _check(0 <= self.frqud_momentum < 1, "model.schedule.frqud_momentum", "must be in [0, 1)")
        _check(self.strategy not in ("sdud", "frqud") or self.sigma_end == 0, "model.schedule.sigma_end",
               f"must be 0 with strategy {self.strategy} (its noise decays to 0 at the horizon); set "
               "model.schedule.sigma_end=0, or choose a fixed shape (linear, cosine, ...) to keep noise")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the joint objective's terms (0 switches a term off)."""

    generator: float = 1.0  # generator cross-entropy over the next item's SID levels and suffix (retrieval)
    ranker: float = 1.0  # ranker loss over sampled + mined negatives; 0 = no ranker, retrieval order is final
    codebook: float = 1.0  # codebook + commitment (VQ)
    commitment: float = 0.25  # beta of the commitment term, relative to the codebook term
    reconstruction: float = 0.5  # item content rebuilt from its SID
    # CoST: InfoNCE item embedding <-> quantized reconstruction. 0.6 (was 0.1), learned SIDs at equal budget:
    # Scientific 20 epochs retrieve-then-rank N@10 +9.1 %, generator alone +11.6 % (the tune search's best
    # trial); Beauty 10 epochs +6.1 % / +26 %, colliding items .243 vs .412 (docs/results.md, sessions 16-17).
    cost: float = 0.6
    unisid: float = 0.1  # UniSID: InfoNCE at every level's prefix
    balance: float = 0.3  # code-balance: KL(batch code distribution || uniform)
    # Ranker -> generator listwise distillation (model.listwise_*): the generator's item probabilities
    # over the ranker's top candidates matched to the ranker's softmax over them; 0 = off.
    listwise: float = 0.0

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            _check(getattr(self, f.name) >= 0, f"model.loss.{f.name}", "must be >= 0")


@dataclass(frozen=True)
class ModelConfig:
    preset: Preset = "joint"  # model and recipe; applies its PRESETS defaults before the file and --set
    dim: int = 64  # model width D
    num_layers: int = 2  # Transformer blocks of the sequence encoder (shared by generator and ranker)
    num_heads: int = 2  # attention heads; model.dim must be divisible by it
    dropout: float = 0.2  # dropout of the sequence encoder (inputs, attention, MLP)
    # Layer-normalise each history item's input vector (no parameters) before the position embedding.
    # Without it the items enter ~10x smaller than the blocks' outputs and the newest item's identity
    # fades: SASRec on Beauty reached validation N@10 .050 in 8 epochs with it, .033 without.
    input_norm: bool = True
    # sasrec: score with the input item embeddings (tied) or with a separate output embedding table.
    # Untied reached validation N@10 .060 on Beauty in 8 epochs, tied .050 (docs/results.md).
    tie_embeddings: bool = True
    token_buckets: int = 32768  # hash buckets of the content-token EmbeddingBag
    use_item_id: bool = False  # add an item-ID embedding to the content encoder (SASRec: ID inputs)
    ranker_item_id: bool = True  # the ranker sees the candidate's ID embedding beside its SID
    # The tokenizer inside the ranker (DIG) in full: the ranker scores a candidate through its SID code
    # vectors too, so the ranking loss reaches the codebooks through the candidates as well as through the
    # history items it reads. false (default): candidates by their ID embedding alone. Measured off better,
    # retrieve-then-rank / generator-alone N@10: Beauty learned SIDs +17 % / +70 %, Scientific +11 % / +16 %
    # (docs/results.md, sessions 15 and 17): the full-softmax gradient on the code vectors pulled them
    # away from what the generator decodes with.
    ranker_codes: bool = False
    # History items enter the sequence encoder as their SID code vectors plus an item-ID embedding
    # (false: SID code vectors only). Items that share a SID prefix stay distinguishable in the history.
    history_item_id: bool = False
    # The SID parts of the ranker and of the history inputs become residual branches that start at zero:
    # user state = h + MLP(h), item = ID embedding + MLP(codes), history item = ID embedding + proj(codes).
    # Training starts as an ID model (SASRec) and learns what the SIDs add; needs ranker_item_id and
    # history_item_id. On Beauty the ranker alone reached validation N@10 .057 with it, .044 without.
    sid_residual: bool = False
    # joint: the ranker scores a candidate with the same item-ID embedding the history reads (SASRec's tied
    # embeddings); needs ranker_item_id and history_item_id. On Beauty it trades N@10 for R@10 as in SASRec:
    # the ranker over every item tested .0376 / .0743 tied vs .0425 / .0685, retrieval alone +33% N@10.
    tie_item_ids: bool = False
    levels: int = 3  # SID levels L
    # Where the SIDs come from. tokenizer: the item encoder + residual quantizer (learned with the
    # recommender in joint, trained on content first and frozen in tiger). file: model.sid_file, fixed.
    # content: residual k-means over the dataset's dense item vectors (a text embedding: prepare with
    # --option embed=wordllama or vectors=FILE), one-to-one, fixed (raygr/models/content_sids.py). With
    # file and content no tokenizer is trained; the codebooks are the code embeddings the generator learns.
    sid_source: Literal["tokenizer", "file", "content"] = "tokenizer"
    # With model.sid_source=content: weight of the collaborative block beside the text vectors, the top
    # singular vectors of the training interactions' item-transition PPMI matrix (0 = text alone). Text
    # alone puts items that read alike under one prefix; with this, items bought in the same contexts.
    sid_collab_weight: float = 0.0
    # With model.sid_source=content and train.init_from (a sasrec run on the same data): weight of a third
    # block, the item table that run's recommendation loss learned, so the SIDs group items by what the
    # next-item objective found alike, beside text and co-occurrence (0 = without it).
    sid_rec_weight: float = 0.0
    # true: model.sid_rec_weight is picked when the run starts, among 0.5, 1, 2 and 4: the weight whose SIDs
    # make the validation targets' first code most often the previous item's most frequent successor code in
    # the training transitions (raygr/models/sid_predictability.py; seconds, nothing trains). The run's
    # config records the weight picked. The weight it picks differs by dataset (Beauty 2, or 4 on another
    # seed where the two score alike; Scientific 1: docs/results.md, session 22). Needs train.init_from.
    sid_rec_weight_auto: bool = False
    # With model.sid_source=file: JSON {item id: [codes]} or Parquet item_id/sid, keyed by the dataset's
    # original item ids (raygr/data/sid_file.py). model.levels must equal the SIDs' length.
    sid_file: str | None = None
    codes: int = 256  # codes per level K
    # With the learned tokenizer (model.sid_source=tokenizer, joint preset): when exploration ends at the
    # horizon, every item's noise-free SID becomes fixed for the rest of the run and the item encoder
    # stops training; the codebooks go on as code embeddings. The generator's targets then never move
    # again (without it they drift with every update of the encoder), and a checkpoint carries its SIDs.
    fix_sids_at_horizon: bool = True
    max_suffix: int = 16  # collision suffix slots (items sharing one full SID)
    # kmeans: residual k-means over every item's encoder vector before step 0; batch: codes seeded from
    # one random batch of items, no k-means iterations (for catalogues too large for k-means).
    init: Literal["kmeans", "batch"] = "kmeans"
    # Every this many steps, codes that no batch has used for this many steps are re-seeded from item
    # residuals (collapsed codes never recover by gradient alone); 0 = off.
    dead_code_steps: int = 200
    temperature_contrast: float = 0.1  # InfoNCE temperature of CoST / UniSID
    # How much of the generator CE's gradient flows into the target's code assignment (0..1). At 1
    # the CE alone can be lowered by mapping items onto a few easy codes (collapse); the target's
    # code vectors and the history items reach the tokenizer through the straight-through path anyway.
    target_assign_grad: float = 0.0
    # How much of the generator CE's gradient reaches the shared sequence encoder (0..1). The ranker
    # and the generator read the same user state; at 1 the generator's gradient dominates the shared
    # encoder and the ranker learns far more slowly than the same ranker alone (docs/results.md).
    generator_encoder_grad: float = 1.0
    # false: the generator reads the history through a sequence encoder of its own (same size), the ranker
    # through the other; they share the history's input vectors (code embeddings, item-ID table). On Beauty
    # (joint, 30% distillation) retrieve-then-rank validation N@10 was at or above the shared encoder's at 7
    # of the 8 epochs compared, test .0460 (docs/results.md, session 13).
    shared_encoder: bool = True
    # With model.shared_encoder=false, how the generator's encoder reads a history item. shared: the same
    # input vector as the ranker's (with model.sid_residual, its ID embedding plus a code projection that
    # starts at zero). own: a code projection of its own, trained from the start as in the tiger preset,
    # plus the shared item-ID embedding; the code embeddings and the ID table stay shared, so what the
    # ranker learns about items still reaches the generator through them. separate: the own projection
    # and an item-ID table of its own (as the tiger preset's generator reads the history): the stages
    # share only the SIDs' code embeddings, and each input table learns from one loss alone. Measured on
    # Beauty (docs/results.md, session 20): generator alone -5.8 %, retrieve-then-rank -0.8 % test N@10
    # against shared: the ranker's item-ID table is worth more to the generator than a table of its own.
    generator_inputs: Literal["shared", "own", "separate"] = "shared"
    # With model.shared_encoder=false: the generator's encoder state at each position also gets a learned
    # projection of the ranker's state there (detached: the generator's loss does not bend the ranker's
    # encoder, which session 13 measured to hurt). The ranker's encoder learns from the full softmax over
    # item IDs, a far denser signal than the generator's per-level code targets; this hands the generator
    # what it learned. The projection starts at zero, so the generator starts as without it. Measured
    # (docs/results.md, session 19): test N@10 generator alone / retrieve-then-rank +2.4 % / -2.0 % on
    # Beauty, -3.8 % / +2.9 % on Scientific: noise, so off.
    generator_reads_ranker: bool = False
    # The generator's step from one SID level to the next: false = s + Linear(code vector); true = s +
    # MLP([s, code vector]), which lets deeper levels depend on the state and the prefix jointly.
    generator_mlp: bool = False
    # 0: the generator is a per-level head on the user state after the newest item. N > 0: an N-layer
    # Transformer decoder (as TIGER's) reads the codes decoded so far and cross-attends to the history's
    # state at every position, so a deeper code can look again at the items behind the chosen prefix.
    # The decoder replaces the head's level-to-level steps, so model.generator_mlp is then unused.
    generator_layers: int = 0
    generator_dropout: float = 0.1  # dropout of that decoder (its inputs, attention and MLP)
    # Each level's softmax runs over the codes that continue the target's prefix to some item (the SID
    # trie), in training and in beam search: a SID's score is then its item's probability, and the
    # generator spends no capacity pushing down codes that constrained decoding never offers.
    trie_softmax: bool = False
    # An output embedding per SID prefix (trie node) added to its code's embedding in the generator's
    # logits: below the first level a code means something else under every prefix, and the node's own
    # vector lets the deep levels score the prefix (nearly an item) as an ID model scores items. Needs
    # fixed SIDs (model.sid_source file or content: node numbers must not move) and model.trie_softmax.
    node_embeddings: bool = False
    # Share of the generator's per-level target taken from the ranker (0..1): the ranker's softmax over
    # the items sharing the target's SID prefix, summed by their next code; the rest is the one-hot
    # next item. The generator then learns which codes the ranker rates, not only the observed one.
    generator_distill: float = 0.0
    # model.loss.listwise > 0: per step, for up to listwise_rows of the batch's targets, the ranker's
    # listwise_candidates best items (the target among them) are scored by the generator's whole-SID
    # log-probability, and that order is pulled towards the ranker's (KL of the two softmaxes). The
    # generator alone ranks its own beam worse than the ranker re-ranks it; this teaches it the
    # ranker's order where N@10 is decided, unlike generator_distill's per-level marginals over the
    # whole catalogue. Its weight ramps in linearly over listwise_warmup_steps (an untrained ranker
    # is no teacher). Measured on Scientific (docs/results.md, session 17): model.loss.listwise 0.1 ran
    # level with none (generator alone +1.5 % at epoch 17), 1 far below; off by default.
    listwise_candidates: int = 20  # the target and the ranker's best others per row
    listwise_rows: int = 128  # targets per step that the term scores (its cost: rows x candidates SIDs)
    listwise_warmup_steps: int = 200  # model.loss.listwise ramps in from 0 over these steps
    # false: the KL runs over the ranker's other candidates alone. The ranker's softmax gives the observed
    # item far less than the generator's cross-entropy asks for, so with the target in, the two terms
    # pull its probability in opposite directions; without it the term teaches only the ranker's order
    # among the items that did not come next (its "dark knowledge").
    listwise_target: bool = True
    ranker_loss: Literal["softmax", "bce"] = "softmax"  # sampled softmax over the negatives, or per-item BCE
    # Negatives per step of the ranker's softmax, and of SASRec's: uniform items shared by the batch
    # (sampled softmax). 0, or >= the catalogue size: the full softmax over every item (SASRec's preset
    # default; sampled, a 50,000-item catalogue costs it ~1/50 of the output layer).
    num_negatives: int = 128
    # 0: the ranker's negatives go through the quantizer with gradients every step, so they train the
    # tokenizer too. N > 0: their code vectors come from a no-gradient pass over the catalogue redone
    # every N steps; only the batch's own items are quantized with gradients. With the full catalogue as
    # negatives (num_negatives >= items) the per-step pass over every item is most of a step's cost.
    negative_codes_every: int = 0
    hard_negatives: int = 8  # enhancer: retrieved wrong items fed back per example
    # Steps between enhancer retrievals (UniGRF's ranking-driven enhancer; 0 = off, the default since
    # session 21). It acts only with a sampled-softmax ranker (num_negatives < items). Retrieve-then-rank
    # test N@10 with it on, 1,000 sampled negatives, learned SIDs (docs/results.md, sessions 19 and 21):
    # Beauty -19.9 %, Scientific -15.8 % (the ranker learns to push down the retriever's top items, among
    # which the next item is); on the synthetic default +16 to +18 % (the demo, 3 seeds). Off until it helps
    # on real data; e.g. 50 to try it.
    enhancer_every: int = 0
    # How the loss terms are combined: fixed (the model.loss weights), scheduled (ranker and tokenizer
    # terms ramp in over ramp_steps), adaptive (GradNorm-style balance of generator and ranker).
    weighting: Weighting = "adaptive"
    ramp_steps: int = 1000  # scheduled weighting: ranker/tokenizer weights ramp in over these steps
    gradnorm_alpha: float = 0.5  # adaptive weighting: strength of the gradient-norm balance
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # Gumbel exploration of the quantizer
    loss: LossWeights = field(default_factory=LossWeights)  # weights of the joint objective's terms

    def validate(self) -> None:
        _check(self.dim >= 8 and self.dim % self.num_heads == 0, "model.dim",
               f"must be >= 8 and divisible by model.num_heads ({self.num_heads})")
        _check(self.num_layers >= 1, "model.num_layers", "must be >= 1")
        _check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        _check(self.levels >= 1, "model.levels", "must be >= 1")
        _check(self.codes >= 2, "model.codes", "must be >= 2")
        _check(self.max_suffix >= 1, "model.max_suffix", "must be >= 1")
        _check(self.token_buckets >= 16, "model.token_buckets", "must be >= 16")
        _check(self.num_negatives >= 0, "model.num_negatives", "must be >= 0 (0 = full softmax over every item)")
        _check(self.dead_code_steps >= 0, "model.dead_code_steps", "must be >= 0 (0 = off)")
        _check(self.hard_negatives >= 0, "model.hard_negatives", "must be >= 0")
        _check(self.enhancer_every >= 0, "model.enhancer_every", "must be >= 0 (0 = off)")
        _check(self.temperature_contrast > 0, "model.temperature_contrast", "must be > 0")
        _check(0 <= self.target_assign_grad <= 1, "model.target_assign_grad", "must be in [0, 1]")
        _check(not self.sid_residual or (self.ranker_item_id and self.history_item_id), "model.sid_residual",
               "needs model.ranker_item_id=true and model.history_item_id=true (the ID paths it starts from)")
        _check(self.ranker_codes or self.ranker_item_id, "model.ranker_codes",
               "false leaves the ranker nothing to score a candidate by: set model.ranker_item_id=true")
        _check(not self.tie_item_ids or (self.ranker_item_id and self.history_item_id), "model.tie_item_ids",
               "needs model.ranker_item_id=true and model.history_item_id=true (the two tables it ties)")
        _check(0 <= self.generator_encoder_grad <= 1, "model.generator_encoder_grad", "must be in [0, 1]")
        _check(0 <= self.generator_distill <= 1, "model.generator_distill", "must be in [0, 1]")
        _check(self.generator_inputs == "shared" or not self.shared_encoder, "model.generator_inputs",
               "own and separate need model.shared_encoder=false (one shared encoder reads one input vector per item)")
        _check(not self.generator_reads_ranker or not self.shared_encoder, "model.generator_reads_ranker",
               "needs model.shared_encoder=false (with one shared encoder the generator already reads it)")
        _check((self.sid_source == "file") == bool(self.sid_file), "model.sid_file",
               "is needed with model.sid_source=file and only then (set both, or neither)")
        _check(self.sid_collab_weight >= 0, "model.sid_collab_weight", "must be >= 0 (0 = text vectors alone)")
        _check(self.sid_rec_weight >= 0, "model.sid_rec_weight", "must be >= 0 (0 = without the recommender's items)")
        _check(self.sid_rec_weight == 0 or self.sid_source == "content", "model.sid_rec_weight",
               "quantizes with the content SIDs only: set model.sid_source=content, or model.sid_rec_weight=0")
        _check(not self.sid_rec_weight_auto or self.sid_source == "content", "model.sid_rec_weight_auto",
               "picks a weight of the content SIDs only: set model.sid_source=content, or leave it false")
        _check(not self.node_embeddings or (self.sid_source != "tokenizer" and self.trie_softmax),
               "model.node_embeddings", "needs fixed SIDs (model.sid_source=file or content) and "
               "model.trie_softmax=true")
        _check(self.generator_layers >= 0, "model.generator_layers", "must be >= 0 (0 = the per-level head)")
        _check(0 <= self.generator_dropout < 1, "model.generator_dropout", "must be in [0, 1)")
        _check(self.generator_distill == 0 or self.loss.ranker > 0, "model.generator_distill",
               "learns from the ranker: needs model.loss.ranker > 0 (or set it to 0)")
        _check(self.loss.listwise == 0 or self.loss.ranker > 0, "model.loss.listwise",
               "learns from the ranker: needs model.loss.ranker > 0 (or set it to 0)")
        _check(self.listwise_candidates >= 2, "model.listwise_candidates",
               "must be >= 2 (the target and at least one of the ranker's other items)")
        _check(self.listwise_rows >= 1, "model.listwise_rows", "must be >= 1")
        _check(self.listwise_warmup_steps >= 0, "model.listwise_warmup_steps", "must be >= 0 (0 = full weight at once)")
        self.schedule.validate()
        self.loss.validate()


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20  # most epochs (early stopping may end sooner); Tune: ASHA's max_t
    batch_size: int = 256  # global batch of training windows, split over the Ray Train workers
    lr: float = 2e-3  # peak AdamW learning rate: linear warm-up, then cosine decay to train.lr_floor of it
    lr_floor: float = 0.05  # the cosine decay ends at this fraction of train.lr (1 = constant after warm-up)
    # Epochs at the peak rate before the cosine applies; the rate then steps down to where the whole run's
    # cosine is and follows it (0 = no hold). On Beauty a step down late in a run helped retrieval most:
    # held 6 of 9 epochs, test N@10 .0378 against .0366 at a constant rate, retrieval alone .0155 against
    # .0115 (docs/results.md, sessions 10 and 11).
    lr_hold_epochs: int = 0
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 100  # steps of linear learning-rate warm-up
    grad_clip: float = 1.0  # clip the global gradient norm to this (0 = off)
    seed: int = 0  # seeds initialisation, k-means, shuffling, negatives and the evaluation subset
    tokenizer_epochs: int = 10  # tiger preset: epochs of the content-only tokenizer stage
    patience: int = 5  # early stopping: epochs without improvement of the validation NDCG@10 train.select_by names
    # What the best checkpoint (and early stopping, and Tune) is chosen by: "main", the validation NDCG@10 of
    # what the preset serves (retrieve-then-rank for joint); "generator", the generator alone's (beam search
    # order), for a service that runs retrieval only. On Beauty the two peak at different epochs (joint
    # recipe: ranker 14, generator 19; docs/results.md, sessions 21-22).
    select_by: Literal["main", "generator"] = "main"
    beam_size: int = 20  # offline evaluation: beam width of the retrieval (at least 20, the largest K)
    num_candidates: int = 50  # offline retrieve-then-rank: candidates handed to the ranker
    # > 0: retrieve SID prefixes instead of whole SIDs. The beam search decodes only the first
    # prefix_levels codes, keeps train.num_prefixes prefixes, and every item under them goes to the
    # ranker (train.num_candidates is then unused). The beam's costly deep levels are replaced by
    # ranker dot products, which tell apart the few items under one prefix far better (docs/results.md).
    prefix_levels: int = 0
    num_prefixes: int = 100  # with train.prefix_levels > 0: prefixes the beam search keeps
    # With train.prefix_levels > 0: the ranker scores at most this many items per user, the best prefixes'
    # first (0 = every item under them). A fixed budget: early in training, while the SIDs crowd into
    # few prefixes, the items under 200 prefixes are most of the catalogue, and validation would score
    # the ranker over nearly all of it.
    max_candidates: int = 0
    eval_batch_size: int = 512  # users per batch in validation and test
    num_workers: int = 1  # Ray Train workers (DDP)
    use_gpu: bool = False  # train on GPUs, one per worker
    cpus_per_worker: float = 1.0  # CPUs Ray reserves per worker (also its torch threads)
    # How Ray places the workers' resource bundles: PACK fills as few nodes as possible (Ray Train's
    # default: DDP traffic stays inside a node); SPREAD puts them on as many nodes as it can, e.g. one per
    # memory-limited node (benchmarks/bench_memory_limit.py) or to survive the loss of one node better.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    max_failures: int = 1  # Ray Train FailureConfig: worker-group restarts from the latest checkpoint
    # Streamed training windows Ray Data may hold in the object store at once while it feeds the workers
    # (MiB). Each worker's RSS counts the store pages it read, so this bounds what streaming adds to it:
    # from 1M to 20M interactions worker RSS +8 % at 64, +12 % at 128, +35 % unbounded, with the same share
    # of time waiting for input (~7 %) at 64 and 128 (docs/results.md "Scale").
    ingest_store_mib: int = 64
    # Keep freed CPU memory in the process for the next step (glibc mallopt; raygr/training/allocator.py):
    # a step then reuses its tensors' pages instead of mapping and zero-filling fresh ones. Beauty's joint
    # recipe on CPU: a third of each step was system time; with it a step took 1.4-1.6x less CPU time and peak RSS
    # 6-13 % higher (benchmarks/bench_allocator.py, docs/results.md). false: glibc's defaults.
    keep_freed_memory: bool = True
    # With keep_freed_memory: every this many steps the free heap pages go back to the system (malloc_trim).
    # Without it the kept heap only grows (fragments of tensors whose shape changes from step to step);
    # 0 = never.
    trim_every_steps: int = 100
    log_every: int = 50  # a progress line every this many steps (0 = only the per-epoch line)
    # A checkpoint or run directory on the same data whose sequence encoder and item-ID tables start a new
    # run (weights only). A sasrec run starts the joint model as that SASRec. Unused when a run resumes.
    init_from: str | None = None
    # Where a run's per-epoch records also go. TensorBoard event files (RUN_DIR/tensorboard; a search's
    # trials under OUTPUT/ray/search/trial-*) are written either way when TensorBoard is installed;
    # mlflow also logs each run (each Tune trial) to MLflow: the flattened config as params, the epochs'
    # numbers with step=epoch, and a train run's test metrics. Needs ``pip install 'raygr[tracking]'``.
    tracking: Literal["tensorboard", "mlflow"] = "tensorboard"
    # With train.tracking=mlflow: the MLflow tracking URI (a server, sqlite:///..., file:/...); unset = a
    # local file store in the run's (the search's) directory, RUN_DIR/mlruns (OUTPUT/mlruns).
    mlflow_uri: str | None = None
    mlflow_experiment: str = "raygr"  # with train.tracking=mlflow: the MLflow experiment the runs go to

    def validate(self) -> None:
        _check(self.epochs >= 1, "train.epochs", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        _check(self.lr > 0, "train.lr", "must be > 0")
        _check(0 <= self.lr_floor <= 1, "train.lr_floor", "must be in [0, 1] (a fraction of train.lr)")
        _check(self.lr_hold_epochs >= 0, "train.lr_hold_epochs", "must be >= 0 (0 = no hold)")
        _check(self.num_workers >= 1, "train.num_workers", "must be >= 1")
        _check(self.trim_every_steps >= 0, "train.trim_every_steps", "must be >= 0 (0 = never)")
        _check(self.beam_size >= 1, "train.beam_size", "must be >= 1")
        _check(self.num_candidates >= 1, "train.num_candidates", "must be >= 1")
        _check(self.prefix_levels >= 0, "train.prefix_levels", "must be >= 0 (0 = retrieve whole SIDs)")
        _check(self.num_prefixes >= 1, "train.num_prefixes", "must be >= 1")
        _check(self.max_candidates == 0 or self.max_candidates >= 20, "train.max_candidates",
               "must be 0 (no limit) or at least 20, the longest list evaluated")
        _check(self.patience >= 1, "train.patience", "must be >= 1")
        _check(self.cpus_per_worker > 0, "train.cpus_per_worker", "must be > 0")
        _check(self.ingest_store_mib >= 8, "train.ingest_store_mib",
               "must be >= 8 (MiB of the object store for streamed windows; blocks are up to 4 MiB)")
        _check(bool(self.mlflow_experiment.strip()), "train.mlflow_experiment", "must not be empty")
        _check(self.mlflow_uri is None or bool(self.mlflow_uri.strip()), "train.mlflow_uri",
               "must not be empty (leave it unset for RUN_DIR/mlruns)")


@dataclass(frozen=True)
class TuneConfig:
    num_samples: int = 8  # trials sampled from tune.space (a grid is repeated this many times)
    max_concurrent: int = 0  # 0 = as many as the cluster's resources allow
    grace_period: int = 2  # ASHA: epochs before a trial may be stopped
    reduction_factor: int = 2  # ASHA: a rung keeps the best 1/reduction_factor of the trials
    gpus_per_trial: float = 0.0  # split over the trial's workers (0.5: two trials per GPU); > 0 trains on GPU
    # Tune FailureConfig: restarts of a trial that failed (its node was lost, its driver died, or its Train
    # run failed after train.max_failures), each from the trial's latest checkpoint; 0 = record it as failed
    # at once (a re-run with --resume-errored retries it); -1 = no limit.
    max_failures: int = 1
    # dotted key -> {choice|grid: [...]} or {uniform|loguniform|randint: [low, high]}; empty = the
    # default space (decay strategy and its parameters, loss weighting, loss weights, lr, batch size).
    space: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        _check(self.num_samples >= 1, "tune.num_samples", "must be >= 1")
        _check(self.max_concurrent >= 0, "tune.max_concurrent", "must be >= 0")
        _check(self.grace_period >= 1, "tune.grace_period", "must be >= 1")
        _check(self.reduction_factor >= 2, "tune.reduction_factor", "must be >= 2")
        _check(self.max_failures >= -1, "tune.max_failures", "must be >= -1 (-1 = no limit)")


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # HTTP bind address of the Serve proxy (0.0.0.0: reachable from other hosts)
    port: int = 8000  # HTTP port of the Serve proxy
    max_k: int = 100  # largest k a request may ask for
    # Items retrieved and handed to the ranker when a request gives no "candidates"; a request may ask
    # for up to 2 x max(max_k, default_candidates).
    default_candidates: int = 50
    max_batch_size: int = 32  # most requests per batch: per Ingress call to a model role, per forward pass
    # How long a replica waits to fill a batch: longer gathers larger batches under load (30 ms: 3.5x the
    # unbatched throughput on 2 cores, docs/results.md); a request alone in the Ingress never waits.
    batch_wait_timeout_s: float = 0.005
    min_replicas: int = 1  # autoscaling: fewest (and initial) replicas of each deployment
    max_replicas: int = 2  # autoscaling: most replicas of each deployment
    target_ongoing_requests: float = 8.0  # autoscaling target per model replica (Ingress: 4x)
    # Histories longer than data.max_history: truncate keeps the newest items (the answer says so),
    # reject answers 413.
    history_policy: Literal["truncate", "reject"] = "truncate"
    use_gpu: bool = False  # model replicas on GPU (Retriever and Ranker share one: 0.5 GPU each)

    def validate(self) -> None:
        _check(1 <= self.port <= 65535, "serve.port", "must be in 1..65535")
        _check(self.max_k >= 1, "serve.max_k", "must be >= 1")
        _check(1 <= self.min_replicas <= self.max_replicas, "serve.min_replicas/max_replicas",
               "need 1 <= min_replicas <= max_replicas")
        _check(self.max_batch_size >= 1, "serve.max_batch_size", "must be >= 1")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)  # the prepared dataset and the history it feeds
    model: ModelConfig = field(default_factory=ModelConfig)  # preset, architecture, tokenizer, objective
    train: TrainConfig = field(default_factory=TrainConfig)  # optimisation, evaluation, Ray Train workers
    tune: TuneConfig = field(default_factory=TuneConfig)  # search (raygr tune): space, ASHA, resources
    serve: ServeConfig = field(default_factory=ServeConfig)  # HTTP service (raygr serve): limits, batching, scaling

    def validate(self) -> Config:
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        _check(self.train.prefix_levels <= self.model.levels, "train.prefix_levels",
               f"must be <= model.levels ({self.model.levels}): a prefix is at most the whole code sequence")
        _check(self.train.select_by == "main" or self.model.preset != "sasrec", "train.select_by",
               "is 'generator' but preset sasrec has no generator: use 'main'")
        _check(not self.model.sid_rec_weight_auto or bool(self.train.init_from), "model.sid_rec_weight_auto",
               "needs train.init_from: the sasrec run whose item table the SIDs quantize")
        _check(self.model.sid_rec_weight == 0 or bool(self.train.init_from), "model.sid_rec_weight",
               "needs train.init_from: the sasrec run whose item table the SIDs quantize")
        return self


# What each preset changes from the defaults above (a user's file and --set come on top).
PRESETS: dict[str, dict[str, Any]] = {
    # Everything on: SIDs learned with the recommender, generator + ranker, enhancer, adaptive weighting.
    "joint": {},
    # Two-stage (TIGER): tokenizer trained on content only (train.tokenizer_epochs) and frozen, then the
    # generator; no ranker, no noise.
    "tiger": {
        "model": {"weighting": "fixed", "enhancer_every": 0,
                  "schedule": {"strategy": "constant", "sigma_start": 0.0, "sigma_end": 0.0},
                  "loss": {"ranker": 0.0}},
    },
    # ID-based causal Transformer with full softmax over the catalogue (SASRec): no SIDs, no ranker.
    "sasrec": {
        "model": {"use_item_id": True, "weighting": "fixed", "enhancer_every": 0, "dropout": 0.5,
                  "num_negatives": 0},
        "train": {"lr": 1e-3},
    },
}


def _check(ok: bool, key: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' {what}")


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML / command-line value to the annotated type, or raise naming the key."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' is {value!r}; allowed values: {', '.join(map(str, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            return None
        return _coerce(value, args[0], key)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or _is_int_str(value)):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}") from None
    if tp is str:
        return str(value)
    return value


def _is_int_str(v: Any) -> bool:
    return isinstance(v, str) and v.strip().lstrip("+-").isdigit()


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {values!r}")
    hints = _type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; known keys in "
            f"'{prefix.rstrip('.') or '<root>'}': {', '.join(sorted(names))}")
    kwargs = {}
    for name, raw in values.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(raw, tp, f"{prefix}{name}")
    return cls(**kwargs)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "space":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'model.levels=4'`` -> (['model', 'levels'], 4); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value (e.g. train.epochs=5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


# Model keys whose default changed after checkpoints were written without them: a saved config that
# lacks one was trained with the value here (see config_from_dict's ``legacy``).
LEGACY_MODEL_DEFAULTS: dict[str, Any] = {"input_norm": False}


def config_from_dict(values: dict[str, Any] | None, overrides: list[str] | tuple[str, ...] = (),
                     legacy: bool = False) -> Config:
    values = dict(values or {})
    for text in overrides:
        path, value = parse_override(text)
        node = values
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[path[-1]] = value
    preset = (values.get("model") or {}).get("preset", "joint")
    if legacy:
        # Keys added since a checkpoint was written take the value that reproduces that checkpoint.
        model = dict(values.get("model") or {})
        for key, old in LEGACY_MODEL_DEFAULTS.items():
            model.setdefault(key, old)
        values["model"] = model
    if preset not in PRESETS:
        raise ConfigError(f"config key 'model.preset' is {preset!r}; allowed values: {', '.join(PRESETS)}")
    merged = _deep_merge(PRESETS[preset], values)
    return _build(Config, merged, "").validate()


def read_config_file(p: Path, extended_by: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's sections; ``extends: OTHER.yaml`` (relative to the file) starts from another
    file's sections, so a variant lists only what it changes."""
    by = f" (extended by {extended_by[-1]})" if extended_by else ""
    if not p.is_file():
        raise ConfigError(f"config file {p}{by} does not exist")
    try:
        values = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections (data, model, train, ...)")
    base = values.pop("extends", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"config file {p}: 'extends' must be the path of another config file, got {base!r}")
    chain = (*extended_by, p)
    target = p.parent / base
    if target.resolve() in {q.resolve() for q in chain}:
        raise ConfigError(f"config file {p}: 'extends: {base}' loops back to a file that extends it")
    return _deep_merge(read_config_file(target, chain), values)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    values = read_config_file(Path(path)) if path is not None else {}
    try:
        return config_from_dict(values, overrides)
    except ConfigError as e:
        where = f" (in {path})" if path is not None else ""
        raise ConfigError(f"{e}{where}") from None


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Config, path: str | Path | None = None) -> str:
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text


def replace(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """A copy of ``cfg`` with dotted overrides applied (used by Tune trials)."""
    return config_from_dict(config_to_dict(cfg), overrides)
