"""The HTTP API's typed models (Pydantic): what ``/docs`` and ``/openapi.json`` show, and what every answer is
checked against before it leaves the ingress.

    RecommendBody.model_validate({"history": ["a", 7], "k": 5})   # the request's shape (types, no limits)
    checked_response(answer)     # RecommendResponse(**answer), dumped back: a wrong answer fails here, not in a client

``POST /recommend`` bodies are still read and refused by ``raygr.serving.request`` (size before reading,
nesting before parsing, then these field rules with messages that name the limit of this service): FastAPI's
own body parsing would read a body of any size whole and answer with its generic error list. The route
declares ``RecommendBody`` as its documented request body instead, and a test checks that the model accepts
exactly the bodies of the right shape that ``parse_request`` accepts. No Ray and no torch here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

ItemId = StrictStr | StrictInt  # an original item id; a JSON integer is read as its decimal string


class RecommendBody(BaseModel):
    """``POST /recommend``. Ranges depend on the service (``GET /metadata`` lists its limits)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"history": ["sku-033", "sku-071", "sku-003"], "k": 5}]})

    history: list[ItemId] = Field(description="the user's items, oldest first; may be empty (popular items)")
    # Optional, but never null: the default (unvalidated None) stands only for a missing field.
    k: StrictInt = Field(None, description="how many items to return, 1..serve.max_k (default min(10, serve.max_k))")
    candidates: StrictInt = Field(None, description="items retrieved and ranked, 1..limits.max_candidates "
                                                    "(default serve.default_candidates)")
    exclude: list[ItemId] = Field(default_factory=list, description="items never to return")


class ScoredItem(BaseModel):
    item_id: str
    score: float = Field(allow_inf_nan=False)


class RecommendResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ScoredItem] = Field(description="up to k items, best first")
    model: str = Field(description="the checkpoint's preset")
    model_version: str = Field(description="the weights that scored this answer: the first 16 hex digits of "
                                           "sha256(model.pt)")
    retriever_version: str | None = Field(None, description="only while a new checkpoint rolls out, when the "
                                                            "retriever ran another version than model_version")
    dataset: str
    fallback: bool = Field(description="true for an empty history: popular items, scored by training counts")
    scored_by: Literal["ranker", "retriever", "popularity"]
    num_candidates: int = Field(ge=0)
    truncated: bool
    notice: str | None = Field(None, description="only when truncated: what was dropped and why")


class ErrorBody(BaseModel):
    error: str = Field(description="what is wrong and what is allowed")


class Health(BaseModel):
    status: Literal["ok"]


class StageStatus(BaseModel):
    ok: bool
    model_version: str | None = None
    checkpoint: str | None = None
    update_error: str | None = Field(None, description="why the last checkpoint update was refused")
    error: str | None = Field(None, description="why the stage did not pass its probe")


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    stages: dict[str, StageStatus]


class Limits(BaseModel):
    max_k: int
    default_candidates: int
    max_candidates: int
    max_exclude: int
    history_policy: Literal["truncate", "reject"]


class Metadata(BaseModel):
    model: str
    dataset: str
    catalogue_size: int
    levels: int | None
    max_history: int
    checkpoint: str
    checkpoint_epoch: int
    model_version: str
    mode: Literal["retrieve_then_rank", "retrieval_only"]
    prefix_levels: int
    limits: Limits
    update_error: str | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "empty body, not JSON, or nested more than 8 levels"},
    413: {"model": ErrorBody, "description": "body too large, or history too long under history_policy=reject"},
    422: {"model": ErrorBody, "description": "wrong field, type or range; unknown item ids (listed)"},
    503: {"model": ErrorBody, "description": "no model replica could answer; retry shortly"},
}
# The documented body of POST /recommend (the route reads the raw body itself: see the module docstring).
RECOMMEND_BODY_DOC: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": RecommendBody.model_json_schema()}}}}


def checked_response(answer: dict[str, Any]) -> dict[str, Any]:
    """``answer`` validated as a ``RecommendResponse`` (optional fields left out when unset)."""
    return RecommendResponse.model_validate(answer).model_dump(exclude_none=True)
