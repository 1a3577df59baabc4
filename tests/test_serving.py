"""Serving logic without Ray: request validation (each refusal's status and message), id mapping, the
popularity fallback, batched inference equal to the model's own calls, and retrieve-then-rank equal to
``model.recommend`` offline."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
import torch

from raygr.config import ServeConfig, load_config, replace
from raygr.data.split import eval_examples, training_item_counts
from raygr.metrics import popularity_ranking
from raygr.serving.catalogue import Catalogue
from raygr.serving.engine import (
    ModelHealthError,
    check_ranking,
    check_retrieval,
    load_serving_model,
    pad_histories,
    poison_weights,
    rank_batch,
    retrieve_batch,
    retrieve_encoded,
)
from raygr.serving.pipeline import (
    ServiceInfo,
    load_service,
    model_version,
    recommend,
    recommend_batch,
    retrieval_width,
    serves_ranker,
    top_k,
    without_excluded,
)
from raygr.serving.request import Limits, RecommendRequest, RequestError, parse_json, parse_request
from raygr.serving.schema import RecommendResponse, checked_response
from raygr.training.checkpoint import CheckpointError
from tests.helpers import tiny_dataset
from tests.serving_helpers import tiny_checkpoint

K_MAX, HIST = 20, 5  # small limits so the tests reach them


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny joint checkpoint, its dataset, and what the ingress and a model replica load from them."""
    root = tmp_path_factory.mktemp("serving")
    ds = tiny_dataset(root, num_users=300)
    run = tiny_checkpoint(ds, root / "run", epochs=0)  # initialised, untrained: parity needs no learning
    catalogue, info = load_service(run, ds.root)
    return {"ds": ds, "run": run, "catalogue": catalogue, "info": info,
            "sm": load_serving_model(str(run), str(ds.root))}


@pytest.fixture(scope="module")
def catalogue():
    counts = np.array([0, 5, 9, 9, 1, 0])  # item_idx 1..5; 2 and 3 tie (lower index first)
    return Catalogue("toy", ["a", "b", "c", "7", "e"], counts)


LIMITS = Limits.from_config(ServeConfig(max_k=K_MAX, default_candidates=10), max_history=HIST)


def parse(body, catalogue, limits=LIMITS) -> RecommendRequest:
    return parse_request(body, catalogue, limits)


def refused(body, catalogue, limits=LIMITS) -> RequestError:
    with pytest.raises(RequestError) as e:
        parse_request(body, catalogue, limits)
    return e.value


# -- ids and popularity -----------------------------------------------------------------------------

def test_catalogue_maps_ids_both_ways_and_lists_unknown_ones_once(catalogue):
    idx, unknown = catalogue.to_indices(["c", "zz", "a", "zz", "q"])
    assert idx == [3, 1] and unknown == ["zz", "q"]
    assert catalogue.to_ids([3, 1, 5]) == ["c", "a", "e"]


def test_search_matches_every_word_of_titles_or_ids_most_popular_first():
    cat = Catalogue("toy", ["a", "b", "c", "7", "e"], np.array([0, 5, 9, 9, 1, 0]),
                    ["Red Lip Gloss", "lip balm", None, "Blue gloss", "Red nail polish"])
    assert cat.titles[2] == "c"  # no title: the id is shown
    assert cat.search("LIP") == [("b", "lip balm"), ("a", "Red Lip Gloss")]  # item 2 (9 counts) before 1 (5)
    assert cat.search("red gloss") == [("a", "Red Lip Gloss")]  # every word
    assert cat.search("7") == [("7", "Blue gloss")]  # ids match too
    assert [i for i, _ in cat.search("", limit=2)] == ["b", "c"]  # empty: the most popular
    assert cat.title("e") == "Red nail polish" and cat.title("nope") is None


def test_popularity_fallback_follows_training_counts_and_skips_excluded(catalogue, served):
    assert catalogue.popular(3) == ([2, 3, 1], [9.0, 9.0, 5.0])
    assert catalogue.popular(3, exclude={2}) == ([3, 1, 4], [9.0, 5.0, 1.0])
    ds, cat = served["ds"], served["catalogue"]
    counts = training_item_counts(ds.sequences, ds.num_items)
    assert cat.popular(10)[0] == popularity_ranking(counts, 10).tolist()  # the offline baseline's list


# -- validation: each refusal says what is wrong ----------------------------------------------------

def test_a_valid_request_maps_ids_and_fills_defaults(catalogue):
    req = parse({"history": ["a", 7, "c"]}, catalogue)  # a JSON integer is read as its decimal string
    assert req == RecommendRequest(history=(1, 4, 3), k=10, candidates=10, exclude=frozenset(), truncated=0)
    req = parse({"history": [], "k": 3, "candidates": 4, "exclude": ["e"]}, catalogue)
    assert (req.history, req.k, req.candidates, req.exclude) == ((), 3, 4, frozenset({5}))


@pytest.mark.parametrize("body, status, words", [
    (b"", 400, ["empty"]),
    (b"{history: [1]}", 400, ["not valid JSON"]),
    (b"\xff\xfe", 400, ["not valid JSON"]),
])
def test_bodies_that_are_not_json_get_400(catalogue, body, status, words):
    with pytest.raises(RequestError) as e:
        parse_json(body)
    assert e.value.status == status and all(w in e.value.message for w in words)


@pytest.mark.parametrize("body, words", [
    ([1, 2], ["JSON object", "array"]),
    ({"history": [], "user": 3}, ["unknown field", "'user'", "known fields: history, k"]),
    ({"k": 3}, ["'history' is required"]),
    ({"history": "a,b"}, ["'history' must be a list", "string"]),
    ({"history": ["a", 1.5]}, ["'history'[1] is 1.5", "strings or integers"]),
    ({"history": [True]}, ["'history'[0] is true", "boolean"]),
    ({"history": [None]}, ["'history'[0] is null"]),
    ({"history": ["a"], "k": 0}, ["'k' is 0", f"allowed 1..{K_MAX}", "serve.max_k"]),
    ({"history": ["a"], "k": K_MAX + 1}, [f"'k' is {K_MAX + 1}", f"allowed 1..{K_MAX}"]),
    ({"history": ["a"], "k": "5"}, ["'k' must be an integer", '"5"']),
    ({"history": ["a"], "k": True}, ["'k' must be an integer", "true"]),
    ({"history": ["a"], "k": 2.5}, ["'k' must be an integer", "2.5"]),
    ({"history": ["a"], "candidates": 0}, ["'candidates' is 0", "allowed 1..40"]),
    ({"history": ["a"], "exclude": "a"}, ["'exclude' must be a list"]),
    ({"history": ["a"], "exclude": ["a"] * 201}, ["'exclude' has 201 ids", "at most 200"]),
])
def test_wrong_types_fields_and_ranges_get_422_naming_the_field(catalogue, body, words):
    e = refused(body, catalogue)
    assert e.status == 422, e.message
    assert all(w in e.message for w in words), e.message


def test_unknown_item_ids_are_listed(catalogue):
    e = refused({"history": ["a", "nope", 99, "nope"]}, catalogue)
    assert e.status == 422
    assert "'history' has 2 item id(s) not in the catalogue of dataset 'toy' (5 items): 'nope', '99'" in e.message
    e = refused({"history": ["a"], "exclude": [f"x{i}" for i in range(25)]}, catalogue)
    assert "'exclude' has 25 item id(s)" in e.message and "'x19'" in e.message and "and 5 more" in e.message
    assert "'x20'" not in e.message


def test_oversized_history_is_truncated_to_the_newest_or_rejected_by_policy(catalogue):
    long = ["a", "b", "c", "7", "e", "a", "b"]  # 7 > HIST = 5
    req = parse({"history": long}, catalogue)
    assert req.history == (3, 4, 5, 1, 2) and req.truncated == 2  # the newest five, oldest first
    strict = Limits.from_config(ServeConfig(max_k=K_MAX, history_policy="reject"), max_history=HIST)
    e = refused({"history": long}, catalogue, strict)
    assert e.status == 413
    assert all(w in e.message for w in ["7 items", "data.max_history", "newest 5", "serve.history_policy=reject"])
    assert parse({"history": long[:HIST]}, catalogue, strict).truncated == 0  # at the limit is fine


# -- the pipeline over fake stages (pure logic) -----------------------------------------------------

def run(coro):
    return asyncio.run(coro)


INFO = ServiceInfo(preset="joint", dataset="toy", num_items=5, levels=3, max_history=HIST, checkpoint="ckpt",
                   checkpoint_epoch=1, ranker=True)


def fake_stages(retrieved: list[int], rank_scores: dict[int, float]):
    calls = []

    async def retrieve(history, width):
        calls.append(("retrieve", list(history), width))
        return retrieved[:width], [-float(j) for j in range(len(retrieved[:width]))]

    async def rank(history, candidates):
        calls.append(("rank", list(history), list(candidates)))
        return [rank_scores[c] for c in candidates]

    return retrieve, rank, calls


def test_pipeline_retrieves_excludes_ranks_and_maps_back(catalogue):
    retrieve, rank, calls = fake_stages([5, 2, 3, 1, 4], {1: 0.1, 2: 0.9, 3: 0.5, 4: 0.7, 5: 0.3})
    req = RecommendRequest(history=(1, 2), k=2, candidates=3, exclude=frozenset({2}))
    out = run(recommend(req, catalogue, INFO, retrieve, rank))
    assert calls[0] == ("retrieve", [1, 2], 4)  # 3 candidates + 1 excluded
    assert calls[1] == ("rank", [1, 2], [5, 3, 1])  # the excluded item never reaches the ranker
    assert [x["item_id"] for x in out["items"]] == ["c", "e"] and [x["score"] for x in out["items"]] == [0.5, 0.3]
    assert (out["fallback"], out["scored_by"], out["num_candidates"], out["truncated"]) == (False, "ranker", 3, False)
    assert out["model"] == "joint" and out["dataset"] == "toy"


def test_without_a_ranker_the_retrieval_order_is_the_answer(catalogue):
    retrieve, _, calls = fake_stages([4, 3, 1], {})
    out = run(recommend(RecommendRequest((1,), k=2, candidates=1, exclude=frozenset()), catalogue, INFO,
                        retrieve, None))
    assert calls == [("retrieve", [1], 2)]  # max(candidates, k)
    assert [x["item_id"] for x in out["items"]] == ["7", "c"] and out["scored_by"] == "retriever"


def test_empty_history_gets_popular_items_without_calling_the_model(catalogue):
    retrieve, rank, calls = fake_stages([1], {})
    out = run(recommend(RecommendRequest((), k=2, candidates=10, exclude=frozenset({2})), catalogue, INFO,
                        retrieve, rank))
    assert calls == [] and out["fallback"] is True and out["scored_by"] == "popularity"
    assert out["items"] == [{"item_id": "c", "score": 9.0}, {"item_id": "a", "score": 5.0}]


def test_a_batch_makes_one_call_per_stage_and_each_answer_equals_the_request_alone(catalogue):
    """What the ingress does with a batch: one Retriever call, one Ranker call, answers unchanged."""
    retrieve, rank, _ = fake_stages([5, 2, 3, 1, 4], {1: 0.1, 2: 0.9, 3: 0.5, 4: 0.7, 5: 0.3})
    reqs = [RecommendRequest((1, 2), k=2, candidates=3, exclude=frozenset({2})),
            RecommendRequest((), k=2, candidates=10, exclude=frozenset()),  # popularity fallback
            RecommendRequest((3,), k=1, candidates=2, exclude=frozenset({5, 2})),
            RecommendRequest((4, 1, 2, 3, 5), k=3, candidates=4, exclude=frozenset(), truncated=2)]
    batch_calls = []

    async def retrieve_many(histories, widths):
        batch_calls.append(("retrieve_many", histories, widths))
        # The "encoded states": one row per history (here its first item), handed on to the ranker.
        return [await retrieve(h, w) for h, w in zip(histories, widths)], np.array([h[0] for h in histories])

    async def rank_many(histories, candidates, states):
        batch_calls.append(("rank_many", histories, candidates, states))
        return [await rank(h, c) for h, c in zip(histories, candidates)]

    answers = run(recommend_batch(reqs, catalogue, INFO, retrieve_many, rank_many))
    assert all(checked_response(a) == a or "notice" in a for a in answers)  # the documented response model
    assert [c[0] for c in batch_calls] == ["retrieve_many", "rank_many"]
    assert batch_calls[0][1] == [[1, 2], [3], [4, 1, 2, 3, 5]]  # the empty history never reaches a model
    # The ranker gets the retriever's state of each history it ranks, row for row (none encoded twice).
    assert [h[0] for h in batch_calls[1][1]] == batch_calls[1][3].tolist()
    assert answers == [run(recommend(r, catalogue, INFO, retrieve, rank)) for r in reqs]
    assert answers[1]["fallback"] and answers[3]["truncated"] and len(answers[3]["items"]) == 3
    no_rank = run(recommend_batch(reqs, catalogue, INFO, retrieve_many, None))
    assert no_rank == [run(recommend(r, catalogue, INFO, retrieve, None)) for r in reqs]


def test_truncation_is_reported_in_the_answer(catalogue):
    retrieve, rank, _ = fake_stages([1, 2], {1: 1.0, 2: 2.0})
    out = run(recommend(RecommendRequest((1, 2, 3, 4, 5), k=1, candidates=2, exclude=frozenset(), truncated=3),
                        catalogue, INFO, retrieve, rank))
    assert out["truncated"] is True and "history had 8 items; only the newest 5 were used" in out["notice"]


def test_helpers_cap_the_width_and_keep_order():
    req = RecommendRequest((1,), k=30, candidates=10, exclude=frozenset({1, 2}))
    assert retrieval_width(req, num_items=100) == 32 and retrieval_width(req, num_items=20) == 20
    assert without_excluded([3, 1, 4, 2, 5], [5, 4, 3, 2, 1], frozenset({1, 2}), 2) == ([3, 4], [5, 3])
    assert top_k([7, 8, 9], [0.5, 0.9, 0.5], 3) == ([8, 7, 9], [0.9, 0.5, 0.5])  # ties: retrieval order


def test_serves_ranker_per_preset():
    assert serves_ranker(load_config(None))
    assert not serves_ranker(load_config(None, ["model.preset=tiger"]))
    assert not serves_ranker(load_config(None, ["model.preset=sasrec"]))


# -- the model side: a real tiny checkpoint ---------------------------------------------------------

def test_pad_histories_left_pads_newest_last():
    assert pad_histories([[1, 2, 3], [], [4]], 2).tolist() == [[2, 3], [0, 0], [0, 4]]


def test_batched_inference_equals_the_models_own_calls(served):
    sm, ds = served["sm"], served["ds"]
    ex = eval_examples(ds.sequences, "test", sm.max_history)
    hist = [[int(i) for i in row if i > 0] for row in ex.history[:12]]
    widths = [20, 20, 7, 20, 7, 33, 20, 7, 20, 20, 7, 20]  # mixed widths run as separate sub-batches
    got = retrieve_batch(sm, hist, widths)
    for h, w, (items, scores) in zip(hist, widths, got):
        ref_items, ref_scores = sm.model.retrieve(pad_histories([h], sm.max_history), k=w)
        keep = ref_items[0] > 0
        assert items == ref_items[0][keep].tolist()
        assert np.allclose(scores, ref_scores[0][keep].tolist(), atol=1e-5)
    cands = [items[:5] for items, _ in got]
    scores = rank_batch(sm, hist, cands)
    ref = sm.model.rank(pad_histories(hist, sm.max_history), torch.tensor(cands))
    assert np.allclose(scores, ref.tolist(), atol=1e-5)


def test_the_ranker_scores_from_the_retrievers_encoding_as_from_the_history(served):
    """One encoding per request: retrieve_encoded's states give rank_batch the scores it computes by
    encoding the histories itself, and the retrieval of retrieve_batch."""
    sm, ds = served["sm"], served["ds"]
    ex = eval_examples(ds.sequences, "test", sm.max_history)
    hist = [[int(i) for i in row if i > 0] for row in ex.history[:10]]
    widths = [20, 7, 20, 33, 20, 7, 20, 20, 7, 20]
    got, states = retrieve_encoded(sm, hist, widths)
    assert states.shape == (len(hist), sm.model.history_states(pad_histories(hist[:1], sm.max_history)).shape[-1])
    ref = retrieve_batch(sm, hist, widths)
    assert [items for items, _ in got] == [items for items, _ in ref]
    for (_, scores), (_, ref_scores) in zip(got, ref):
        assert np.allclose(scores, ref_scores, atol=1e-5)
    cands = [items[:7] for items, _ in got]
    assert np.allclose(rank_batch(sm, hist, cands, states=states), rank_batch(sm, hist, cands), atol=1e-5)
    # The ranker reads the states, not the histories: other histories with these states score the same.
    assert np.allclose(rank_batch(sm, [[1]] * len(hist), cands, states=states), rank_batch(sm, hist, cands),
                       atol=1e-5)


def local_stages(sm):
    """The Retriever and Ranker stages as per-request coroutines over the local model."""
    async def retrieve(history, width):
        return retrieve_batch(sm, [history], [width])[0]

    async def rank(history, candidates):
        return rank_batch(sm, [history], [candidates])[0]

    return retrieve, rank


def test_retrieve_then_rank_equals_model_recommend_offline(served):
    """The serving pipeline over local stages gives what ``model.recommend`` gives, mapped to original ids."""
    sm, ds, cat, info = served["sm"], served["ds"], served["catalogue"], served["info"]
    limits = Limits.from_config(ServeConfig(), info.max_history)
    ex = eval_examples(ds.sequences, "test", sm.max_history)
    retrieve, rank = local_stages(sm)

    ids = ds.items.item_id
    for row in ex.history[:8]:
        body = {"history": [ids[i - 1] for i in row if i > 0], "k": 10, "candidates": 20}
        out = run(recommend(parse_request(body, cat, limits), cat, info, retrieve, rank))
        ref_items, ref_scores = sm.model.recommend(torch.from_numpy(row[None]), k=10, num_candidates=20)
        assert [x["item_id"] for x in out["items"]] == [ids[i - 1] for i in ref_items[0].tolist()]
        assert np.allclose([x["score"] for x in out["items"]], ref_scores[0].tolist(), atol=1e-5)


def test_prefix_retrieval_serves_what_offline_evaluation_ranks(served):
    """train.prefix_levels in the served config: every item under the best prefixes reaches the ranker
    (the request's candidates unused), excluded ones dropped first, as ``model.recommend`` offline."""
    sm0, ds, cat = served["sm"], served["ds"], served["catalogue"]
    cfg = replace(sm0.cfg, ["train.prefix_levels=1", "train.num_prefixes=10"])
    sm = dataclasses.replace(sm0, cfg=cfg)
    info = dataclasses.replace(served["info"], prefix_levels=1)
    limits = Limits.from_config(ServeConfig(), info.max_history)
    ex = eval_examples(ds.sequences, "test", sm.max_history)
    retrieve, rank = local_stages(sm)

    ids = ds.items.item_id
    for row in ex.history[:6]:
        hist = torch.from_numpy(row[None])
        cands, _ = sm.model.retrieve_prefixes(hist, 1, 10)
        assert int((cands > 0).sum()) > 10  # more than the request's candidates below: none is cut off
        body = {"history": [ids[i - 1] for i in row if i > 0], "k": 10, "candidates": 10}
        out = run(recommend(parse_request(body, cat, limits), cat, info, retrieve, rank))
        ref_items, _ = sm.model.recommend(hist, k=10, num_candidates=10, prefix_levels=1, num_prefixes=10)
        assert [x["item_id"] for x in out["items"]] == [ids[i - 1] for i in ref_items[0].tolist()]
        assert out["num_candidates"] == int((cands > 0).sum())
        # An excluded item never comes back; the rest of the prefixes' items are still ranked.
        body["exclude"] = [ids[int(ref_items[0, 0]) - 1]]
        again = run(recommend(parse_request(body, cat, limits), cat, info, retrieve, rank))
        assert [x["item_id"] for x in again["items"]] == [x["item_id"] for x in out["items"]][1:] + \
            [again["items"][-1]["item_id"]]


def test_the_candidate_budget_binds_in_serving_as_offline(served):
    sm0, ds, cat = served["sm"], served["ds"], served["catalogue"]
    cfg = replace(sm0.cfg, ["train.prefix_levels=1", "train.num_prefixes=16", "train.max_candidates=20"])
    sm = dataclasses.replace(sm0, cfg=cfg)
    info = dataclasses.replace(served["info"], prefix_levels=1)
    limits = Limits.from_config(ServeConfig(), info.max_history)
    retrieve, rank = local_stages(sm)
    ids, bound = ds.items.item_id, 0
    for row in eval_examples(ds.sequences, "test", sm.max_history).history[:6]:
        hist = torch.from_numpy(row[None])
        bound += int((sm.model.retrieve_prefixes(hist, 1, 16)[0] > 0).sum()) > 20
        out = run(recommend(parse_request({"history": [ids[i - 1] for i in row if i > 0], "k": 10}, cat, limits),
                            cat, info, retrieve, rank))
        ref, _ = sm.model.recommend(hist, k=10, num_candidates=10, prefix_levels=1, num_prefixes=16, max_candidates=20)
        assert [x["item_id"] for x in out["items"]] == [ids[i - 1] for i in ref[0].tolist()]
        assert out["num_candidates"] <= 20
    assert bound  # some history had more items under its prefixes than the budget


def test_a_checkpoint_refuses_another_dataset(served, tmp_path):
    other = tiny_dataset(tmp_path, num_users=50, seed=3)
    with pytest.raises(CheckpointError, match="was trained on dataset"):
        load_service(served["run"], other.root)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_service(tmp_path / "missing", other.root)


def test_metadata_names_model_dataset_catalogue_and_checkpoint(served):
    meta = served["info"].metadata(LIMITS)
    assert meta["model"] == "joint" and meta["dataset"] == "tiny" and meta["catalogue_size"] == 80
    assert meta["levels"] == 3 and meta["max_history"] == 20 and meta["checkpoint_epoch"] == 0
    assert meta["mode"] == "retrieve_then_rank" and meta["limits"]["max_k"] == K_MAX


# -- model version and health probes ----------------------------------------------------------------

def test_the_model_version_is_the_weights_fingerprint(served, tmp_path):
    import hashlib

    run, info = served["run"], served["info"]
    weights = run / "checkpoints" / "best" / "model.pt"
    assert info.model_version == hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    assert served["sm"].version == info.model_version == info.metadata(LIMITS)["model_version"]
    other = tiny_checkpoint(served["ds"], tmp_path / "other", epochs=1)  # other weights, other version
    assert model_version(other) != info.model_version


def test_health_probes_pass_on_a_model_and_fail_on_nan_weights(served):
    check_retrieval(served["sm"])
    check_ranking(served["sm"])
    broken = load_serving_model(str(served["run"]), str(served["ds"].root))  # a copy: the fixture's stays intact
    poison_weights(broken)
    for probe in (check_retrieval, check_ranking):
        with pytest.raises(ModelHealthError, match="probe of checkpoint"):
            probe(broken)


def test_the_response_model_refuses_garbage_answers():
    answer = {"items": [{"item_id": "a", "score": 0.5}], "model": "joint", "model_version": "0" * 16,
              "dataset": "toy", "fallback": False, "scored_by": "ranker", "num_candidates": 3, "truncated": False}
    assert checked_response(answer) == answer
    for bad in ({"items": [{"item_id": "a", "score": float("nan")}]}, {"scored_by": "magic"}, {"extra": 1}):
        with pytest.raises(ValueError):
            RecommendResponse.model_validate({**answer, **bad})
