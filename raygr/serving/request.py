"""Validation of ``POST /recommend`` bodies: JSON in, a ``RecommendRequest`` of model indices out.

    limits = Limits.from_config(cfg.serve, max_history=cfg.data.max_history)
    req = parse_request(parse_json(body_bytes), catalogue, limits)    # or RequestError(status, message)

Every refusal is a ``RequestError`` whose message says what is wrong and what is allowed:
400 for a body that is not JSON, 413 for a history over ``data.max_history`` under
``serve.history_policy=reject``, 422 for everything else (wrong types, unknown fields, k or
candidates out of range, item ids the catalogue does not know, listed). Pure Python: no torch, no Ray.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from raygr.config import ServeConfig
from raygr.serving.catalogue import Catalogue

FIELDS = ("history", "k", "exclude", "candidates")
DEFAULT_K = 10
SHOW_UNKNOWN = 20  # unknown ids named in a message; the rest are counted


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


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise RequestError(400, 'request body is empty; send JSON like {"history": ["item-1", "item-2"], "k": 10}')
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, f"request body is not valid JSON ({e}); send JSON like "
                                '{"history": ["item-1", "item-2"], "k": 10}') from None


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
    history_idx, unknown_history = catalogue.to_indices(history)
    exclude_idx, unknown_exclude = catalogue.to_indices(exclude)
    for field, bad in (("history", unknown_history), ("exclude", unknown_exclude)):
        if bad:
            raise RequestError(422, _unknown_message(field, bad, catalogue))
    # Newest last (as in training): truncation keeps the tail.
    return RecommendRequest(history=tuple(history_idx[dropped:]), k=k, candidates=candidates,
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
