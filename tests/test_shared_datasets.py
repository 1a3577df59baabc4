"""The real datasets in ../shared/data (research-only, never copied into the repo): exact published counts.

Skipped where the shared folder is absent (e.g. a fresh clone or CI).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from raygr.data.dataset import load_dataset
from raygr.data.prepare import prepare

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

pytestmark = [pytest.mark.shared_data,
              pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent (research data)")]


def need(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent")
    return p


def test_beauty_s3rec_with_derived_items(tmp_path):
    src = need("amazon-beauty")
    m = prepare("s3rec", src, tmp_path / "beauty")
    assert (m["num_users"], m["num_items"], m["num_interactions"]) == (22_363, 12_101, 198_502)
    assert m["source"]["files"][1].endswith("derived_items.jsonl.gz")
    ds = load_dataset(tmp_path / "beauty")
    # S3-Rec ids are 1..N in natural order, so item k stays k and every sequence equals the file's line.
    with gzip.open(src / "Beauty.txt.gz", "rt") as f:
        first = [int(x) for x in f.readline().split()]
    assert ds.sequences.user_id[0] == str(first[0]) and ds.sequences.sequence(0).tolist() == first[1:]
    assert ds.items.item_id[:3] == ["1", "2", "3"]
    assert ds.items.tokens[0][:3] == ["title:opi", "title:nail", "title:lacquer"]
    assert {"attr:opi", "attr:nail polish"} <= set(ds.items.tokens[0])
    assert all(ds.items.tokens)  # every item has content


def test_scientific_letter(tmp_path):
    m = prepare("letter", need("amazon2018-scientific"), tmp_path / "sci")
    assert (m["num_users"], m["num_items"], m["num_interactions"]) == (8_317, 4_344, 58_492)
    items = load_dataset(tmp_path / "sci").items
    assert items.item_id[0] == "0" and any(t.startswith("brand:") for t in items.tokens[0])


def test_ml100k_recbole(tmp_path):
    m = prepare("recbole", need("ml-100k"), tmp_path / "ml")
    assert (m["num_users"], m["num_items"], m["num_interactions"]) == (943, 1_682, 100_000)
    ds = load_dataset(tmp_path / "ml")
    seqs = ds.sequences
    same_user = np.repeat(np.arange(seqs.num_users), seqs.lengths())
    assert (np.diff(seqs.timestamps)[np.diff(same_user) == 0] >= 0).all()  # time-sorted per user
    assert ds.items.title[0] == "Toy Story" and "genre:animation" in ds.items.tokens[0]
