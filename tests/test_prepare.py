"""prepare(): atomic writes, re-runs, refusing another dataset, checksums; describe; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import raygr.data.dataset as dataset_mod
from raygr.cli import main
from raygr.data.dataset import DatasetError, load_dataset, sha256_file, verify_checksums
from raygr.data.prepare import describe, prepare
from raygr.data.synthetic import generate

SMALL = {"num_users": "60", "num_items": "20", "seed": "0"}


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def test_prepare_writes_the_canonical_dataset_with_checksums(tmp_path):
    out = tmp_path / "synth"
    m = prepare("synthetic", None, out, options={**SMALL, "name": "tiny"}, num_shards=3)
    assert (m["name"], m["num_users"], m["num_items"], m["num_shards"]) == ("tiny", 60, 20, 3)
    assert json.loads((out / "manifest.json").read_text()) == m
    shards = [f"sequences/part-0000{s}.parquet" for s in range(3)]
    assert sorted(m["files"]) == ["items.parquet", *shards, "users.parquet"]
    assert all(sha256_file(out / f) == digest for f, digest in m["files"].items())
    assert m["source"]["format"] == "synthetic" and m["source"]["engine"] == "in-memory"
    ds = load_dataset(out, verify=True)
    items, seqs = generate(num_users=60, num_items=20, seed=0)
    assert np.array_equal(ds.sequences.items, seqs.items) and ds.items.tokens == items.tokens
    (out / "items.parquet").write_bytes(b"changed")
    with pytest.raises(DatasetError, match="items.parquet does not match its checksum"):
        verify_checksums(out, m)


def test_failure_mid_write_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    calls = {"n": 0}
    real = dataset_mod.sequences_to_arrow

    def fail_on_second_shard(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset_mod, "sequences_to_arrow", fail_on_second_shard)
    with pytest.raises(OSError, match="disk full"):
        prepare("synthetic", None, out, options=SMALL)
    assert not out.exists() and leftovers(out) == []

    # An existing dataset survives a failed replacement untouched.
    monkeypatch.setattr(dataset_mod, "sequences_to_arrow", real)
    old = prepare("synthetic", None, out, options=SMALL)
    calls["n"] = 0
    monkeypatch.setattr(dataset_mod, "sequences_to_arrow", fail_on_second_shard)
    with pytest.raises(OSError):
        prepare("synthetic", None, out, options={**SMALL, "seed": "1"}, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] == old["fingerprint"]
    verify_checksums(out, old)
    assert leftovers(out) == []


def test_rerun_same_dataset_ok_but_a_different_one_is_refused(tmp_path):
    out = tmp_path / "ds"
    first = prepare("synthetic", None, out, options=SMALL)
    again = prepare("synthetic", None, out, options=SMALL)  # same content: replaced silently
    assert again["fingerprint"] == first["fingerprint"]
    with pytest.raises(DatasetError, match="already holds a different dataset .* pass --overwrite"):
        prepare("synthetic", None, out, options={**SMALL, "seed": "1"})
    assert json.loads((out / "manifest.json").read_text())["fingerprint"] == first["fingerprint"]
    other = prepare("synthetic", None, out, options={**SMALL, "seed": "1"}, overwrite=True)
    assert other["fingerprint"] != first["fingerprint"] and leftovers(out) == []

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(DatasetError, match="is not empty and holds no raygr dataset"):
        prepare("synthetic", None, notes, options=SMALL)
    assert (notes / "todo.txt").read_text() == "mine"


def test_describe_reports_counts_lengths_tokens_and_source(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "Toy.txt").write_text("1 1 2 3\n2 2 3\n3 3 1 2 3\n")
    (tmp_path / "in" / "Toy_item2attributes.json").write_text('{"1": [7], "2": [7, 8], "3": [8]}')
    prepare("s3rec", tmp_path / "in", tmp_path / "toy", num_shards=2)
    text = describe(tmp_path / "toy", verify=True)
    for expected in ["users         3", "items         3", "interactions  9",
                     "density       88.8889% of user-item pairs  (sparsity 11.1111%)",
                     "sequence length                 2       3.0      3.00         4",
                     "distinct items / user           2       3.0      2.67         3",
                     "interactions / item             2       3.0      3.00         4",
                     "top: attr:7 (2), attr:8 (2)",
                     "shards        2: part-00000.parquet .. part-00001.parquet",
                     "source        s3rec (in-memory)", "files: Toy.txt, Toy_item2attributes.json",
                     "duplicates dropped 0", "checksums verified"]:
        assert expected in text, f"{expected!r} not in\n{text}"


def test_cli_prepare_and_describe(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["data", "prepare", "--format", "synthetic", "--output", str(out), "--num-shards", "2",
               "--option", "num_users=30", "--option", "num_items=10"])
    assert rc == 0 and "30 users, 10 items" in capsys.readouterr().out
    assert main(["data", "describe", str(out)]) == 0 and "users         30" in capsys.readouterr().out

    assert main(["data", "prepare", "--format", "s3rec", "--output", str(tmp_path / "x")]) == 2
    assert "raygr data: error: format 's3rec' needs an input (--input PATH)" in capsys.readouterr().err
    assert main(["data", "prepare", "--format", "synthetic", "--output", str(out), "--option", "seed"]) == 2
    assert "--option 'seed' must look like key=value" in capsys.readouterr().err
    assert main(["data", "prepare", "--format", "synthetic", "--output", str(tmp_path / "y"),
                 "--option", "use_ray=true"]) == 2
    assert "use_ray=true applies to format 'table' only" in capsys.readouterr().err
    assert main(["data", "describe", str(tmp_path)]) == 2
    assert "is not a prepared dataset: manifest.json is missing" in capsys.readouterr().err
