"""Dense item vectors for the ``dense`` column: a pretrained text embedding, or vectors the user brings.

    raygr data prepare --format s3rec --input ../shared/data/amazon-beauty --output data/beauty-wl \\
        --option embed=wordllama                    # needs `pip install -e ".[text]"`; no network
    raygr data prepare ... --option vectors=item_vectors.parquet   # Sentence-T5, BGE, an in-house model

``embed=wordllama`` embeds one readable text per item (``item_text``: "Title. Brand: opi. Categories:
makeup, nails") with WordLlama's ``l2_supercat`` model, whose 256-d weights and tokenizer ship inside the
``wordllama`` wheel: nothing is downloaded at run time. Vectors are stored L2-normalised, because the
model is trained for cosine similarity and its raw pooled norm mostly measures how short a text is. An
item with no text keeps a zero vector (its hashed content tokens and item id are all the model has).

``vectors=PATH`` reads vectors keyed by the input's original item ids, and stores them as float32
exactly as given (no normalising, no centring):

- ``.parquet``: an ``item_id`` column (strings or integers) and either one list column (the vector) or
  one numeric column per dimension (in column order);
- ``.npz``: arrays ``item_id`` [M] and ``vector`` [M, F];
- ``.npy``: [N, F] with no ids: row i is the item with item_idx i+1, i.e. the order of the prepared
  ``items.parquet`` (original ids in natural order; prepare once without vectors to read it).

Every dataset item needs a vector, and the file may not hold ids the dataset does not have, unless
``vectors_unknown=ignore`` (items with no interactions are dropped by prepare, so a catalogue-wide file
has such ids). ``prepare`` records where the column came from in the manifest's ``source.dense``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from raygr.data.dataset import DatasetError, ItemTable, sha256_file

EMBEDDERS = ("wordllama",)
WORDLLAMA_CONFIG = "l2_supercat"  # the only model the wheel bundles
WORDLLAMA_DIM = 256
_LABELS = {"brand": "Brand", "cat": "Categories", "attr": "Attributes", "genre": "Genres",
           "desc": "Description"}
_BATCH = 512


# ------------------------------------------------------------------------------------------ item texts


def item_text(title: str | None, tokens: list[str]) -> str:
    """One readable text for an item: its title, then each token field as ``Label: v1, v2.``

    Titles are taken from the display title when there is one, since the ``title:`` tokens are its
    lowercased words without punctuation; description words read as one run, other fields as lists."""
    title = " ".join((title or "").split())
    fields: dict[str, list[str]] = {}
    for tok in tokens:
        prefix, sep, value = tok.partition(":")
        if sep and value:
            fields.setdefault(prefix, []).append(value)
    title_words = fields.pop("title", [])
    parts = [title or " ".join(title_words)]
    for prefix, values in fields.items():
        label = _LABELS.get(prefix, prefix.replace("_", " ").capitalize())
        parts.append(f"{label}: {(' ' if prefix == 'desc' else ', ').join(values)}")
    parts = [p.rstrip(". ") for p in parts if p.strip(". ")]
    return ". ".join(parts) + "." if parts else ""


def item_texts(items: ItemTable) -> list[str]:
    titles = items.title if items.title is not None else [None] * len(items)
    return [item_text(t, toks) for t, toks in zip(titles, items.tokens)]


# ------------------------------------------------------------------------------------------- wordllama


def load_wordllama() -> Any:
    """The bundled WordLlama model, never downloading anything."""
    try:
        import wordllama
        from wordllama import WordLlama
    except ImportError:
        raise DatasetError("embed=wordllama needs the wordllama package: pip install -e \".[text]\" "
                           "(or pip install wordllama)") from None
    # wordllama 0.4 looks for its bundled tokenizer under tokenizer/ (singular) but ships it under
    # tokenizers/, then falls back to a download; pointing its cache at the package finds both files.
    package = Path(wordllama.__file__).parent
    try:
        return WordLlama.load(config=WORDLLAMA_CONFIG, dim=WORDLLAMA_DIM, cache_dir=package,
                              disable_download=True)
    except (FileNotFoundError, ValueError) as e:
        raise DatasetError(f"the installed wordllama {getattr(wordllama, '__version__', '?')} does not bundle "
                           f"the {WORDLLAMA_DIM}-d {WORDLLAMA_CONFIG} model ({e}); "
                           "reinstall it with pip install -e \".[text]\"") from None


def embed_wordllama(texts: list[str], model: Any | None = None) -> np.ndarray:
    """[len(texts), 256] float32, L2-normalised; rows of empty texts stay zero."""
    model = model if model is not None else load_wordllama()
    out = np.zeros((len(texts), WORDLLAMA_DIM), dtype=np.float32)
    idx = [i for i, t in enumerate(texts) if t.strip()]
    for s in range(0, len(idx), _BATCH):
        rows = idx[s:s + _BATCH]
        out[rows] = np.asarray(model.embed([texts[i] for i in rows], norm=False), dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    # A text made only of characters the tokenizer drops pools to zero: keep it zero rather than NaN.
    np.divide(out, norms, out=out, where=norms > 0)
    return out


# ------------------------------------------------------------------------------------------ vector files


def _finite(vectors: np.ndarray, ids: list[str], where: str) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):  # overflow to inf is reported below, with the item
            v = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: vectors must be numbers ({e})") from None
    if v.ndim != 2 or v.shape[1] == 0:
        raise DatasetError(f"{where}: expected vectors of shape [items, F>0], got {list(v.shape)}")
    bad = ~np.isfinite(v)
    if bad.any():
        r, c = (int(x) for x in np.argwhere(bad)[0])
        raise DatasetError(f"{where}: item {ids[r]!r} (row {r}) has {v[r, c]} at dimension {c} "
                           f"({int(bad.any(axis=1).sum())} rows are not finite as float32); fix or drop them")
    return v


def _ids(values: Any, where: str) -> list[str]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DatasetError(f"{where}: item_id must be 1-D, got shape {list(arr.shape)}")
    if arr.dtype.kind == "f":
        raise DatasetError(f"{where}: item_id must hold strings or integers (the input's item ids), "
                           f"got floats such as {arr[0]!r}")
    if arr.dtype.kind == "O" and any(not isinstance(x, str | int | np.integer) for x in arr):
        bad = next(x for x in arr if not isinstance(x, str | int | np.integer))
        raise DatasetError(f"{where}: item_id must hold strings or integers, got {bad!r}")
    return [str(x) for x in arr.tolist()]


def _read_parquet(path: Path) -> tuple[list[str], np.ndarray, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"vectors file {path} is not a readable Parquet file: {e}") from None
    if "item_id" not in t.column_names:
        raise DatasetError(f"vectors file {path} has no 'item_id' column (columns: "
                           f"{', '.join(t.column_names)}); name the column holding the input's item ids item_id")
    ids = _ids(t.column("item_id").to_pylist(), f"vectors file {path}, column item_id")
    rest = [c for c in t.column_names if c != "item_id"]
    types = {c: t.schema.field(c).type for c in rest}
    lists = [c for c in rest if pa.types.is_list(types[c]) or pa.types.is_large_list(types[c])
             or pa.types.is_fixed_size_list(types[c])]
    if len(lists) == 1 and len(rest) == 1:
        col = lists[0]
        rows = t.column(col).to_pylist()
        dims = [None if r is None else len(r) for r in rows]
        width = next((d for d in dims if d), None)
        for r, d in enumerate(dims):
            if d != width:
                got = "null" if d is None else f"{d} values"
                raise DatasetError(f"vectors file {path}: item {ids[r]!r} (row {r}) has {got} in column "
                                   f"{col!r}, other rows have {width}; every vector needs the same length")
        if any(x is None for r in rows for x in r):
            r = next(r for r, row in enumerate(rows) if any(x is None for x in row))
            raise DatasetError(f"vectors file {path}: item {ids[r]!r} (row {r}) has a null value in {col!r}")
        return ids, _finite(np.asarray(rows, dtype=np.float64), ids, f"vectors file {path}"), "parquet-list"
    if lists or not rest:
        raise DatasetError(f"vectors file {path}: expected item_id and either one list column or one numeric "
                           f"column per dimension, got columns {', '.join(t.column_names)}")
    for c in rest:
        if not (pa.types.is_integer(types[c]) or pa.types.is_floating(types[c])):
            raise DatasetError(f"vectors file {path}: column {c!r} is {types[c]}, not numeric; "
                               "every column besides item_id is a vector dimension")
        if t.column(c).null_count:
            r = t.column(c).to_pylist().index(None)
            raise DatasetError(f"vectors file {path}: item {ids[r]!r} (row {r}) is null in column {c!r}")
    dense = np.stack([t.column(c).to_numpy().astype(np.float64) for c in rest], axis=1)
    return ids, _finite(dense, ids, f"vectors file {path}"), "parquet-columns"


def _read_numpy(path: Path, dataset_ids: list[str]) -> tuple[list[str], np.ndarray, str]:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetError(f"vectors file {path} is not a readable NumPy file: {e}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            missing = [k for k in ("item_id", "vector") if k not in data.files]
            if missing:
                raise DatasetError(f"vectors file {path} lacks the array(s) {', '.join(missing)} (it has "
                                   f"{', '.join(data.files) or 'none'}); save it with "
                                   "np.savez(path, item_id=ids, vector=vectors)")
            ids = _ids(data["item_id"], f"vectors file {path}, array item_id")
            vectors = data["vector"]
        if vectors.ndim != 2 or len(vectors) != len(ids):
            raise DatasetError(f"vectors file {path}: vector has shape {list(vectors.shape)}, expected "
                               f"[{len(ids)} (one row per item_id), F]")
        return ids, _finite(vectors, ids, f"vectors file {path}"), "npz"
    if data.ndim != 2 or len(data) != len(dataset_ids):
        raise DatasetError(f"vectors file {path} has shape {list(data.shape)}; an .npy without ids must be "
                           f"[{len(dataset_ids)} (the dataset's items, in items.parquet order), F]. "
                           "Use an .npz with item_id and vector arrays to key rows by id")
    return list(dataset_ids), _finite(data, dataset_ids, f"vectors file {path}"), "npy-item-order"


def _sample(xs: list[str], k: int = 5) -> str:
    return ", ".join(repr(x) for x in xs[:k]) + (", ..." if len(xs) > k else "")


def load_vectors(path: str | Path, item_ids: list[str], unknown: str = "error"
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """[N, F] float32 in the order of ``item_ids`` (the dataset's original ids), and its manifest record."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetError(f"vectors file {p} does not exist (option vectors=)")
    if unknown not in ("error", "ignore"):
        raise DatasetError(f"option vectors_unknown={unknown!r} must be error or ignore")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        ids, vectors, layout = _read_parquet(p)
    elif suffix in (".npy", ".npz"):
        ids, vectors, layout = _read_numpy(p, item_ids)
    else:
        raise DatasetError(f"vectors file {p}: unknown type {p.suffix!r}; use .parquet, .npz or .npy")
    row_of: dict[str, int] = {}
    for r, i in enumerate(ids):
        if i in row_of:
            raise DatasetError(f"vectors file {p}: item {i!r} appears twice (rows {row_of[i]} and {r})")
        row_of[i] = r
    missing = [i for i in item_ids if i not in row_of]
    if missing:
        raise DatasetError(f"vectors file {p} has no vector for {len(missing):,} of the dataset's "
                           f"{len(item_ids):,} items (item ids {_sample(missing)}); every item needs one")
    known = set(item_ids)
    extra = [i for i in ids if i not in known]
    if extra and unknown == "error":
        raise DatasetError(f"vectors file {p} has {len(extra):,} item ids that are not items of the dataset "
                           f"({_sample(extra)}): not in the input, or items without interactions, which "
                           "prepare drops; remove them or pass --option vectors_unknown=ignore")
    dense = vectors[[row_of[i] for i in item_ids]]
    return dense, {"origin": "file", "path": str(p.resolve()), "sha256": sha256_file(p), "layout": layout,
                   "dim": int(dense.shape[1]), "unknown_ids_ignored": len(extra), "normalized": "none"}


# ----------------------------------------------------------------------------------------------- prepare


def add_dense(items: ItemTable, embed: str | None = None, vectors: str | Path | None = None,
              vectors_unknown: str = "error", where: str = "input") -> dict[str, Any] | None:
    """Fill ``items.dense`` from ``embed=`` or ``vectors=``; returns the manifest's ``source.dense``."""
    if vectors is None and vectors_unknown != "error":
        raise DatasetError("option vectors_unknown= applies to a vectors= file; pass vectors=PATH too")
    if embed is None and vectors is None:
        return None
    if embed is not None and vectors is not None:
        raise DatasetError("options embed= and vectors= both fill the dense column; pass one of them")
    if items.dense is not None:
        raise DatasetError(f"{where}: the items already carry dense features; embed=/vectors= would replace them")
    if vectors is not None:
        items.dense, record = load_vectors(vectors, [str(i) for i in items.item_id], vectors_unknown)
        return record
    if embed not in EMBEDDERS:
        raise DatasetError(f"option embed={embed!r}: the available text embedders are {', '.join(EMBEDDERS)}")
    texts = item_texts(items)
    items.dense = embed_wordllama(texts)
    import wordllama

    with_text = int((np.abs(items.dense).sum(axis=1) > 0).sum())
    return {"origin": "wordllama", "model": f"{WORDLLAMA_CONFIG}-{WORDLLAMA_DIM}",
            "package_version": getattr(wordllama, "__version__", None), "dim": WORDLLAMA_DIM,
            "normalized": "l2", "items_with_text": with_text, "items_without_text": len(items) - with_text,
            "example_text": next((t for t in texts if t), "")[:200]}
