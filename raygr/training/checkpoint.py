"""Checkpoints of a training run and the run directory that holds them (no Ray here).

    RUN_DIR/
      config.yaml              resolved config of the latest ``raygr train``
      metrics.json             final numbers (``raygr.training.report``)
      learning_curve.png
      checkpoints/latest/      the newest epoch: where a re-run resumes
      checkpoints/best/        the epoch with the best validation NDCG@10: what evaluate/serve load
      ray/                     Ray Train's own storage (the checkpoints it keeps, its run state)

A checkpoint is a directory:

      model.pt     state_dict of the unwrapped model; the SID table rides in its extra state
      trainer.pt   optimizer, loss weighter, hard-negative pool: only needed to resume training
      meta.json    TrainState, dataset identity, resolved config, versions (readable without torch)
      config.yaml  the same resolved config, for people

    save_checkpoint(tmp, ctx, state, DatasetIdentity.from_manifest(manifest))
    info = read_checkpoint("runs/x")          # a run dir means its checkpoints/best
    check_compatible(info, cfg, manifest)     # CheckpointError naming the key that differs
    model, cfg, info = load_model("runs/x", dataset)

torch is imported inside the functions that need it, so that the CLI can name ``CheckpointError``
and ``RunDirError`` among its user errors without paying for the import.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raygr.config import Config, ConfigError, config_from_dict, config_to_dict, dump_config

if TYPE_CHECKING:
    from torch import nn

    from raygr.data.dataset import Dataset
    from raygr.training.loop import TrainContext, TrainState

FORMAT_VERSION = 1
MODEL_FILE, TRAINER_FILE, META_FILE, CONFIG_FILE = "model.pt", "trainer.pt", "meta.json", "config.yaml"
CHECKPOINTS, BEST, LATEST = "checkpoints", "best", "latest"

# Keys that change parameter shapes or what the saved codes mean: a checkpoint only loads into a
# config that agrees on all of them. Everything else (epochs, lr, beam size, ...) may change.
MODEL_SHAPE_KEYS = (
    "model.preset", "model.dim", "model.num_layers", "model.num_heads", "model.token_buckets",
    "model.use_item_id", "model.levels", "model.codes", "model.max_suffix", "data.max_history",
    # input_norm has no parameters, but the weights only make sense with the inputs they were trained on.
    "model.history_item_id", "model.input_norm", "model.tie_embeddings", "model.sid_residual",
    "model.generator_mlp", "model.generator_layers", "model.tie_item_ids", "model.generator_reads_ranker",
    "model.shared_encoder", "model.generator_inputs",
)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the dataset/config it is used with."""


class RunDirError(ValueError):
    """The run (output) directory cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class DatasetIdentity:
    """What a checkpoint remembers of the dataset it was trained on."""

    name: str
    fingerprint: str  # content checksum from the manifest: same files <=> same fingerprint
    num_items: int

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> DatasetIdentity:
        from raygr.data.dataset import content_fingerprint

        fp = manifest.get("fingerprint") or content_fingerprint(manifest)
        return cls(str(manifest.get("name", "?")), str(fp), int(manifest["num_items"]))


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint's metadata (meta.json), read without torch."""

    path: Path
    meta: dict[str, Any]

    @property
    def config(self) -> Config:
        try:
            return config_from_dict(self.meta["config"], legacy=True)
        except ConfigError as e:
            raise CheckpointError(f"checkpoint {self.path} holds a config this raygr cannot read: {e}") from None

    @property
    def dataset(self) -> DatasetIdentity:
        return DatasetIdentity(**self.meta["dataset"])

    @property
    def epoch(self) -> int:
        return int(self.meta["train_state"]["epoch"])

    def train_state(self) -> TrainState:
        from raygr.training.loop import TrainState

        return TrainState.from_dict(self.meta["train_state"])


# -- writing ----------------------------------------------------------------------------------------

def save_checkpoint(directory: str | Path, ctx: TrainContext, state: TrainState, dataset: DatasetIdentity,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint of ``ctx`` (model, optimizer, weighter, miner) and ``state`` into ``directory``.

    ``extra`` lands in meta.json under "run" (e.g. the epochs at which the run resumed).
    """
    import torch

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(ctx.core.state_dict(), out / MODEL_FILE)
    torch.save({"optimizer": ctx.optimizer.state_dict(), "weighter": ctx.weighter.state_dict(),
                "miner_pool": ctx.miner.pool.cpu()}, out / TRAINER_FILE)
    meta = {
        "format": FORMAT_VERSION,
        "train_state": state.to_dict(),
        "dataset": asdict(dataset),
        "config": config_to_dict(ctx.cfg),
        "run": extra or {},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # Size and sha256 of each weights file: a truncated or altered copy is noticed before loading.
        "files": {name: file_record(out / name) for name in (MODEL_FILE, TRAINER_FILE)},
    }
    # meta.json last: a directory with meta.json holds a complete checkpoint.
    write_json_atomic(out / META_FILE, meta)
    dump_config(ctx.cfg, out / CONFIG_FILE)
    return out


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to a sibling temp file and rename it into place: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a result file should not be
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _json_default(x: Any) -> Any:
    # numpy scalars / arrays sneak into metric dicts; JSON wants plain numbers and lists.
    if hasattr(x, "tolist"):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def publish_run_config(checkpoint: str | Path, run_dir: str | Path) -> Path:
    """RUN_DIR/config.yaml := the checkpoint's config, replaced atomically.

    The workers resolve what the driver cannot know before they count the steps (the exploration horizon,
    ``model.schedule.horizon_steps: 0``); the run's config.yaml then states the value the run uses.
    """
    dest = Path(run_dir) / CONFIG_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            f.write((Path(checkpoint) / CONFIG_FILE).read_text())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def publish(src: str | Path, dest: str | Path) -> Path:
    """Copy checkpoint ``src`` to ``dest``, replacing it atomically (a reader sees the old or the new one)."""
    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        if dest.exists():
            # os.replace cannot overwrite a non-empty directory: move the old one aside first.
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# -- reading ----------------------------------------------------------------------------------------

def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory (meaning its ``checkpoints/best``)."""
    p = Path(path).expanduser().resolve()
    if (p / META_FILE).is_file():
        return p
    for candidate in (p / CHECKPOINTS / BEST, p / CHECKPOINTS / LATEST):
        if (candidate / META_FILE).is_file():
            return candidate
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist")
    raise CheckpointError(f"{p} is neither a checkpoint (no {META_FILE}) nor a run directory with "
                          f"{CHECKPOINTS}/{BEST}; pass a run's output directory or one of its checkpoints")


def read_checkpoint(path: str | Path) -> CheckpointInfo:
    p = resolve_checkpoint(path)
    try:
        meta = json.loads((p / META_FILE).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p / META_FILE} is not valid JSON: {e}") from None
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{p} has checkpoint format {meta.get('format')!r}; this raygr reads "
                              f"{FORMAT_VERSION}")
    for key in ("train_state", "dataset", "config"):
        if key not in meta:
            raise CheckpointError(f"{p / META_FILE} lacks the key '{key}'")
    return CheckpointInfo(p, meta)


def check_compatible(info: CheckpointInfo, cfg: Config, manifest: dict[str, Any] | None = None) -> None:
    """Raise ``CheckpointError`` if ``info`` was trained on another dataset or a differently shaped model."""
    if manifest is not None:
        check_dataset(info, manifest)
    saved, now = config_to_dict(info.config), config_to_dict(cfg)
    for key in MODEL_SHAPE_KEYS:
        a, b = _dotted(saved, key), _dotted(now, key)
        if a != b:
            raise CheckpointError(
                f"config key '{key}' is {b!r}, but checkpoint {info.path} was trained with {a!r}; "
                f"set {key}={a} to use this checkpoint, or train into a new output directory")
    # 0 means "resolve from this run's steps", which a resume does by keeping the saved value; another
    # explicit value would change the exploration schedule halfway through the run.
    a, b = (c.model.schedule.horizon_steps for c in (info.config, cfg))
    if a and b and a != b:
        raise CheckpointError(
            f"config key 'model.schedule.horizon_steps' is {b}, but checkpoint {info.path} belongs to a run "
            f"whose exploration horizon is {a}; set model.schedule.horizon_steps={a} (or 0) to resume it, or "
            "train into a new output directory")


def check_dataset(info: CheckpointInfo, manifest: dict[str, Any], key: str = "") -> None:
    """Raise ``CheckpointError`` if ``info`` was trained on another dataset than ``manifest``'s."""
    theirs, ours = info.dataset, DatasetIdentity.from_manifest(manifest)
    if theirs.fingerprint != ours.fingerprint or theirs.num_items != ours.num_items:
        fix = (f"give {key} a checkpoint trained on this dataset" if key else
               "use the dataset it was trained on, or a new output directory to train from scratch")
        raise CheckpointError(
            f"{key + ': ' if key else ''}checkpoint {info.path} was trained on dataset '{theirs.name}' "
            f"({theirs.num_items} items, fingerprint {theirs.fingerprint}), but the given dataset is "
            f"'{ours.name}' ({ours.num_items} items, fingerprint {ours.fingerprint}); {fix}")


def _dotted(d: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        d = d[part]
    return d


def load_trainer_state(path: str | Path, ctx: TrainContext) -> TrainState:
    """Restore optimizer, weighter and miner pool into ``ctx``; returns the saved TrainState.

    The model's weights must already be in place (``load_model_state``) before ``ctx`` was created.
    """
    import torch

    info = read_checkpoint(path)
    saved = torch.load(info.path / TRAINER_FILE, map_location="cpu", weights_only=True)
    ctx.optimizer.load_state_dict(saved["optimizer"])
    ctx.weighter.load_state_dict(saved["weighter"])
    ctx.miner.pool = saved["miner_pool"]
    # The horizon was resolved from the run's total steps when it started; recomputed from this call's
    # train.epochs it would move the exploration schedule mid-run.
    ctx.set_horizon(run_horizon(info, ctx.cfg))
    return info.train_state()


def run_horizon(info: CheckpointInfo, cfg: Config) -> int:
    """The exploration horizon a run resumed from ``info`` keeps: the one its checkpoint saved, unless the
    checkpoint predates resolved horizons (0), where ``cfg``'s stands."""
    return info.config.model.schedule.horizon_steps or cfg.model.schedule.horizon_steps


def keep_run_horizon(cfg: Config, info: CheckpointInfo) -> Config:
    """``cfg`` with the exploration horizon of the run ``info`` belongs to (what a resume writes as the run's
    config.yaml)."""
    from raygr.config import replace

    return replace(cfg, [f"model.schedule.horizon_steps={run_horizon(info, cfg)}"])


def load_model_state(path: str | Path, model: nn.Module, device: Any = "cpu",
                     state: dict[str, Any] | None = None) -> CheckpointInfo:
    """Load a checkpoint's weights (and SID table) into ``model``; returns its metadata. ``state``: the
    weights file's contents when the caller has read it already."""
    import torch

    info = read_checkpoint(path)
    if state is None:
        state = torch.load(info.path / MODEL_FILE, map_location=device, weights_only=True)
    fixed = state.get("fixed_codes")
    if fixed is not None and getattr(model, "fixed_codes", False) is None:
        # Saved after model.fix_sids_at_horizon: the run's SIDs are fixed from here on, as they were then.
        model.adopt_sids(fixed[1:])
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # shapes differ although the shape keys agree: say so plainly
        raise CheckpointError(f"checkpoint {info.path} does not fit the model built from its config: "
                              f"{str(e).splitlines()[0]}") from None
    if hasattr(model, "freeze_tokenizer") and (info.config.model.preset == "tiger" or model.sids_fixed):
        # The freeze is a flag, not state: redo what ``initialise`` did (after the tokenizer stage, or at
        # once for SIDs fixed from a file or the content), so a resume builds the run's optimizer groups.
        model.freeze_tokenizer()
    return info


def load_model(path: str | Path, dataset: Dataset, device: Any = "cpu",
               overrides: list[str] | tuple[str, ...] = ()) -> tuple[nn.Module, Config, CheckpointInfo]:
    """Build the checkpoint's model for ``dataset`` and load its weights (evaluation, serving).

    ``overrides`` change evaluation-time keys (e.g. train.beam_size); shape keys must still agree.
    """
    from raygr.config import replace
    from raygr.training.factory import build_model

    info = read_checkpoint(path)
    cfg = replace(info.config, overrides) if overrides else info.config
    check_compatible(info, cfg, dataset.manifest)
    import torch

    state = torch.load(info.path / MODEL_FILE, map_location=device, weights_only=True)  # read once
    fixed = state.get("fixed_codes")
    model = build_model(cfg, dataset, sids=None if fixed is None else fixed[1:].cpu()).to(device)
    load_model_state(info.path, model, device, state=state)
    model.eval()
    return model, cfg, info


# -- the run directory ------------------------------------------------------------------------------

OWNER_FILE = ".raygr"  # {"kind": "run" | "search", ...}: this directory was created by raygr, for that


def claim_output(path: str | Path, kind: str, written_by_raygr: Callable[[Path], bool] | None = None) -> Path:
    """Create or re-use an output directory for a raygr ``kind`` ("run", "search"); returns its absolute path.

    raygr writes (and replaces its own files) only in a directory it created, marked by OWNER_FILE: new or
    empty directories are claimed; a marked one of the same kind is re-used (resume); a directory made by
    an older raygr without the mark is recognised by ``written_by_raygr``. Anything else is refused, so a
    mistyped --output can never overwrite a user's config.yaml, trials.csv or anything else.
    """
    p = Path(path).expanduser().resolve()
    if p.exists() and not p.is_dir():
        raise RunDirError(f"output {p} exists and is not a directory; choose another --output")
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise RunDirError(f"output directory {p} is not writable ({e.strerror or e}); "
                          "choose another --output or fix its permissions") from None
    owner = p / OWNER_FILE
    if owner.is_file():
        try:
            found = json.loads(owner.read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            found = None
        if found != kind:
            raise RunDirError(f"output directory {p} is a raygr {found or 'directory of unknown kind'} "
                              f"({owner}), not a {kind}; choose another --output")
        return p
    entries = sorted(e.name for e in p.iterdir() if not e.name.startswith("."))
    if entries and not (written_by_raygr is not None and written_by_raygr(p)):
        shown = ", ".join(repr(e) for e in entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise RunDirError(f"output directory {p} is not empty and holds no raygr {kind} (found {shown}); raygr "
                          "writes only into a new or empty directory, or one it created, so that it never "
                          "overwrites your files: choose an empty or new --output")
    write_json_atomic(owner, {"kind": kind, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return p


def _older_run(p: Path) -> bool:
    """A run directory written before OWNER_FILE existed: a checkpoint of ours, or Ray Train's storage."""
    return any((p / CHECKPOINTS / name / META_FILE).is_file() for name in (LATEST, BEST)) or (
        (p / "ray").is_dir() and not (p / "search.yaml").exists())


def prepare_run_dir(path: str | Path) -> Path:
    """Create/check a run directory before any work starts (``claim_output`` with kind "run")."""
    return claim_output(path, "run", _older_run)


def latest_checkpoint(run_dir: str | Path) -> CheckpointInfo | None:
    p = Path(run_dir) / CHECKPOINTS / LATEST
    return read_checkpoint(p) if (p / META_FILE).is_file() else None


# -- damaged checkpoints ----------------------------------------------------------------------------

def file_record(path: Path) -> dict[str, Any]:
    from raygr.data.dataset import sha256_file

    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def checkpoint_damage(path: str | Path) -> str | None:
    """What makes checkpoint directory ``path`` unusable, naming the file; None when it is whole.

    Checks meta.json, then each weights file against the size and sha256 meta.json recorded; a checkpoint
    written before those were recorded has its weights files checked as zip archives (torch.save's format,
    CRC of every member), which catches a truncated copy too.
    """
    p = Path(path)
    try:
        info = read_checkpoint(p) if (p / META_FILE).is_file() else None
    except (CheckpointError, OSError, UnicodeDecodeError) as e:
        return str(e)
    if info is None:
        return f"{p / META_FILE} is missing (the checkpoint was not written completely)"
    recorded = info.meta.get("files") or {}
    for name in (MODEL_FILE, TRAINER_FILE):
        f = p / name
        if not f.is_file():
            return f"{f} is missing"
        want = recorded.get(name)
        if want:
            size = f.stat().st_size
            if size != want["size"]:
                return f"{f} has {size:,} bytes, {p / META_FILE} recorded {want['size']:,} (truncated or replaced)"
            if file_record(f)["sha256"] != want["sha256"]:
                return f"{f} does not match its sha256 in {p / META_FILE} (the file changed)"
            continue
        try:
            with zipfile.ZipFile(f) as z:
                bad = z.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            return f"{f} is not a complete torch file ({e})"
        if bad is not None:
            return f"{f} is corrupted (member {bad} fails its CRC check)"
    return None


def resumable_checkpoint(candidates: list[Path], log: Callable[[str], None] = print) -> CheckpointInfo | None:
    """The first whole checkpoint among ``candidates`` (newest first), saying which damaged ones it skipped.

    Returns None only when none of them exists (a new run). When some exist and every one is damaged it
    raises ``CheckpointError`` naming each damaged file: a run never restarts from scratch silently.
    """
    damaged: list[str] = []
    for c in candidates:
        c = Path(c)
        if not c.is_dir():
            continue
        problem = checkpoint_damage(c)
        if problem is None:
            info = read_checkpoint(c)
            if damaged:
                log(f"resuming from {c} (epoch {info.epoch}), the newest checkpoint that is whole")
            return info
        damaged.append(problem)
        log(f"checkpoint {c} is damaged: {problem}; looking for an older one")
    if damaged:
        raise CheckpointError("no whole checkpoint to resume from: " + "; ".join(damaged) + ". Restore the "
                              "file(s), or train into a new output directory to start from scratch")
    return None
