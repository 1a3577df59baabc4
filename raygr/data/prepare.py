"""Prepare a dataset directory from any input format, and describe one.

    manifest = prepare("s3rec", "data/amazon-beauty", "datasets/beauty")
    manifest = prepare("table", "events/", "datasets/events",
                       options={"user": "uid", "item": "iid", "time": "ts", "use_ray": "auto"})
    print(describe("datasets/beauty"))

``prepare`` reads the input with its format's reader (``raygr.data.formats``) and writes the canonical
directory with ``write_dataset`` (atomic: a failure leaves no directory that looks complete). Options
every format accepts: ``name=`` (the dataset name in the manifest, default the directory name), and for
the ``dense`` column ``embed=wordllama`` (a pretrained text embedding of each item, offline) or
``vectors=PATH`` (+ ``vectors_unknown=error|ignore``) for vectors computed elsewhere
(``raygr.data.text_embedding``). The ``table`` format also takes ``use_ray=true|false|auto`` and
``ray_threshold_mb=`` (auto: Ray Data for inputs above that many MiB, see ``raygr.distributed.prepare``);
the two paths write the same dataset.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from raygr.data.dataset import DatasetError, load_dataset, write_dataset
from raygr.data.formats import coerce_options, read, table_files
from raygr.data.text_embedding import add_dense

RAY_THRESHOLD_MB = 256.0  # table inputs above this go through Ray Data when use_ray=auto


def _bool_option(value: Any, name: str) -> bool | None:
    """true/false, or None for auto."""
    v = str(value).lower()
    if v == "auto":
        return None
    if v in ("true", "1", "yes", "false", "0", "no"):
        return v in ("true", "1", "yes")
    raise DatasetError(f"option {name}={value!r} must be true, false or auto")


def _use_ray(fmt: str, input: str | Path | None, use_ray: Any, threshold_mb: Any) -> bool:
    choice = _bool_option(use_ray, "use_ray")
    if fmt != "table":
        if choice:
            raise DatasetError(f"use_ray=true applies to format 'table' only, not {fmt!r}")
        return False
    if choice is not None:
        return choice
    try:
        threshold = float(threshold_mb)
    except ValueError:
        raise DatasetError(f"option ray_threshold_mb={threshold_mb!r} must be a number") from None
    if input is None:
        return False
    size = sum(f.stat().st_size for f in table_files(input))
    return size > threshold * 2**20


def prepare(format: str, input: str | Path | None, output: str | Path, *,
            options: dict[str, Any] | None = None,
            num_shards: int = 8, overwrite: bool = False) -> dict[str, Any]:
    """Read ``input`` in ``format`` and write the dataset directory ``output``; returns its manifest."""
    if num_shards < 1:
        raise DatasetError(f"num_shards must be >= 1, got {num_shards}")
    options = dict(options or {})
    name = options.pop("name", None)
    dense_options = {k: options.pop(k) for k in ("embed", "vectors", "vectors_unknown") if k in options}
    use_ray = _use_ray(format, input, options.pop("use_ray", "auto"),
                       options.pop("ray_threshold_mb", RAY_THRESHOLD_MB))
    if use_ray and dense_options:
        raise DatasetError(f"option {', '.join(dense_options)} needs the in-memory path, not Ray Data; "
                           "pass --option use_ray=false")
    if use_ray:
        from raygr.distributed.prepare import prepare_table_ray  # the only path that needs ray

        return prepare_table_ray(input, output, options=coerce_options("table", options),
                                 num_shards=num_shards, overwrite=overwrite, name=name)
    items, seqs, source = read(format, input, options)
    source["engine"] = "in-memory"
    dense = add_dense(items, **dense_options, where=str(source.get("input") or format))
    if dense is not None:
        source["dense"] = dense
    return write_dataset(output, items, seqs, source=source, num_shards=num_shards, name=name,
                         overwrite=overwrite)


# -------------------------------------------------------------------------------------------- describe


def _stats_row(label: str, x: np.ndarray) -> str:
    if len(x) == 0:
        return f"  {label:<24}{'-':>9}"
    return (f"  {label:<24}{int(x.min()):>9,}{float(np.median(x)):>10,.1f}{float(x.mean()):>10,.2f}"
            f"{int(x.max()):>10,}")


def _dense_origin(d: dict[str, Any] | None) -> str:
    if not d:
        return ""
    if d.get("origin") == "wordllama":
        n = d["items_with_text"] + d["items_without_text"]
        return (f"; wordllama {d.get('model')}, L2-normalised, "
                f"{d['items_with_text']:,} of {n:,} items with text (the rest zero)")
    if d.get("origin") == "file":
        ignored = f", {d['unknown_ids_ignored']:,} unknown ids ignored" if d.get("unknown_ids_ignored") else ""
        return f"; from file {d.get('path')} ({d.get('layout')}, stored as given{ignored})"
    return f"; origin {d.get('origin')}"


def describe(path: str | Path, verify: bool = False) -> str:
    """A human-readable summary: counts, sparsity, length distributions, top tokens, shards, source."""
    ds = load_dataset(path, verify=verify)
    m, seqs, items = ds.manifest, ds.sequences, ds.items
    U, N, nnz = ds.num_users, ds.num_items, int(m["num_interactions"])
    lengths = seqs.lengths()
    user_of = np.repeat(np.arange(U), lengths)
    distinct_per_user = np.bincount(np.unique(user_of * (N + 1) + seqs.items) // (N + 1), minlength=U)
    per_item = np.bincount(seqs.items, minlength=N + 1)[1:]
    density = int(distinct_per_user.sum()) / max(U * N, 1)
    token_counts = Counter(t for toks in items.tokens for t in toks)
    tokens_per_item = np.fromiter((len(t) for t in items.tokens), dtype=np.int64, count=N)
    src = m.get("source", {})
    shards = [p.name for p in ds.shard_paths()]
    lines = [
        f"dataset       {ds.name}  ({ds.root})",
        f"users         {U:,}",
        f"items         {N:,}",
        f"interactions  {nnz:,}",
        f"density       {density:.4%} of user-item pairs  (sparsity {1 - density:.4%})",
        f"                          {'min':>9}{'median':>10}{'mean':>10}{'max':>10}",
        _stats_row("sequence length", lengths),
        _stats_row("distinct items / user", distinct_per_user),
        _stats_row("interactions / item", per_item),
        _stats_row("tokens / item", tokens_per_item),
        f"tokens        {len(token_counts):,} distinct; top: "
        + ", ".join(f"{t} ({c:,})" for t, c in token_counts.most_common(8)),
        f"dense         {'none' if items.dense is None else f'{items.dense.shape[1]} features per item'}"
        + _dense_origin(src.get("dense")),
        f"shards        {len(shards)}: {shards[0]} .. {shards[-1]}" if shards else "shards        none",
        f"source        {src.get('format', '?')} ({src.get('engine', '?')}): {src.get('input')}",
    ]
    if src.get("files"):
        lines.append(f"              files: {', '.join(Path(f).name for f in src['files'])}")
    counts = {k: src[k] for k in ("rows", "duplicates_dropped", "rows_filtered", "items_without_content",
                                  "item_rows_without_interactions") if k in src}
    if counts:
        lines.append("              " + ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in counts.items()))
    if "has_timestamps" in src:
        origin = "from the input" if src["has_timestamps"] else "none in the input (positions 0, 1, ...)"
        lines.append(f"              timestamps: {origin}")
    if src.get("options"):
        lines.append(f"              options: {', '.join(f'{k}={v}' for k, v in src['options'].items())}")
    lines.append(f"schema        v{m['schema_version']}, fingerprint {m.get('fingerprint')}, "
                 f"created {m.get('created_at')}" + (", checksums verified" if verify else ""))
    return "\n".join(lines)
