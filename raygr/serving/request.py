"""Validation of ``POST /recommend`` bodies: JSON in, a ``RecommendRequest`` of model indices out.

    limits = Limits.from_config(cfg.serve, max_history=cfg.data.max_history)
    req = parse_body(body_bytes, catalogue, limits)    # or RequestError(status, message)

Every refusal is a ``RequestError`` whose message says what is wrong and what is allowed:
400 for a body that is not JSON (or nests deeper than any request can), 413 for a body over
``Limits.max_body_bytes`` or a history over ``data.max_history`` under ``serve.history_policy=reject``,
422 for everything else (wrong types, unknown fields, k or candidates out of range, item ids the
catalogue does not know, listed). Any body at all gets one of these, never an exception of another
kind: size and nesting are bounded before the JSON parser runs (a 100,000-level ``[[[...]]]`` once
made the parser raise RecursionError, a 500). Pure Python: no torch, no Ray.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

from raygr.config import ServeConfig
from raygr.serving.catalogue import Catalogue

FIELDS = ("history", "k", "exclude", "candidates")
DEFAULT_K = 10
SHOW_UNKNOWN = 20  # unknown ids named in a message; the rest are counted
# A request is an object holding arrays of ids: depth 2. A little slack for clients that wrap values,
# far below the parser's recursion limit.
MAX_DEPTH = 8
# Body size: room for every id list at its limit with ids up to this many bytes (quotes, escapes and
# commas included), and never less than MIN_BODY_BYTES, so that a history somewhat over data.max_history
# still reaches the truncation it is promised under history_policy=truncate.
BYTES_PER_ID = 256
MIN_BODY_BYTES = 1 << 20
EXAMPLE = '{"history": ["item-1", "item-2"], "k": 10}'
# A JSON string, escapes included; possessive, so a long unterminated string costs one linear scan.
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"')
_BRACKETS = re.compile(rb"[\[\]{}]")


class RequestError(ValueError):
    """A request the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What a request may ask for (from ``ServeConfig`` and the checkpoint's ``data.max_history``)."""

    max_k: int
    max_history: int
    default_candidates: int
    max_candidates: int  # beam width bound: the retriever's cost grows with it
    max_exclude: int
    history_policy: str  # "truncate" | "reject"

    @property
    def max_body_bytes(self) -> int:
        return max(MIN_BODY_BYTES, BYTES_PER_ID * (self.max_history + self.max_exclude) + 4096)

    @classmethod
    def from_config(cls, serve: ServeConfig, max_history: int) -> Limits:
        return cls(max_k=serve.max_k, max_history=max_history, default_candidates=serve.default_candidates,
                   max_candidates=2 * max(serve.max_k, serve.default_candidates),
                   max_exclude=10 * max(serve.max_k, max_history), history_policy=serve.history_policy)


@dataclass(frozen=True)
class RecommendRequest:
    history: tuple[int, ...]  # item_idx (1..N), oldest first, at most Limits.max_history
    k: int
    candidates: int  # items retrieved before ranking (the client's value, or the default)
    exclude: frozenset[int]  # item_idx never to recommend
    truncated: int = 0  # history items dropped (the oldest) under history_policy=truncate


def parse_body(body: bytes, catalogue: Catalogue, limits: Limits) -> RecommendRequest:
    """The whole check of a ``POST /recommend`` body: size, nesting, JSON, fields. Raises only RequestError."""
    check_size(len(body), limits)
    check_depth(body)
    return parse_request(parse_json(body), catalogue, limits)


async def read_limited(chunks: AsyncIterable[bytes], content_length: str | None, limits: Limits) -> bytes:
    """A request body, refused (413) from its Content-Length before reading it, or as soon as it grows over
    the limit while streaming in: an oversized body is never held in memory whole."""
    if content_length is not None and content_length.strip().isdigit():
        check_size(int(content_length), limits)
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        check_size(size, limits)
        parts.append(chunk)
    return b"".join(parts)


def check_size(num_bytes: int, limits: Limits) -> None:
    if num_bytes > limits.max_body_bytes:
        raise RequestError(413, f"request body has {num_bytes:,} bytes, more than the {limits.max_body_bytes:,} "
                                f"allowed; send at most the newest {limits.max_history} history items "
                                "(data.max_history): older ones are not read")


def check_depth(body: bytes) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH before parsing it (linear time; strings do not count)."""
    depth = 0
    for m in _BRACKETS.finditer(_JSON_STRING.sub(b'""', body)):
        depth += 1 if m.group() in (b"[", b"{") else -1
        if depth > MAX_DEPTH:
            raise RequestError(400, f"request body nests arrays/objects more than {MAX_DEPTH} levels deep; a "
                                    f"request is one object of id lists, like {EXAMPLE}")


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise RequestError(400, f"request body is empty; send JSON like {EXAMPLE}")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"request body is not valid JSON ({e}); send JSON like {EXAMPLE}") from None
    except RecursionError:  # check_depth normally refuses these first
        raise RequestError(400, f"request body nests too deeply; send JSON like {EXAMPLE}") from None
    except ValueError as e:  # e.g. an integer over Python's 4300-digit conversion limit
        raise RequestError(400, f"request body holds a value JSON parsing refused ({e}); send JSON like "
                                f"{EXAMPLE}") from None


def parse_request(body: Any, catalogue: Catalogue, limits: Limits) -> RecommendRequest:
    if not isinstance(body, dict):
        raise RequestError(422, f"request body must be a JSON object with the fields {', '.join(FIELDS)}; "
                                f"got a JSON {_json_type(body)}")
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise RequestError(422, f"unknown field(s) {', '.join(map(repr, unknown))}; known fields: {', '.join(FIELDS)}")
    if "history" not in body:
        raise RequestError(422, "field 'history' is required: a list of item ids, oldest first (may be empty)")
    history = _id_list(body["history"], "history")
    k = _int_in(body.get("k", min(DEFAULT_K, limits.max_k)), "k", 1, limits.max_k,
                "serve.max_k")
    candidates = _int_in(body.get("candidates", limits.default_candidates), "candidates", 1,
                         limits.max_candidates, "2 x max(serve.max_k, serve.default_candidates)")
    exclude = _id_list(body.get("exclude", []), "exclude")
    if len(exclude) > limits.max_exclude:
        raise RequestError(422, f"'exclude' has {len(exclude)} ids; at most {limits.max_exclude} are allowed")

    dropped = 0
    if len(history) > limits.max_history:
        if limits.history_policy == "reject":
            raise RequestError(413, f"'history' has {len(history)} items, more than the {limits.max_history} this "
                                    f"model reads (data.max_history); send only the newest {limits.max_history} "
                                    "(this service runs with serve.history_policy=reject)")
        dropped = len(history) - limits.max_history
    # Only the kept tail is looked up: a long history costs its length in type checks, not in lookups.
    history_idx, unknown_history = catalogue.to_indices(history[dropped:])
    exclude_idx, unknown_exclude = catalogue.to_indices(exclude)
    for field, bad in (("history", unknown_history), ("exclude", unknown_exclude)):
        if bad:
            raise RequestError(422, _unknown_message(field, bad, catalogue))
    # Newest last (as in training): truncation keeps the tail.
    return RecommendRequest(history=tuple(history_idx), k=k, candidates=candidates,
                            exclude=frozenset(exclude_idx), truncated=dropped)


def _json_type(x: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(x), type(x).__name__)


def _id_list(value: Any, field: str) -> list[str]:
    """A JSON array of item ids (strings; integers read as their decimal string)."""
    if not isinstance(value, list):
        raise RequestError(422, f"'{field}' must be a list of item ids (strings or integers), "
                                f"got a JSON {_json_type(value)}")
    out = []
    for i, x in enumerate(value):
        # bool is an int subclass in Python, but `true` is never an item id.
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, int) and not isinstance(x, bool):
            out.append(str(x))
        else:
            raise RequestError(422, f"'{field}'[{i}] is {json.dumps(x)} (a JSON {_json_type(x)}); "
                                    "item ids must be strings or integers")
    return out


def _int_in(value: Any, field: str, lo: int, hi: int, bound: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(422, f"'{field}' must be an integer in {lo}..{hi}, got {json.dumps(value)} "
                                f"(a JSON {_json_type(value)})")
    if not lo <= value <= hi:
        raise RequestError(422, f"'{field}' is {value}, out of range: allowed {lo}..{hi} ({hi} = {bound})")
    return value


def _unknown_message(field: str, bad: list[str], catalogue: Catalogue) -> str:
    shown = ", ".join(repr(x) for x in bad[:SHOW_UNKNOWN])
    more = f" and {len(bad) - SHOW_UNKNOWN} more" if len(bad) > SHOW_UNKNOWN else ""
    return (f"'{field}' has {len(bad)} item id(s) not in the catalogue of dataset '{catalogue.name}' "
            f"({len(catalogue):,} items): {shown}{more}")
