"""SIDs from a file (model.sid_file) and the trie-normalised generator softmax (model.trie_softmax)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from raygr.config import ConfigError
from raygr.data.dataset import DatasetError
from raygr.data.sid_file import load_sids
from raygr.data.windows import iterate_windows, make_train_windows_csr
from raygr.models.batch import TrainBatch
from raygr.training.factory import build_model
from raygr.training.loop import TrainContext, initialise, train_step
from tests.helpers import quiet, tiny_config, tiny_dataset


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("fixed"), num_users=300, num_items=60)


def sid_codes(n: int, levels: int = 3, codes: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, codes, (n, levels))


def write_json(path, item_ids, codes, token=False):
    fmt = (lambda lv, c: f"<{'abcd'[lv]}_{c}>") if token else (lambda lv, c: int(c))
    path.write_text(json.dumps({k: [fmt(lv, c) for lv, c in enumerate(row)] for k, row in zip(item_ids, codes)}))
    return path


def test_load_json_ints_tokens_and_parquet(tmp_path, ds):
    ids = ds.items.item_id
    codes = sid_codes(len(ids))
    assert (load_sids(write_json(tmp_path / "a.json", ids, codes), ids) == codes).all()
    assert (load_sids(write_json(tmp_path / "b.json", ids, codes, token=True), ids) == codes).all()
    pq.write_table(pa.table({"item_id": ids[::-1], "sid": codes[::-1].tolist()}), tmp_path / "c.parquet")
    assert (load_sids(tmp_path / "c.parquet", ids) == codes).all()  # keyed, not positional


@pytest.mark.parametrize("damage, message", [
    ("unknown", "not in the dataset"), ("missing", "have no SID"), ("ragged", "every SID needs the same"),
    ("badtoken", "holds no code number"), ("notobject", "must be a JSON object"), ("nofile", "does not exist")])
def test_bad_sid_files_are_named(tmp_path, ds, damage, message):
    ids = ds.items.item_id
    raw = {k: [int(c) for c in row] for k, row in zip(ids, sid_codes(len(ids)))}
    if damage == "unknown":
        raw["no-such-item"] = [1, 2, 3]
    elif damage == "missing":
        raw.pop(ids[5])
    elif damage == "ragged":
        raw[ids[7]] = [1, 2]
    elif damage == "badtoken":
        raw[ids[3]] = [1, "<a_>", 2]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(list(raw.values()) if damage == "notobject" else raw))
    with pytest.raises(DatasetError, match=message) as e:
        load_sids(tmp_path / "absent.json" if damage == "nofile" else path, ids)
    assert "json" in str(e.value)


def test_levels_and_codes_are_checked_against_the_config(tmp_path, ds):
    path = write_json(tmp_path / "s.json", ds.items.item_id, sid_codes(ds.num_items, levels=4, codes=40))
    with pytest.raises(ConfigError, match="model.levels=4"):
        build_model(tiny_config("model.sid_source=file", f"model.sid_file={path}", "model.preset=tiger"), ds)
    with pytest.raises(ConfigError, match="model.codes"):
        build_model(tiny_config("model.sid_source=file", f"model.sid_file={path}", "model.preset=tiger",
                                "model.levels=4"), ds)


def test_fixed_sids_stay_fixed_and_the_generator_learns(tmp_path, ds):
    codes = sid_codes(ds.num_items, codes=8)
    path = write_json(tmp_path / "s.json", ds.items.item_id, codes)
    cfg = tiny_config("model.sid_source=file", f"model.sid_file={path}", "model.preset=tiger", "model.codes=8",
                      "model.trie_softmax=true",
                      "model.history_item_id=true", "model.generator_layers=1", "train.lr=0.005")
    model = build_model(cfg, ds)
    initialise(model, cfg, log=quiet)
    assert (model.table.codes[1:].numpy() == codes).all()
    before = model.quantizer.codebooks.detach().clone()
    w = make_train_windows_csr(ds.sequences.offsets, ds.sequences.items, cfg.data.max_history)
    ctx = TrainContext.create(model, cfg, 20)
    losses = [train_step(ctx, TrainBatch.from_mapping(b), step)["generator"]
              for step, b in enumerate(b for e in range(4) for b in iterate_windows(w, 64, 0, e))]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2  # it learned
    model.refresh()
    assert (model.table.codes[1:].numpy() == codes).all()  # no step moved an item's SID
    assert not torch.equal(before, model.quantizer.codebooks)  # the code embeddings are trained
    state = model.state_dict()
    assert torch.equal(state["fixed_codes"][1:], torch.from_numpy(codes))  # the checkpoint carries them


def test_trie_masks_match_brute_force_and_lower_the_loss(tmp_path, ds):
    codes = sid_codes(ds.num_items, codes=4, seed=3)
    path = write_json(tmp_path / "s.json", ds.items.item_id, codes)
    cfg = tiny_config("model.sid_source=file", f"model.sid_file={path}", "model.preset=tiger", "model.codes=4")
    model = build_model(cfg, ds)
    initialise(model, cfg, log=quiet)
    target = torch.from_numpy(codes[:10])
    masks = model.valid_code_masks(target)
    table = model.table.codes[1:]
    for level in range(3):
        for p in range(10):
            under = (table[:, :level] == target[p, :level]).all(1)
            expected = torch.zeros(4, dtype=torch.bool)
            expected[table[under, level]] = True
            assert torch.equal(masks[level][p], expected)
    # The suffix level allows exactly the suffixes of the items holding the target's full SID.
    full = (table == target[0]).all(1).sum()
    assert int(masks[3][0].sum()) == int(full)
    # For any logits, the masked cross-entropy is at most the unmasked one (the target is always allowed).
    logits = torch.randn(10, 4)
    y = target[:, 1]
    masked = F.cross_entropy(logits.masked_fill(~masks[1], -1e9), y, reduction="none")
    assert (masked <= F.cross_entropy(logits, y, reduction="none") + 1e-6).all()


def test_content_sids_are_one_to_one_deterministic_and_semantic():
    from raygr.models.content_sids import content_sids
    g = np.random.default_rng(0)
    centres = g.normal(size=(6, 16)) * 5
    which = g.integers(0, 6, 300)
    x = centres[which] + 0.1 * g.normal(size=(300, 16))
    x[10:16] = x[10]  # six items with one identical vector: only the assignment can tell them apart
    a = content_sids(x, levels=3, codes=16, seed=1)
    assert len(np.unique(a, axis=0)) == 300  # no collision, so no suffix is needed
    assert (a == content_sids(x, levels=3, codes=16, seed=1)).all()
    # Items from one content cluster share their first code far more often than items from two.
    same = which[:, None] == which[None, :]
    first = a[:, 0][:, None] == a[:, 0][None, :]
    assert first[same].mean() > 0.5 and first[~same].mean() < 0.1


def test_content_sids_refuse_a_prefix_fuller_than_the_last_level():
    from raygr.models.content_sids import content_sids
    with pytest.raises(ValueError, match="raise model.codes"):
        content_sids(np.ones((20, 4)), levels=2, codes=4)  # 20 identical items share one prefix of 4 last codes


def test_content_source_needs_dense_vectors(ds):
    with pytest.raises(ConfigError, match="embed=wordllama"):
        build_model(tiny_config("model.sid_source=content", "model.preset=tiger"), ds)


@pytest.mark.parametrize("layers", [0, 1])  # the per-level head, the Transformer decoder
def test_node_embeddings_beam_search_matches_reference_and_training(tmp_path, ds, layers):
    from raygr.models.decoding import beam_search, reference_beam_search
    codes = sid_codes(ds.num_items, codes=4, seed=5)
    path = write_json(tmp_path / "s.json", ds.items.item_id, codes)
    cfg = tiny_config("model.sid_source=file", f"model.sid_file={path}", "model.preset=tiger", "model.codes=4",
                      "model.trie_softmax=true", "model.node_embeddings=true", "model.history_item_id=true",
                      f"model.generator_layers={layers}")
    model = build_model(cfg, ds)
    initialise(model, cfg, log=quiet)
    torch.manual_seed(0)
    for emb in model.node_emb:  # trained-looking node vectors, so that they decide the order
        emb.weight.data.normal_(0, 1.0)
    model.eval()
    model.refresh()
    history = torch.randint(1, model.num_items + 1, (4, 6))
    dec, s0 = model.step_decoder(history)
    assert dec.reads_children
    items, scores = beam_search(dec, s0, model.trie, beam=8, renormalize=True)
    for b in range(4):
        user = dec.user(b) if layers else dec
        ref_items, ref_scores = reference_beam_search(user, s0[b : b + 1], model.table, beam=8, renormalize=True,
                                                      nodes=model.trie)
        assert items[b].tolist() == ref_items[0]
        assert torch.allclose(scores[b], torch.tensor(ref_scores[0]), atol=1e-5)
    # Without the node vectors the order is another: they are really read.
    for emb in model.node_emb:
        emb.weight.data.zero_()
    plain, _ = beam_search(dec, s0, model.trie, beam=8, renormalize=True)
    assert not torch.equal(plain, items)
    # Training scores what decoding scores: the teacher-forced loss's logits equal the decoder's at level 1.
    for emb in model.node_emb:
        emb.weight.data.normal_(0, 1.0)
    target = items[:, 0]
    H = model.history_states(history)
    has_tgt = torch.zeros_like(history, dtype=torch.bool)
    has_tgt[:, -1] = True
    states = model.teacher_forced_states(H, history != 0, has_tgt, model.fixed_quantize(target).code_vecs)
    children = model.trie_children(model.fixed_codes[target])
    s1 = dec.advance(s0, 0, model.fixed_codes[target, 0])
    want = model.level_logits(states[1], 1, children[1])
    got = dec.level_logits(s1, 1, children[1])
    assert torch.allclose(want, got, atol=1e-5)


def test_node_embeddings_need_fixed_sids():
    with pytest.raises(ConfigError, match="model.node_embeddings"):
        tiny_config("model.node_embeddings=true", "model.trie_softmax=true")


def test_transition_vectors_use_training_pairs_only_and_group_co_bought_items():
    from raygr.models.content_sids import transition_vectors
    g = np.random.default_rng(0)
    # Two communities of items (1-20, 21-40): every user buys within one of them.
    seqs = [g.choice(np.arange(1, 21) if u % 2 else np.arange(21, 41), size=8) for u in range(300)]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])])
    items = np.concatenate(seqs)
    v = transition_vectors(offsets, items, 40, dim=4)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    sim = v @ v.T
    same = (np.arange(40)[:, None] < 20) == (np.arange(40)[None, :] < 20)
    assert sim[same].mean() > sim[~same].mean() + 0.5
    # Validation and test items (each user's last two) never enter: changing them changes nothing.
    changed = items.copy()
    changed[offsets[1:] - 1] = 1 + (changed[offsets[1:] - 1] % 40)
    changed[offsets[1:] - 2] = 1 + (changed[offsets[1:] - 2] + 7) % 40
    assert np.allclose(transition_vectors(offsets, changed, 40, dim=4), transition_vectors(offsets, items, 40, dim=4))


def test_a_checkpoint_brings_its_content_sids(tmp_path, monkeypatch):
    """Loading a content-SID checkpoint takes the SIDs it was trained with from its weights: the k-means is
    not run again (serving start-up), and the model answers as the one that was saved."""
    import raygr.training.factory as factory
    from raygr.training.checkpoint import load_model
    from tests.serving_helpers import tiny_checkpoint

    ds = tiny_dataset(tmp_path, num_users=200, num_items=60)
    ds.items.dense = np.random.default_rng(2).normal(size=(ds.num_items, 8)).astype(np.float32)
    run = tiny_checkpoint(ds, tmp_path / "run", "model.sid_source=content", "model.preset=tiger",
                          "model.trie_softmax=true", "model.history_item_id=true", "model.generator_layers=1")
    want = factory.semantic_sids(tiny_config("model.sid_source=content", "model.codes=16"), ds)

    def no_kmeans(*_a, **_k):
        raise AssertionError("the content SIDs were computed again at load")

    monkeypatch.setattr(factory, "semantic_sids", no_kmeans)
    model, _, _ = load_model(run / "checkpoints" / "best", ds)
    assert (model.fixed_codes[1:].numpy() == want).all()
    model.refresh()
    assert (model.table.codes[1:].numpy() == want).all()
    history = torch.randint(1, model.num_items + 1, (3, 5))
    items, _ = model.retrieve(history, k=5)
    assert (items > 0).all()


def test_node_scores_at_the_first_level_are_each_childs_own(tmp_path, ds):
    """Level 0 scores every root child with one matmul: the same as scoring each (row, child) pair."""
    codes = sid_codes(ds.num_items, codes=4, seed=6)
    path = write_json(tmp_path / "s.json", ds.items.item_id, codes)
    cfg = tiny_config("model.sid_source=file", f"model.sid_file={path}", "model.preset=tiger", "model.codes=4",
                      "model.trie_softmax=true", "model.node_embeddings=true", "model.history_item_id=true")
    model = build_model(cfg, ds)
    initialise(model, cfg, log=quiet)
    torch.manual_seed(1)
    model.node_emb[0].weight.data.normal_(0, 1.0)
    model.refresh()
    s = torch.randn(5, cfg.model.dim)
    child = model.trie_children(model.fixed_codes[1:6])[0]  # [5, 4], the root's children on every row
    got = model.level_logits(s, 0, child)
    want = model.generator.logits(s, 0, model.quantizer.codebooks).clone()
    q = model.generator.query[0](s)
    for r in range(5):
        for v in range(child.shape[1]):
            if child[r, v] >= 0:
                want[r, v] += q[r] @ model.node_emb[0].weight[child[r, v]]
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, model.generator.logits(s, 0, model.quantizer.codebooks))  # the nodes count
