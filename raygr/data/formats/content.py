"""Item content tokens: ``title:<word>``s from titles, whole values (``brand:<value>``, ``genre:<value>``,
...) from other fields, and the ``ItemContent`` of an item from a JSON record."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, NamedTuple

from raygr.data.dataset import DatasetError

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")  # letters/digits; "children's" stays one word
TITLE_COLUMNS = {"title", "movie_title", "name", "item_name", "product_name"}
_PREFIX = {"movie_title": "title", "name": "title", "item_name": "title", "product_name": "title",
           "description": "desc", "class": "genre", "genres": "genre", "categories": "cat",
           "category": "cat", "attributes": "attr"}


class ItemContent(NamedTuple):
    title: str | None  # display text
    tokens: list[str]


def words(text: str | None) -> list[str]:
    """Lowercased words of a text."""
    return _WORD.findall(text.lower()) if text else []


def column_prefix(column: str) -> str:
    """The token prefix of a column: ``movie_title`` -> ``title``, ``class`` -> ``genre``, ..."""
    return _PREFIX.get(column.lower(), column.lower())


def is_word_column(column: str) -> bool:
    """Titles and descriptions are split into words; every other column is used as whole values."""
    return column_prefix(column) in ("title", "desc")


def content_tokens(title: str | None = None, values: Iterable[tuple[str, Any]] = (),
                   texts: Iterable[tuple[str, str | None]] = ()) -> list[str]:
    """Tokens of one item: ``title:<word>``s, ``<prefix>:<value>`` per value (a list gives one per
    element) and ``<prefix>:<word>`` per word of each extra text, without duplicates."""
    out = [f"title:{w}" for w in words(title)]
    for prefix, text in texts:
        out += [f"{prefix}:{w}" for w in words(text)]
    for prefix, value in values:
        for v in value if isinstance(value, list | tuple) else [value]:
            if v is not None and (s := " ".join(str(v).lower().split())):
                out.append(f"{prefix}:{s}")
    return list(dict.fromkeys(out))


def content_from_record(rec: Any, where: str, description: bool = False) -> ItemContent:
    """An item from a JSON record with any of ``title``, ``brand``, ``categories`` (a list, or one
    comma-separated string), ``attributes``, ``genres`` and ``description`` (words, if enabled)."""
    if not isinstance(rec, dict):
        raise DatasetError(f"{where}: expected an object with item fields, got {type(rec).__name__}")
    for key in ("title", "brand", "description"):
        if rec.get(key) is not None and not isinstance(rec[key], str):
            raise DatasetError(f"{where}: field '{key}' must be a string, got {rec[key]!r}")
    values: list[tuple[str, Any]] = []
    for key, prefix in (("brand", "brand"), ("categories", "cat"), ("attributes", "attr"),
                        ("genres", "genre")):
        v = rec.get(key)
        if key == "categories" and isinstance(v, str):
            v = [c for c in v.split(",") if c.strip()]
        if v is not None and not isinstance(v, str | list):
            raise DatasetError(f"{where}: field '{key}' must be a string or a list of strings, got {v!r}")
        values.append((prefix, v))
    texts = [("desc", rec.get("description"))] if description else []
    title = rec.get("title") or None
    return ItemContent(title, content_tokens(title, values, texts))
