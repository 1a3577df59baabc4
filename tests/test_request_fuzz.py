"""Every body a client can send to POST /recommend gets a RequestError with a 4xx status, never anything
else (which the ingress would answer with a 500): a seeded fuzz over malformed bodies, Ray-free and fast.

The bodies go through ``read_limited`` + ``parse_body``, exactly what the ingress runs on each request.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import numpy as np
import pytest

from raygr.config import ServeConfig
from raygr.serving.catalogue import Catalogue
from raygr.serving.request import (
    MAX_DEPTH,
    Limits,
    RecommendRequest,
    RequestError,
    parse_body,
    parse_json,
    parse_request,
    read_limited,
)
from raygr.serving.schema import RecommendBody

IDS = [f"item-{i}" for i in range(50)] + ["7", "12"]
CATALOGUE = Catalogue("toy", IDS, np.arange(len(IDS) + 1))
LIMITS = Limits.from_config(ServeConfig(max_k=20, default_candidates=10), max_history=20)
VALID = {"history": ["item-1", "item-2", 7], "k": 5, "exclude": ["item-3"], "candidates": 10}

# JSON values that are wrong somewhere, or odd everywhere.
ODD = [None, True, False, 0, -1, 1.5, 1e308, -0.0, "", "item-1", "\ud800", "\u0000", "ö" * 3, [], {}, [[]],
       [None], [1.5], [True], ["item-1"] * 30, {"history": []}, 10**30, -(10**30), "x" * 1000]
# Raw JSON fragments that json.dumps cannot produce.
RAW_ODD = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"9" * 5000, b'"\\ud800"', b'"\\x"', b"01", b"1.",
           b".5", b"+1", b"tru", b"nul", b'"unterminated', b"[1,]", b"{,}", b'{"a" 1}', b"\xff\xfe", b"\x00"]


def run(body: bytes, limits: Limits = LIMITS) -> RecommendRequest | RequestError:
    """What the ingress does with ``body`` (sent in 64 KiB chunks): a request, or the error it answers."""
    async def chunks():
        for i in range(0, len(body), 1 << 16):
            yield body[i:i + (1 << 16)]

    async def handle():
        return parse_body(await read_limited(chunks(), str(len(body)), limits), CATALOGUE, limits)

    try:
        return asyncio.run(handle())
    except RequestError as e:
        return e


def generated_bodies(seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    valid = json.dumps(VALID).encode()
    bodies = []
    for _ in range(120):  # a field of a valid body replaced by an odd value, or an odd field added
        body = dict(VALID)
        body[rng.choice([*VALID, "user", ""])] = rng.choice(ODD)
        bodies.append(json.dumps(body).encode())
    for _ in range(80):  # a raw fragment spliced in where a value is
        field = rng.choice(list(VALID))
        bodies.append(valid.replace(json.dumps(VALID[field]).encode(), rng.choice(RAW_ODD), 1))
    for _ in range(100):  # truncated, and randomly flipped/inserted/deleted bytes
        b = bytearray(valid[: rng.randrange(len(valid) + 1)] if rng.random() < 0.4 else valid)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b) + 1)
            op = rng.random()
            if op < 0.4 and i < len(b):
                b[i] = rng.randrange(256)
            elif op < 0.7:
                b[i:i] = bytes([rng.choice(b'[]{}",:\\0e-')])
            elif i < len(b):
                del b[i]
        bodies.append(bytes(b))
    for _ in range(40):  # random bytes, and random JSON-ish punctuation
        n = rng.choice([1, 7, 100, 5000])
        bodies.append(bytes(rng.randrange(256) for _ in range(n)))
        bodies.append(bytes(rng.choice(b'[]{}",:0 ') for _ in range(n)))
    for depth in (MAX_DEPTH + 1, 100, 10_000, 100_000):  # deep nesting, alone, in a field, in objects
        bodies.append(b"[" * depth + b"]" * depth)
        bodies.append(b'{"history": ' + b"[" * depth + b"]" * depth + b"}")
        bodies.append(b'{"a":' * depth + b"1" + b"}" * depth)
        bodies.append(b"[" * depth)  # never closed
    bodies += [
        b"", b" \n\t ", b"null", b"[]", b"{}", b'"history"', b"1", valid * 2, valid[:-1],
        "\ufeff".encode() + valid, json.dumps(VALID).encode("utf-16"), json.dumps(VALID).encode("utf-32"),
        b'{"history": ["' + b"\\" * 10_001 + b'"]}',  # escapes that end inside the string
        b'{"history": ["a' + b'\\"' * 5000 + b'"]}',  # quotes escaped inside a string: no false nesting
        b'{"history": ["' + b"[" * 100_000 + b'"]}',  # brackets inside a string are not nesting
        b"x" * (LIMITS.max_body_bytes + 1),  # over the size limit
        json.dumps({"history": [f"item-{i % 50}" for i in range(200_000)]}).encode(),  # over it, as JSON
        json.dumps({"history": ["item-1"], "exclude": IDS * 10}).encode(),  # too many excluded
    ]
    return bodies


def test_hundreds_of_malformed_bodies_get_a_4xx_and_nothing_else():
    bodies = generated_bodies()
    assert len(bodies) >= 400
    statuses = []
    for body in bodies:
        out = run(body)  # any exception other than RequestError fails the test here
        if isinstance(out, RequestError):
            assert 400 <= out.status < 500 and out.message, (body[:80], out.status)
            statuses.append(out.status)
        else:
            assert isinstance(out, RecommendRequest) and len(out.history) <= LIMITS.max_history
    # The fuzz reaches every refusal, and most bodies are refused (they were built to be wrong).
    assert {400, 413, 422} <= set(statuses) and len(statuses) > 0.8 * len(bodies)


def test_deep_nesting_is_refused_before_parsing_and_brackets_in_strings_are_not_nesting():
    start = time.perf_counter()
    e = run(b"[" * 100_000 + b"]" * 100_000)
    assert e.status == 400 and f"more than {MAX_DEPTH} levels deep" in e.message
    assert time.perf_counter() - start < 1.0
    body = json.dumps({"history": ["[[[[[[[[[[[[{{{{{{{{{{{{"] * 3, "k": 3}).encode()
    assert run(body).status == 422 and "not in the catalogue" in run(body).message  # parsed, then looked up


def test_size_is_refused_from_content_length_before_the_body_is_read():
    read = []

    async def chunks():
        read.append(1)
        yield b"{}"

    async def handle():
        return await read_limited(chunks(), str(LIMITS.max_body_bytes + 1), LIMITS)

    with pytest.raises(RequestError) as e:
        asyncio.run(handle())
    assert e.value.status == 413 and "newest 20 history items" in e.value.message and read == []


def test_a_long_history_within_the_size_limit_is_truncated_cheaply():
    history = [IDS[i % 50] if i % 2 else 7 for i in range(100_000)]  # the review's 100,000-item history
    body = json.dumps({"history": history, "k": 3}).encode()
    assert len(body) < LIMITS.max_body_bytes
    start = time.perf_counter()
    req = run(body)
    assert isinstance(req, RecommendRequest) and req.truncated == 100_000 - 20
    assert req.history == tuple(CATALOGUE.to_indices(map(str, history[-20:]))[0])
    assert time.perf_counter() - start < 1.0  # it took 1.5 s when every id was looked up


# Refusals that depend on this service (its limits, its catalogue), which the request model cannot know.
SERVICE_REFUSALS = ("out of range", "not in the catalogue", "ids; at most", "this model reads")


def test_the_documented_request_model_accepts_exactly_the_bodies_of_the_right_shape():
    """RecommendBody (the OpenAPI schema of POST /recommend) and the hand validation agree on every fuzzed JSON
    body: what the service accepts fits the model; what the model refuses, the service refuses with a 422;
    what only the service refuses is a range, a catalogue or a history-length refusal."""
    from pydantic import ValidationError

    checked = 0
    for body in generated_bodies() + [json.dumps(VALID).encode(), b'{"history": [], "k": null}']:
        try:
            value = parse_json(body)
        except RequestError:
            continue  # not JSON: the model never sees it
        try:
            RecommendBody.model_validate(value)
            fits = True
        except ValidationError:
            fits = False
        try:
            parse_request(value, CATALOGUE, LIMITS)
            refusal = None
        except RequestError as e:
            refusal = e
        checked += 1
        if refusal is None:
            assert fits, body[:120]
        elif not fits:
            assert refusal.status == 422, (body[:120], refusal.message)
        else:
            assert any(w in refusal.message for w in SERVICE_REFUSALS), (body[:120], refusal.message)
    assert checked > 150  # the JSON ones among the fuzzed bodies (172 with seed 0)
