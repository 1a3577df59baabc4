"""model.sid_rec_weight: content SIDs that also quantize the item table a SASRec run learned
(train.init_from), so a joint run's SIDs come from the recommendation loss as well as from text."""

import dataclasses

import numpy as np
import pytest
import torch

from raygr.config import ConfigError
from raygr.models.content_sids import content_sids, sid_vectors, transition_vectors
from raygr.training.factory import build_model, semantic_sids
from raygr.training.local import train_local
from tests.helpers import quiet, tiny_config, tiny_dataset

CONTENT = ["model.sid_source=content", "model.codes=16", "model.sid_collab_weight=1"]


@pytest.fixture(scope="module")
def sasrec_run(tmp_path_factory):
    """A tiny dataset with text vectors, and a SASRec checkpoint trained on it (Ray-free)."""
    root = tmp_path_factory.mktemp("recsids")
    ds = tiny_dataset(root, num_users=300, num_items=60)
    ds.items.dense = np.random.default_rng(2).normal(size=(ds.num_items, 8)).astype(np.float32)
    torch.set_num_threads(1)
    cfg = tiny_config("model.preset=sasrec", "model.num_negatives=0", "train.epochs=2")
    model, _, _ = train_local(cfg, ds, log=quiet, checkpoint_dir=str(root / "sasrec"))
    return ds, root / "sasrec", model.item_emb.weight.detach()[1:].numpy()


def test_the_sids_quantize_text_co_occurrence_and_the_sasrec_item_table(sasrec_run):
    ds, ckpt, table = sasrec_run
    cfg = tiny_config(*CONTENT, "model.sid_rec_weight=1", f"train.init_from={ckpt}")
    got = semantic_sids(cfg, ds)
    seqs = ds.sequences
    collab = transition_vectors(seqs.offsets, seqs.items, ds.num_items, seed=cfg.train.seed)
    want = content_sids(sid_vectors(ds.items.dense, collab, 1.0, table, 1.0), 3, 16, seed=0, standardise=False)
    assert (got == want).all()  # the checkpoint's (tied) item table, padding row left out
    assert len({tuple(r) for r in got.tolist()}) == ds.num_items  # still one-to-one
    without = semantic_sids(tiny_config(*CONTENT), ds)
    assert (got != without).any(1).mean() > 0.3  # the table moves items, not just a few


def test_a_joint_run_builds_on_them_and_starts_from_the_sasrec_weights(sasrec_run):
    ds, ckpt, table = sasrec_run
    cfg = tiny_config(*CONTENT, "model.preset=joint", "model.history_item_id=true", "model.sid_residual=true",
                      "model.sid_rec_weight=1", f"train.init_from={ckpt}", "model.trie_softmax=true",
                      "model.node_embeddings=true", "model.generator_layers=1", "train.epochs=1")
    model, state, test = train_local(cfg, ds, log=quiet)
    assert (model.fixed_codes[1:].numpy() == semantic_sids(cfg, ds)).all()
    assert state.epoch == 1 and test["ndcg@10"] > 0


def test_bad_settings_name_the_key(sasrec_run, tmp_path):
    ds, ckpt, _ = sasrec_run
    with pytest.raises(ConfigError, match="model.sid_rec_weight.*needs train.init_from"):
        tiny_config(*CONTENT, "model.sid_rec_weight=1")
    with pytest.raises(ConfigError, match="model.sid_rec_weight.*model.sid_source=content"):
        tiny_config("model.sid_rec_weight=1", f"train.init_from={ckpt}")
    with pytest.raises(ConfigError, match="model.sid_rec_weight.*>= 0"):
        tiny_config(*CONTENT, "model.sid_rec_weight=-1", f"train.init_from={ckpt}")
    other = tiny_dataset(tmp_path, num_users=100, num_items=40)
    other.items.dense = np.ones((40, 8), np.float32)
    with pytest.raises(ConfigError, match="has 60 items, the dataset 40"):
        build_model(tiny_config(*CONTENT, "model.sid_rec_weight=1", f"train.init_from={ckpt}"), other)


def test_written_sids_train_a_file_sid_run_on_the_same_codes(sasrec_run, tmp_path):
    """write_sids (benchmarks/write_sids.py): a tiger run with model.sid_source=file trains on exactly
    the SIDs the content config computed, without warm-starting from the SASRec run."""
    from raygr.data.sid_file import load_sids, write_sids
    ds, ckpt, _ = sasrec_run
    codes = semantic_sids(tiny_config(*CONTENT, "model.sid_rec_weight=1", f"train.init_from={ckpt}"), ds)
    path = write_sids(tmp_path / "sids.json", ds.items.item_id, codes)
    assert not (tmp_path / "sids.json.tmp").exists()
    assert (load_sids(path, ds.items.item_id) == codes).all()
    cfg = tiny_config("model.preset=tiger", "model.sid_source=file", f"model.sid_file={path}", "model.codes=16",
                      "model.trie_softmax=true", "model.node_embeddings=true", "model.history_item_id=true")
    assert (build_model(cfg, ds).fixed_codes[1:].numpy() == codes).all()


def test_auto_picks_the_weight_whose_sids_make_the_next_first_code_most_predictable(sasrec_run):
    """model.sid_rec_weight_auto: the pick is the argmax of first-code predictability over SID_REC_WEIGHTS,
    its SIDs are those of a run configured with that weight, and a run records the weight, auto off."""
    from raygr.models.sid_predictability import prefix_predictability
    from raygr.training.factory import SID_REC_WEIGHTS, pick_sid_rec_weight, resolve_sid_rec_weight

    ds, ckpt, _ = sasrec_run
    seqs = ds.sequences
    fixed = {w: semantic_sids(tiny_config(*CONTENT, f"model.sid_rec_weight={w}", f"train.init_from={ckpt}"), ds)
             for w in SID_REC_WEIGHTS}
    scores = {w: prefix_predictability(seqs.offsets, seqs.items, c, 1) for w, c in fixed.items()}
    assert len(set(scores.values())) > 1  # the weights give different SIDs: the pick means something
    want = max(SID_REC_WEIGHTS, key=lambda w: (scores[w], -w))
    auto = tiny_config(*CONTENT, "model.sid_rec_weight_auto=true", f"train.init_from={ckpt}")
    lines: list[str] = []
    weight, codes = pick_sid_rec_weight(auto, ds, lines.append)
    assert weight == want and (codes == fixed[want]).all()
    assert (semantic_sids(auto, ds, quiet) == fixed[want]).all()
    assert f"-> weight {want:g}" in lines[0]
    resolved = resolve_sid_rec_weight(auto, ds, quiet)
    assert resolved.model.sid_rec_weight == want and not resolved.model.sid_rec_weight_auto
    _, state, _ = train_local(dataclasses.replace(auto, train=dataclasses.replace(auto.train, epochs=1)), ds,
                              log=lines.append)
    assert state.epoch == 1 and any("model.sid_rec_weight_auto" in line for line in lines[1:])


def test_auto_needs_content_sids_and_a_recommender_run(sasrec_run):
    _, ckpt, _ = sasrec_run
    with pytest.raises(ConfigError, match="model.sid_rec_weight_auto.*needs train.init_from"):
        tiny_config(*CONTENT, "model.sid_rec_weight_auto=true")
    with pytest.raises(ConfigError, match="model.sid_rec_weight_auto.*model.sid_source=content"):
        tiny_config("model.sid_rec_weight_auto=true", f"train.init_from={ckpt}")
