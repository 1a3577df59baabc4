"""Serving without Ray: request validation, id mapping, batched inference, popularity fallback.

    catalogue.py  original item ids <-> model indices; popular items for empty histories
    request.py    POST /recommend bodies -> RecommendRequest, or RequestError(status, message)
    engine.py     the model side: load a checkpoint, batched retrieval and ranking, health probes (torch)
    pipeline.py   retrieve-then-rank for one request over two async stages; the response; metadata
    schema.py     the HTTP API's Pydantic models (OpenAPI at /docs); answers are checked against them
    client.py     a stdlib HTTP client and example requests from a test split
    page.py       the HTML page served at GET / (search by title, build a history, see recommendations)

``raygr.distributed.serve`` wraps these in Ray Serve deployments; everything here is unit-tested
without Ray (``tests/test_serving.py``).
"""
