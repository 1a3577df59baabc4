"""Training and evaluation without Ray: ``fit``, ``train_step``, ``evaluate``.

    model = build_model(cfg, dataset); initialise(model, cfg)
    state = fit(TrainContext.create(model, cfg, steps_per_epoch), dataset_batches, valid)

``fit`` takes any callable ``epoch -> iterable of {"input", "target"} batches`` (the in-process
``iterate_windows`` or Ray Data's ``iter_torch_batches``) and an ``on_epoch_end`` hook that the Ray
layer uses to checkpoint and report; it never imports ray.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from raygr.config import Config
from raygr.data.split import EvalExamples
from raygr.metrics import DEFAULT_KS, decoding_health, metrics_from_ranks, ranks_from_lists, ranks_from_scores
from raygr.models.batch import TrainBatch
from raygr.models.joint import GenerativeRecommender
from raygr.models.schedules import lr_factor, temperature
from raygr.training.allocator import release_freed_memory, retain_freed_memory
from raygr.training.enhancer import HardNegativeMiner
from raygr.training.warm_start import warm_start
from raygr.training.weighting import LossWeighter

TARGET_METRIC = "ndcg@10"


def selection_score(valid: Mapping[str, Any], select_by: str) -> float:
    """The validation figure a run keeps its best checkpoint and early-stops by (``train.select_by``):
    the preset's main NDCG@10, or the generator alone's. Presets whose main output is the generator
    (tiger) report no separate ``retrieval_only``: there the two are the same number."""
    if select_by == "generator":
        return float(valid.get("retrieval_only", valid)[TARGET_METRIC])
    return float(valid[TARGET_METRIC])


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0
    samples: int = 0  # training rows seen
    train_seconds: float = 0.0
    best_metric: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainState:
        return cls(**dict(d))


@dataclass
class TrainContext:
    model: nn.Module  # the module to call for losses (may be DDP-wrapped)
    core: nn.Module  # the unwrapped model (inference, refresh, mining)
    cfg: Config
    optimizer: torch.optim.Optimizer
    weighter: LossWeighter
    miner: HardNegativeMiner
    total_steps: int
    hold_steps: int = 0  # train.lr_hold_epochs in steps
    device: torch.device = torch.device("cpu")
    verbose: bool = True

    @classmethod
    def create(cls, model: nn.Module, cfg: Config, steps_per_epoch: int, *, core: nn.Module | None = None,
               device: torch.device | str = "cpu", verbose: bool = True) -> TrainContext:
        core = core or model
        if cfg.train.keep_freed_memory:
            retain_freed_memory()
        total = max(1, steps_per_epoch * cfg.train.epochs)
        cfg = resolve_horizon(cfg, total)
        kept = {id(p) for p in getattr(core, "frozen_by_fix", ())}  # SIDs fixed at the horizon (adopt_sids)
        params = [p for p in model.parameters() if p.requires_grad or id(p) in kept]
        opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        shared = getattr(core, "shared_parameters", core.seq.shared_parameters)()
        m = cfg.model
        miner = HardNegativeMiner(core.num_items, m.num_negatives, m.hard_negatives, m.enhancer_every)
        weighter = LossWeighter(m, shared, log=print if verbose else (lambda _msg: None))
        ctx = cls(model, core, cfg, opt, weighter, miner,
                  total_steps=total, hold_steps=steps_per_epoch * cfg.train.lr_hold_epochs,
                  device=torch.device(device),
                  verbose=verbose)
        ctx.set_horizon(cfg.model.schedule.horizon_steps)
        return ctx

    def set_horizon(self, horizon_steps: int) -> None:
        """Make ``horizon_steps`` the exploration horizon everywhere it is read: this context's config (which
        checkpoints save), the model's own config and its quantizer's schedule. A resume calls it with the
        horizon its checkpoint saved (``load_trainer_state``), so the schedule never changes mid-run."""
        sched = dataclasses.replace(self.cfg.model.schedule, horizon_steps=horizon_steps)
        self.cfg = dataclasses.replace(self.cfg, model=dataclasses.replace(self.cfg.model, schedule=sched))
        if isinstance(self.core, GenerativeRecommender):
            self.core.cfg = dataclasses.replace(self.core.cfg, schedule=sched)
            self.core.quantizer.schedule = sched


def resolve_horizon(cfg: Config, total_steps: int) -> Config:
    """``model.schedule.horizon_steps = 0`` means half of this run's optimisation steps.

    Called once, when a run starts; a resumed run takes the resolved value from its checkpoint instead,
    so changing train.epochs on a resume does not move the horizon.
    """
    if cfg.model.schedule.horizon_steps:
        return cfg
    sched = dataclasses.replace(cfg.model.schedule, horizon_steps=max(1, total_steps // 2))
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, schedule=sched))


def initialise(model: nn.Module, cfg: Config, log: Callable[[str], None] = print) -> None:
    """Before the first step: ``train.init_from``'s weights, then k-means codebooks (joint) or the
    content-only tokenizer stage (tiger)."""
    loaded = warm_start(model, cfg.train.init_from, log) if cfg.train.init_from else []
    if not isinstance(model, GenerativeRecommender):
        return
    if model.sids_fixed:  # model.sid_file: nothing to fit; the codebooks are code embeddings
        model.freeze_tokenizer()
    elif any(name.startswith("quantizer.") for name in loaded):  # the codebooks came with the warm start
        if cfg.model.preset == "tiger":
            model.freeze_tokenizer()
    elif cfg.model.preset == "tiger":
        fit_tokenizer(model, cfg, log)
        model.freeze_tokenizer()
    elif cfg.model.init == "kmeans":
        with torch.no_grad():
            ids = torch.arange(1, model.num_items + 1, device=model.quantizer.codebooks.device)
            model.quantizer.init_kmeans(model.encoder(ids), seed=cfg.train.seed)
    else:  # "batch": codes seeded from one batch of items, no k-means iterations (cheap on huge catalogues)
        with torch.no_grad():
            g = torch.Generator(device="cpu").manual_seed(cfg.train.seed)
            n = min(model.num_items, max(cfg.train.batch_size, cfg.model.codes))
            ids = (torch.randperm(model.num_items, generator=g)[:n] + 1).to(model.quantizer.codebooks.device)
            model.quantizer.init_kmeans(model.encoder(ids), iters=0, seed=cfg.train.seed)
    model.refresh()


def maybe_revive_codes(ctx: TrainContext, step: int) -> int:
    """Every ``model.dead_code_steps`` steps, re-seed codes no batch has used for that long.

    Collapsed codes never come back by gradient alone (nothing is assigned to them). The item sample
    and the seed depend only on the step, and the usage record is all-reduced, so every DDP replica
    re-seeds the same codes with the same vectors.
    """
    core, every = ctx.core, ctx.cfg.model.dead_code_steps
    if (every <= 0 or step % every or not isinstance(core, GenerativeRecommender) or core.tokenizer_frozen
            or core.sids_fixed):
        return 0
    if step > ctx.cfg.model.schedule.horizon_steps:
        # After exploration the codes are the generator's targets: a revived code would move every item
        # under it to another SID for no reason the recommendation loss gave.
        return 0
    q = core.quantizer
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(q.last_used, op=dist.ReduceOp.MAX)
    seed = ctx.cfg.train.seed + step
    g = torch.Generator(device="cpu").manual_seed(seed)
    ids = (torch.randperm(core.num_items, generator=g)[:4096] + 1).to(q.codebooks.device)
    with torch.no_grad():
        z = core.encoder(ids)
    return q.revive_dead_codes(z, step, every, seed)


def maybe_fix_sids(ctx: TrainContext, step: int) -> bool:
    """At the exploration horizon (model.fix_sids_at_horizon), fix every item's noise-free SID for the rest of
    the run. A pure function of the parameters, so every DDP replica fixes the same SIDs."""
    core, m = ctx.core, ctx.cfg.model
    if (not m.fix_sids_at_horizon or not isinstance(core, GenerativeRecommender) or core.sids_fixed
            or core.tokenizer_frozen or step + 1 < m.schedule.horizon_steps):
        return False
    core.adopt_sids(core.item_codes()[0])
    return True


def fit_tokenizer(model: GenerativeRecommender, cfg: Config, log: Callable[[str], None] = print) -> None:
    """TIGER's first stage: train encoder + quantizer on item content alone (reconstruction, VQ)."""
    if cfg.train.keep_freed_memory:
        retain_freed_memory()
    dev = model.quantizer.codebooks.device
    ids_all = torch.arange(1, model.num_items + 1, device=dev)
    with torch.no_grad():
        model.quantizer.init_kmeans(model.encoder(ids_all), seed=cfg.train.seed)
    params = list(model.encoder.parameters()) + list(model.quantizer.parameters()) + list(model.recon.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.train.lr)
    g = torch.Generator(device="cpu").manual_seed(cfg.train.seed)
    bs = 512
    w = cfg.model.loss
    step = 0
    model.train()
    for epoch in range(cfg.train.tokenizer_epochs):
        perm = ids_all[torch.randperm(len(ids_all), generator=g).to(dev)]
        total = 0.0
        for start in range(0, len(perm), bs):
            ids = perm[start:start + bs]
            z = model.encoder(ids)
            qo = model.quantizer(z, step)
            t = model.tokenizer_losses(z, qo, ids)
            loss = (w.codebook * t["codebook"] + w.reconstruction * t["reconstruction"] + w.balance * t["balance"]
                    + w.cost * t["cost"] + w.unisid * t["unisid"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            step += 1
        log(f"tokenizer epoch {epoch + 1}: loss {total / max(1, math.ceil(len(perm) / bs)):.4f}")


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step and the terms."""


def train_step(ctx: TrainContext, batch: TrainBatch, step: int) -> dict[str, float]:
    """One optimisation step; returns the unweighted terms, the total, the lr and the schedules."""
    cfg = ctx.cfg
    ctx.model.train()
    lr = cfg.train.lr * lr_factor(step, cfg.train.warmup_steps, ctx.total_steps, cfg.train.lr_floor,
                                  ctx.hold_steps)
    for group in ctx.optimizer.param_groups:
        group["lr"] = lr
    negatives = ctx.miner.negatives(batch.input.device)
    terms = ctx.model(batch, step, negatives)
    total, weights = ctx.weighter.combine(terms, step)
    if not torch.isfinite(total):
        # Stop here: one NaN step would poison every parameter, and the run would "finish" with NDCG 0.
        bad = sorted(k for k, v in terms.items() if not torch.isfinite(v))
        raise NonFiniteLoss(f"the loss is {float(total.detach())} at step {step} (non-finite terms: "
                            f"{', '.join(bad) or 'none'}; weights {weights}): lower train.lr, or check the data "
                            "and model.codes")
    ctx.optimizer.zero_grad(set_to_none=True)
    total.backward()
    if cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), cfg.train.grad_clip)
    ctx.optimizer.step()
    if cfg.train.keep_freed_memory and cfg.train.trim_every_steps > 0 and step % cfg.train.trim_every_steps == 0:
        release_freed_memory()
    mined = ctx.miner.maybe_mine(ctx.core, batch, step)
    revived = maybe_revive_codes(ctx, step)
    sigma = sigma_in_force(ctx.core)  # this step's, before a fix at the horizon makes it 0
    maybe_fix_sids(ctx, step)
    out = {k: float(v.detach()) for k, v in terms.items()}
    out.update(loss=float(total.detach()), lr=lr, tau=temperature(cfg.model.schedule, step),
               sigma=sigma, mined=mined, revived=revived)
    if "ranker" in weights:
        out["w_ranker"] = weights["ranker"]
        out["w_generator"] = weights["generator"]
    return out


def sigma_in_force(core: nn.Module) -> float:
    """The mean Gumbel noise scale this step's quantizer forward applied (0 when the codes are not explored:
    fixed SIDs, a frozen tokenizer, past the horizon): SDUD's and FrqUD's, not the cosine they start from."""
    if not isinstance(core, GenerativeRecommender) or core.tokenizer_frozen or core.sids_fixed:
        return 0.0
    return float(core.quantizer.last_sigma)


@torch.no_grad()
def evaluation_ranks(model: nn.Module, examples: EvalExamples, cfg: Config,
                     device: torch.device | str = "cpu") -> dict[str, np.ndarray]:
    """0-based target ranks per mode: ``main`` (what the preset serves) and ``retrieval_only``.

    Also returns the retrieved lists' invalid/duplicate counts as ``decoding`` [2] (sums), and per user
    the number of candidates the ranker scored as ``ranked``.
    """
    model.eval()
    model.refresh()
    kmax = max(DEFAULT_KS)
    bs = cfg.train.eval_batch_size
    main, retrieval, bad, ranked, tf_hits = [], [], np.zeros(2), [], 0
    for start in range(0, len(examples), bs):
        hist = torch.from_numpy(examples.history[start:start + bs]).to(device)
        tgt = torch.from_numpy(examples.target[start:start + bs]).to(device)
        if not isinstance(model, GenerativeRecommender):
            ranks = ranks_from_scores(model.scores(hist), tgt)
            main.append(ranks)
            retrieval.append(ranks)
            ranked.append(np.zeros(len(tgt), dtype=np.int64))
            continue
        H = model.history_states(hist)  # [B, T, D], encoded once for retrieval and ranking
        tf_hits = tf_hits + model.teacher_forced_hits(hist, tgt, H).cpu().numpy()
        items, _ = model.retrieve(hist, k=kmax, beam=max(cfg.train.beam_size, kmax), states=H)
        retrieval.append(ranks_from_lists(items, tgt))
        h = decoding_health(items.cpu().numpy(), model.num_items)
        bad += np.array([h["invalid_rate"], h["duplicate_rate"]]) * items.numel()
        if cfg.model.loss.ranker > 0:
            t = cfg.train  # = model.recommend, keeping the candidates to count them
            cands = model.candidates(hist, max(t.num_candidates, kmax), t.prefix_levels, t.num_prefixes, H,
                                     t.max_candidates)
            rec, _ = model.rerank(hist, cands, k=kmax, states=H)
            main.append(ranks_from_lists(rec, tgt))
            ranked.append((cands > 0).sum(1).cpu().numpy())
        else:
            main.append(retrieval[-1])
            ranked.append(np.zeros(len(tgt), dtype=np.int64))
    out = {"main": np.concatenate(main), "retrieval_only": np.concatenate(retrieval), "decoding": bad,
           "ranked": np.concatenate(ranked)}
    if isinstance(model, GenerativeRecommender):
        out["teacher_forced"] = np.asarray(tf_hits, dtype=np.float64)  # hits per level: workers' sum
    return out


def merge_ranks(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Evaluation ranks of several chunks or workers as one: per-user arrays concatenated, counts
    (decoding errors, teacher-forced hits per level) summed. Empty parts (no users) are skipped."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    counts = ("decoding", "teacher_forced")
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k not in counts}
    for k in counts:
        if k in parts[0]:
            out[k] = np.sum([p[k] for p in parts], axis=0)
    return out


def summarise(ranks: dict[str, np.ndarray], num_slots: int) -> dict[str, Any]:
    out: dict[str, Any] = metrics_from_ranks(ranks["main"])
    out["retrieval_only"] = metrics_from_ranks(ranks["retrieval_only"])
    out["decoding"] = {"invalid_rate": float(ranks["decoding"][0] / max(num_slots, 1)),
                       "duplicate_rate": float(ranks["decoding"][1] / max(num_slots, 1))}
    out["num_users"] = int(len(ranks["main"]))
    # Items the ranker scored per user (0 without a ranker): what a retrieve-then-rank figure cost.
    out["candidates_per_user"] = float(ranks["ranked"].mean()) if len(ranks["ranked"]) else 0.0
    if "teacher_forced" in ranks:  # per level (last = suffix): top code right given the true prefix
        n = max(len(ranks["main"]), 1)
        out["teacher_forced_accuracy"] = [round(float(a) / n, 4) for a in ranks["teacher_forced"]]
    return out


def evaluate(model: nn.Module, examples: EvalExamples, cfg: Config, device: torch.device | str = "cpu"
             ) -> dict[str, Any]:
    """Metrics of the preset's main output, retrieval-only metrics and decoding health."""
    ranks = evaluation_ranks(model, examples, cfg, device)
    return summarise(ranks, len(examples) * max(DEFAULT_KS))


def codebook_health(model: nn.Module) -> dict[str, Any]:
    from raygr.metrics import code_health
    if not isinstance(model, GenerativeRecommender):
        return {}
    if model.table is None:
        model.refresh()
    h = code_health(model.table.codes[1:].numpy(), model.cfg.codes)
    h["unreachable_items"] = int((~model.table.reachable()[1:]).sum())
    return h


def fit(ctx: TrainContext, train_batches: Callable[[int], Iterable[Mapping[str, Any]]],
        valid: EvalExamples | None, *, state: TrainState | None = None,
        evaluate_fn: Callable[[], dict[str, Any]] | None = None,
        on_epoch_end: Callable[[TrainState, dict[str, Any], bool], None] | None = None,
        log: Callable[[str], None] = print) -> TrainState:
    """Train for ``cfg.train.epochs`` epochs from ``state``; validate, early-stop, call the hook.

    ``on_epoch_end(state, record, is_best)`` runs after each epoch's validation (checkpointing).
    ``evaluate_fn`` replaces the local validation (the Ray layer evaluates a shard per worker).
    """
    cfg = ctx.cfg
    state = state or TrainState()
    evaluate_fn = evaluate_fn or (lambda: evaluate(ctx.core, valid, cfg, ctx.device))
    while state.epoch < cfg.train.epochs and not state.stopped_early:
        epoch = state.epoch
        before = None
        if isinstance(ctx.core, GenerativeRecommender):
            ctx.core.refresh()  # suffix targets follow the current codes
            before = ctx.core.table.sids().clone()
        sums: dict[str, float] = {}
        n_steps, t0, last_log = 0, time.perf_counter(), time.perf_counter()
        for raw in train_batches(epoch):
            batch = TrainBatch.from_mapping(raw, ctx.device)
            out = train_step(ctx, batch, state.step)
            state.step += 1
            n_steps += 1
            state.samples += batch.input.shape[0]
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v
            if ctx.verbose and cfg.train.log_every and state.step % cfg.train.log_every == 0:
                now = time.perf_counter()
                rate = cfg.train.log_every * batch.input.shape[0] / max(now - last_log, 1e-9)
                eta = (ctx.total_steps - state.step) * (now - t0) / max(n_steps, 1)
                log(f"epoch {epoch + 1}/{cfg.train.epochs} step {state.step}/{ctx.total_steps} "
                    f"loss {out['loss']:.4f} gen {out.get('generator', 0):.4f} rank {out.get('ranker', 0):.4f} "
                    f"| {rate:.0f} samples/s | ETA {eta / 60:.1f} min")
                last_log = now
        elapsed = time.perf_counter() - t0
        state.train_seconds += elapsed
        metrics = evaluate_fn()
        record = {"epoch": epoch + 1, "step": state.step, "train_s": elapsed,
                  "samples_per_s": (n_steps * cfg.train.batch_size) / max(elapsed, 1e-9),
                  "train": {k: v / max(n_steps, 1) for k, v in sums.items()}, "valid": metrics,
                  "codebook": codebook_health(ctx.core)}
        if before is not None:  # after validation's refresh: the SIDs the epoch ended with
            after = ctx.core.table.sids()
            record["codebook"]["sid_changed"] = float((after[1:] != before[1:]).any(1).float().mean())
        score = selection_score(metrics, cfg.train.select_by)
        is_best = score > state.best_metric
        if is_best:
            state.best_metric, state.best_epoch, state.bad_epochs = score, epoch + 1, 0
        else:
            state.bad_epochs += 1
            state.stopped_early = state.bad_epochs >= cfg.train.patience
        state.epoch = epoch + 1
        state.history.append(record)
        if ctx.verbose:
            util = record["codebook"].get("utilization")
            log(f"epoch {epoch + 1}: loss {record['train'].get('loss', 0):.4f} "
                f"| valid ndcg@10 {metrics[TARGET_METRIC]:.4f} "
                f"recall@10 {metrics['recall@10']:.4f}"
                # With a ranker the main figure is retrieve-then-rank: say what the generator alone did too.
                + (f" (generator alone {metrics['retrieval_only']['ndcg@10']:.4f} / "
                   f"{metrics['retrieval_only']['recall@10']:.4f})"
                   if metrics.get("candidates_per_user", 0) > 0 else "")
                + f" | {record['samples_per_s']:.0f} samples/s"
                + (f" | code util {[round(u, 2) for u in util]}" if util else "")
                + (f" | SIDs changed {record['codebook']['sid_changed']:.3f}" if "sid_changed" in record["codebook"]
                   else "")
                + (f" | teacher-forced acc {metrics['teacher_forced_accuracy']}"
                   if "teacher_forced_accuracy" in metrics else "")
                + ((" | best" if cfg.train.select_by == "main" else " | best generator") if is_best else ""))
        if on_epoch_end is not None:
            on_epoch_end(state, record, is_best)
    return state
