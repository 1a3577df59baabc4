"""The dense column at prepare time: item texts, the bundled WordLlama embedding (offline), vectors from
Parquet / .npz / .npy files keyed by original item id, and an error naming the problem for each bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raygr.data.dataset import DatasetError, load_dataset
from raygr.data.formats import read
from raygr.data.prepare import describe, prepare
from raygr.data.text_embedding import item_text

# S3-Rec ids 10, 20, 30, 40 -> item_idx 1..4; item 40 has no content at all.
ITEMS = [
    {"item_id": 10, "title": "OPI Nail Lacquer, Red", "attributes": ["OPI", "Makeup", "Nail Polish"]},
    {"item_id": 20, "title": "Essie Nail Polish, Pink", "attributes": ["Essie", "Makeup", "Nail Polish"]},
    {"item_id": 30, "title": "Hydraulic pump relay capacitor", "attributes": ["Industrial", "Electrical"]},
    {"item_id": 40},
]
IDS = ["10", "20", "30", "40"]


@pytest.fixture
def beauty(tmp_path) -> Path:
    src = tmp_path / "toy"
    src.mkdir()
    (src / "Toy.txt").write_text("1 10 20 30\n2 20 40 10\n3 30 10\n")
    (src / "Toy_item2attributes.json").write_text(json.dumps({"10": [1, 2], "20": [2], "30": [3], "40": []}))
    (src / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ITEMS))
    return src


def vectors_for(ids: list[str], dim: int = 3) -> np.ndarray:
    """A distinct, recognisable vector per id: [id, id/10, -id, ...]."""
    return np.array([[float(i) * (k + 1) * (-1) ** k for k in range(dim)] for i in ids], dtype=np.float32)


# ------------------------------------------------------------------------------------------- item texts


def test_item_text_reads_title_then_fields():
    toks = ["title:opi", "title:nail", "brand:opi", "cat:makeup", "cat:nails", "attr:nail polish", "pack_size:2"]
    assert item_text("OPI Nail Lacquer, Red.", toks) == (
        "OPI Nail Lacquer, Red. Brand: opi. Categories: makeup, nails. Attributes: nail polish. Pack size: 2.")
    # No display title: the title words stand in; no content at all: no text, so the vector stays zero.
    assert item_text(None, ["title:red", "title:lipstick", "desc:long", "desc:lasting"]) == (
        "red lipstick. Description: long lasting.")
    assert item_text(None, []) == "" and item_text("  ", []) == ""


def test_s3rec_titles_false_and_explicit_attributes(beauty):
    items, _, _ = read("s3rec", beauty, {"titles": "false"})
    assert items.title == [None] * 4
    assert items.tokens[0] == ["attr:opi", "attr:makeup", "attr:nail polish"]
    # attributes= is used even though a JSONL item table sits in the same directory.
    items, _, source = read("s3rec", beauty, {"attributes": str(beauty / "Toy_item2attributes.json")})
    assert items.tokens[0] == ["attr:1", "attr:2"] and source["files"][1].endswith("_item2attributes.json")


# -------------------------------------------------------------------------------------------- wordllama


def test_wordllama_embeds_item_texts_offline(beauty, tmp_path, monkeypatch):
    pytest.importorskip("wordllama")
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access during embedding: {args[1:3]}")

    monkeypatch.setattr(requests.Session, "request", no_network)
    out = tmp_path / "wl"
    m = prepare("s3rec", beauty, out, options={"embed": "wordllama"})
    dense = load_dataset(out).items.dense
    assert dense.shape == (4, 256) and dense.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(dense[:3], axis=1), 1.0, rtol=1e-5)
    assert not dense[3].any()  # item 40 has no text
    # The two nail polishes are closer to each other than to the pump.
    assert dense[0] @ dense[1] > dense[0] @ dense[2] + 0.1
    d = m["source"]["dense"]
    assert (d["origin"], d["dim"], d["items_with_text"], d["items_without_text"]) == ("wordllama", 256, 3, 1)
    assert d["example_text"] == "OPI Nail Lacquer, Red. Attributes: opi, makeup, nail polish."
    assert "256 features per item; wordllama l2_supercat-256" in describe(out)
    assert "3 of 4 items with text" in describe(out)
    # Deterministic: preparing again gives the same dataset.
    assert prepare("s3rec", beauty, out, options={"embed": "wordllama"})["fingerprint"] == m["fingerprint"]


def test_unknown_embedder_and_ray_path_are_refused(beauty, tmp_path):
    with pytest.raises(DatasetError, match="embed='bert'.*available text embedders are wordllama"):
        prepare("s3rec", beauty, tmp_path / "x", options={"embed": "bert"})
    with pytest.raises(DatasetError, match="both fill the dense column"):
        prepare("s3rec", beauty, tmp_path / "x", options={"embed": "wordllama", "vectors": "v.npy"})
    with pytest.raises(DatasetError, match="option embed needs the in-memory path.*use_ray=false"):
        prepare("table", beauty, tmp_path / "x", options={"embed": "wordllama", "use_ray": "true"})
    with pytest.raises(DatasetError, match="vectors_unknown= applies to a vectors= file"):
        prepare("s3rec", beauty, tmp_path / "x", options={"vectors_unknown": "ignore"})
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------------------- vector files


def write_vectors(path: Path, ids: list, vectors: np.ndarray, layout: str) -> Path:
    if layout == "parquet-list":
        pq.write_table(pa.table({"item_id": ids, "vector": [list(map(float, v)) for v in vectors]}), path)
    elif layout == "parquet-columns":
        pq.write_table(pa.table({"item_id": ids, **{f"d{k}": vectors[:, k] for k in range(vectors.shape[1])}}),
                       path)
    elif layout == "npz":
        np.savez(path, item_id=np.asarray(ids), vector=vectors)
    else:
        np.save(path, vectors)
    return path


@pytest.mark.parametrize("layout,suffix,ids", [
    ("parquet-list", ".parquet", [30, 10, 40, 20]),  # integer ids, shuffled
    ("parquet-columns", ".parquet", ["40", "30", "20", "10"]),
    ("npz", ".npz", ["20", "10", "40", "30"]),
    ("npy-item-order", ".npy", IDS),  # no ids: rows in items.parquet order
])
def test_vectors_from_a_file_land_by_item_id(beauty, tmp_path, layout, suffix, ids):
    path = write_vectors(tmp_path / f"v{suffix}", ids, vectors_for([str(i) for i in ids]), layout)
    out = tmp_path / "ds"
    m = prepare("s3rec", beauty, out, options={"vectors": str(path)})
    ds = load_dataset(out)
    np.testing.assert_array_equal(ds.items.dense, vectors_for(ds.items.item_id))  # stored as given
    d = m["source"]["dense"]
    assert (d["origin"], d["layout"], d["dim"], d["normalized"]) == ("file", layout, 3, "none")
    assert f"3 features per item; from file {path}" in describe(out)


def test_unknown_ids_can_be_ignored_explicitly(beauty, tmp_path):
    ids = [*IDS, "99"]
    path = write_vectors(tmp_path / "v.npz", ids, vectors_for(ids), "npz")
    m = prepare("s3rec", beauty, tmp_path / "ds", options={"vectors": str(path), "vectors_unknown": "ignore"})
    assert m["source"]["dense"]["unknown_ids_ignored"] == 1
    np.testing.assert_array_equal(load_dataset(tmp_path / "ds").items.dense, vectors_for(IDS))


def _nan(v: np.ndarray) -> np.ndarray:
    v = v.copy()
    v[2, 1] = np.nan
    return v


def _big() -> np.ndarray:
    v = np.ones((4, 3))
    v[2, 1] = 1e39  # finite as float64, inf once stored as float32
    return v


BAD = {
    "ragged": (lambda p: pq.write_table(pa.table({"item_id": IDS, "vector": [[1.0, 2.0, 3.0]] * 3 + [[1.0, 2.0]]}), p),
               ".parquet", r"item '40' \(row 3\) has 2 values in column 'vector', other rows have 3"),
    "nan": (lambda p: write_vectors(p, IDS, _nan(vectors_for(IDS)), "npz"), ".npz",
            r"item '30' \(row 2\) has nan at dimension 1"),
    "inf_column": (lambda p: write_vectors(p, IDS, _big(), "parquet-columns"),
                   ".parquet", r"item '30' \(row 2\) has inf at dimension 1"),
    "missing": (lambda p: write_vectors(p, IDS[:3], vectors_for(IDS[:3]), "parquet-list"), ".parquet",
                r"no vector for 1 of the dataset's 4 items \(item ids '40'\)"),
    "unknown": (lambda p: write_vectors(p, [*IDS, "77"], vectors_for([*IDS, "77"]), "npz"), ".npz",
                r"1 item ids that are not items of the dataset \('77'\).*vectors_unknown=ignore"),
    "duplicate": (lambda p: write_vectors(p, [*IDS, "20"], vectors_for([*IDS, "20"]), "npz"), ".npz",
                  r"item '20' appears twice \(rows 1 and 4\)"),
    "npy_rows": (lambda p: np.save(p, np.zeros((5, 3))), ".npy",
                 r"has shape \[5, 3\]; an .npy without ids must be \[4 \(the dataset's items"),
    "npy_1d": (lambda p: np.save(p, np.zeros(4)), ".npy", r"has shape \[4\]"),
    "npz_keys": (lambda p: np.savez(p, ids=np.asarray(IDS), vectors=np.zeros((4, 3))), ".npz",
                 r"lacks the array\(s\) item_id, vector \(it has ids, vectors\)"),
    "corrupt": (lambda p: p.write_bytes(b"not parquet at all"), ".parquet", r"is not a readable Parquet file"),
    "corrupt_npy": (lambda p: p.write_bytes(b"not numpy"), ".npy", r"is not a readable NumPy file"),
    "no_item_id": (lambda p: pq.write_table(pa.table({"id": IDS, "vector": [[1.0]] * 4}), p), ".parquet",
                   r"has no 'item_id' column \(columns: id, vector\)"),
    "text_column": (lambda p: pq.write_table(pa.table({"item_id": IDS, "d0": [1.0] * 4, "d1": ["a"] * 4}), p),
                    ".parquet", r"column 'd1' is string, not numeric"),
    "float_ids": (lambda p: pq.write_table(pa.table({"item_id": [10.0, 20.0, 30.0, 40.0], "v": [[1.0]] * 4}), p),
                  ".parquet", r"item_id must hold strings or integers.*got floats"),
    "suffix": (lambda p: p.write_text("10,1,2\n"), ".csv", r"unknown type '.csv'; use .parquet, .npz or .npy"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_vector_files_are_refused_naming_the_file_and_the_problem(beauty, tmp_path, case):
    make, suffix, message = BAD[case]
    path = tmp_path / f"vectors{suffix}"
    make(path)
    out = tmp_path / "ds"
    with pytest.raises(DatasetError, match=message) as e:
        prepare("s3rec", beauty, out, options={"vectors": str(path)})
    assert str(path) in str(e.value) and not out.exists()


def test_a_missing_vectors_file_is_named(beauty, tmp_path):
    with pytest.raises(DatasetError, match=r"vectors file .*nope.parquet does not exist"):
        prepare("s3rec", beauty, tmp_path / "ds", options={"vectors": str(tmp_path / "nope.parquet")})
