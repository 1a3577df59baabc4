"""Input files: text (gunzipped on the fly for ``.gz``), its non-blank lines, JSON, and finding a
format's files in a directory. Every error is a ``DatasetError`` naming the file (and line)."""

from __future__ import annotations

import gzip
import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from raygr.data.dataset import DatasetError

PathLike = str | Path


def open_text(path: Path, encoding: str = "utf-8") -> typing.TextIO:
    """A text file, gunzipped on the fly when its name ends in ``.gz``."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding=encoding)
    return open(path, encoding=encoding)


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """``(line number from 1, line)`` without the newline, skipping blank lines."""
    n = 0
    try:
        with open_text(path, encoding) as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield n, line
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}:{n + 1}: not {encoding} text ({e.reason})") from None
    except (OSError, EOFError) as e:  # a truncated or corrupt .gz
        raise DatasetError(f"{path}: cannot read: {e}") from None


def load_json(path: Path) -> Any:
    try:
        with open_text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: invalid JSON at column {e.colno}: {e.msg}") from None
    except (UnicodeDecodeError, OSError, EOFError) as e:
        raise DatasetError(f"{path}: cannot read: {e}") from None


def existing(path: PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"{what} {p} does not exist")
    return p


def find(directory: Path, patterns: list[str], what: str, required: bool = True) -> Path | None:
    """The one file in ``directory`` matching ``patterns``; several is ambiguous, so an error."""
    found = sorted({p for pat in patterns for p in directory.glob(pat) if p.is_file()})
    if len(found) > 1:
        raise DatasetError(f"{directory} holds several {what} files ({', '.join(p.name for p in found)}); "
                           "pass the one to use")
    if not found and required:
        raise DatasetError(f"{directory} holds no {what} file (looked for {', '.join(patterns)})")
    return found[0] if found else None


def sibling(path: Path, old_suffix: str, new_suffixes: list[str]) -> Path | None:
    """``X.inter[.gz]`` -> the first existing ``X.item`` / ``X.item.gz``."""
    stem = path.name.removesuffix(".gz").removesuffix(old_suffix)
    for suffix in new_suffixes:
        if (p := path.with_name(stem + suffix)).is_file():
            return p
    return None


def split_lines(path: Path, sep: str, num_fields: int, what: str,
                 encoding: str = "utf-8") -> tuple[list[list[str]], np.ndarray]:
    """Columns of a delimited file with a fixed field count, plus each row's line number."""
    rows, lines = [], []
    for n, line in iter_lines(path, encoding):
        parts = line.split(sep)
        if len(parts) != num_fields:
            raise DatasetError(f"{path}:{n}: expected {num_fields} {sep!r}-separated fields ({what}), "
                               f"found {len(parts)}")
        rows.append(parts)
        lines.append(n)
    cols = [list(c) for c in zip(*rows)] if rows else [[] for _ in range(num_fields)]
    return cols, np.asarray(lines, dtype=np.int64)
