"""The formats by name (``READERS``, with the ``synthetic`` generator as a reader), their command-line
options (help text and coercion of strings to the readers' annotated types), and ``read`` by name."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from raygr.data.dataset import DatasetError, ItemTable, SequenceData
from raygr.data.formats.files import PathLike
from raygr.data.formats.letter import read_letter
from raygr.data.formats.movielens import read_movielens
from raygr.data.formats.recbole import read_recbole
from raygr.data.formats.s3rec import read_s3rec
from raygr.data.formats.table import read_table


def read_synthetic(path: PathLike | None = None, *, report: dict | None = None,
                   **options: Any) -> tuple[ItemTable, SequenceData]:
    """The seeded synthetic generator (no input): num_users=, num_items=, seed=, and the other keyword
    arguments of raygr.data.synthetic.generate."""
    from raygr.data.synthetic import generate

    try:
        items, seqs = generate(**options)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"synthetic data: {e}") from None
    if report is not None:
        report.update(rows=int(len(seqs.items)), duplicates_dropped=0, has_timestamps=True)
    return items, seqs


READERS: dict[str, Callable[..., tuple[ItemTable, SequenceData]]] = {
    "recbole": read_recbole, "s3rec": read_s3rec, "letter": read_letter, "movielens": read_movielens,
    "table": read_table, "synthetic": read_synthetic,
}


def _option_params(fmt: str) -> dict[str, tuple[Any, Any]]:
    """Option name -> (type, default) of a format's reader (synthetic: of ``generate``)."""
    if fmt == "synthetic":
        from raygr.data.synthetic import generate as fn
    else:
        fn = READERS[fmt]
    hints = typing.get_type_hints(fn)
    return {n: (hints.get(n, str), p.default) for n, p in inspect.signature(fn).parameters.items()
            if n not in ("path", "report") and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def _show(default: Any) -> str:
    if default in (None, ()):
        return ""
    if isinstance(default, bool):
        return str(default).lower()
    return repr(default) if isinstance(default, str) and not default.isalnum() else str(default)


def options_help() -> str:
    """One paragraph per format: what it reads and its options with their defaults."""
    out = []
    for fmt, fn in READERS.items():
        doc = " ".join((fn.__doc__ or "").split())
        opts = ", ".join(f"{n}={_show(d)}" for n, (_, d) in _option_params(fmt).items())
        out.append(f"{fmt}: {doc}\n    options: {opts}")
    return "\n".join(out)


def _coerce(value: Any, tp: Any, name: str, fmt: str) -> Any:
    """A command-line string to the option's annotated type, or DatasetError saying what is allowed."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        tp = Path if Path in args else args[0]
        origin = typing.get_origin(tp)
    if not isinstance(value, str):
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise DatasetError(
                f"option {name}={value!r} of format {fmt!r}: allowed values are {', '.join(allowed)}")
        return value
    if origin is tuple or tp is tuple:
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if tp is bool:
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise DatasetError(f"option {name}={value!r} of format {fmt!r} must be true or false")
        return value.lower() in ("true", "1", "yes")
    if tp in (int, float):
        try:
            return tp(value)
        except ValueError:
            raise DatasetError(f"option {name}={value!r} of format {fmt!r} must be "
                               f"{'an integer' if tp is int else 'a number'}") from None
    return value


def coerce_options(fmt: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check option names against the format's reader and convert command-line strings to their types."""
    if fmt not in READERS:
        raise DatasetError(f"unknown format {fmt!r}; choose one of {', '.join(READERS)}")
    params = _option_params(fmt)
    out = {}
    for name, value in (options or {}).items():
        if name not in params:
            raise DatasetError(f"format {fmt!r} has no option {name!r}; its options: {', '.join(params)}")
        out[name] = _coerce(value, params[name][0], name, fmt)
    return out


def read(fmt: str, path: PathLike | None, options: Mapping[str, Any] | None = None
         ) -> tuple[ItemTable, SequenceData, dict[str, Any]]:
    """Read any format; returns the items, the sequences and the ``source`` record for the manifest."""
    kwargs = coerce_options(fmt, options)
    if path is None and fmt != "synthetic":
        raise DatasetError(f"format {fmt!r} needs an input (--input PATH)")
    report: dict[str, Any] = {}
    items, seqs = READERS[fmt](path, **kwargs, report=report)
    source = {"format": fmt, "input": None if path is None else str(Path(path).resolve()),
              "options": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                          for k, v in kwargs.items()}, **report}
    if "files" in source:
        source["files"] = [str(Path(f).resolve()) for f in source["files"]]
    return items, seqs, source
