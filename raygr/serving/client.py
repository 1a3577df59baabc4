"""A small HTTP client of the service (stdlib only) and example requests from a dataset's test split.

    client = Client("http://127.0.0.1:8000")
    status, body = client.post("/recommend", {"history": ["item0000003"], "k": 5})
    for req, target in example_requests(dataset, max_history=20, n=5): ...
    failed = send_examples(client, dataset, max_history=20, n=5)    # prints each answer

Used by ``raygr serve --smoke``, the Ray tests and the load benchmark. One ``Client`` keeps one
keep-alive connection, so give each concurrent caller (thread) its own.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from raygr.data.dataset import Dataset
from raygr.data.split import eval_examples


class Client:
    def __init__(self, base_url: str, timeout_s: float = 30.0):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        """(status, parsed JSON or raw text). A dropped connection is retried once on a fresh one."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                self._conn.request(method, path, body=body, headers=headers)
                resp = self._conn.getresponse()
                raw = resp.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")

    def post(self, path: str, payload: Any) -> tuple[int, Any]:
        return self.request("POST", path, json.dumps(payload).encode())

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        """Poll ``GET /healthz`` until it answers 200 (the proxy may answer 404/503 while deploying)."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            try:
                status, last = self.get("/healthz")
                if status == 200:
                    return
            except OSError as e:
                last = e
            time.sleep(0.25)
        raise TimeoutError(f"service at {self.host}:{self.port} not healthy after {timeout_s:.0f} s (last: {last})")


def example_requests(dataset: Dataset, max_history: int, n: int, k: int = 10,
                     seed: int = 0) -> list[tuple[dict[str, Any], str]]:
    """``n`` request bodies from the test split (original ids, oldest first) with each user's true next item."""
    import numpy as np

    ex = eval_examples(dataset.sequences, "test", max_history)
    rows = np.random.default_rng(seed).choice(len(ex), size=min(n, len(ex)), replace=False)
    ids = dataset.items.item_id
    out = []
    for r in rows:
        hist = [str(ids[i - 1]) for i in ex.history[r] if i > 0]
        out.append(({"history": hist, "k": k}, str(ids[ex.target[r] - 1])))
    return out


def send_examples(client: Client, dataset: Dataset, max_history: int, n: int,
                  log: Callable[[str], None] = print) -> int:
    """POST ``n`` test-split histories, log one line per answer (top items, latency, the true next item's
    rank); returns how many requests failed."""
    failed = 0
    for i, (body, target) in enumerate(example_requests(dataset, max_history, n)):
        t0 = time.perf_counter()
        status, answer = client.post("/recommend", body)
        ms = (time.perf_counter() - t0) * 1000
        if status != 200:
            failed += 1
            log(f"[{i}] {status}: {answer}")
            continue
        ids = [x["item_id"] for x in answer["items"]]
        hit = f"rank {ids.index(target) + 1}" if target in ids else f"not in the top {len(ids)}"
        top = ", ".join(f"{x['item_id']} ({x['score']:.2f})" for x in answer["items"][:5])
        log(f"[{i}] history of {len(body['history'])} (newest {body['history'][-1]!r}) -> {top}, ... "
            f"[{answer['scored_by']}, {ms:.0f} ms] | true next item {target!r}: {hit}")
    return failed
