"""A prepared dataset is never replaced over a user's files, and every kind of damage to one is named.

Each damage kind (missing shard, truncated shard, a shard with another schema, a manifest edited by hand)
must give a DatasetError naming the damaged file and saying how to check (`raygr data describe --verify`)
and rebuild (`raygr data prepare ... --overwrite`) the dataset, from every reader: ``load_dataset``,
``raygr data describe`` and the cheap ``check_files`` that training runs before Ray starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raygr.cli import main
from raygr.data.dataset import DatasetError, check_files, load_dataset, read_manifest
from raygr.data.prepare import prepare

SMALL = {"num_users": "40", "num_items": "15", "seed": "0"}
SHARD = "sequences/part-00001.parquet"


@pytest.fixture
def ds(tmp_path) -> Path:
    out = tmp_path / "ds"
    prepare("synthetic", None, out, options=SMALL, num_shards=3)
    return out


def test_overwrite_never_deletes_a_directory_that_is_not_a_raygr_dataset(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    rc = main(["data", "prepare", "--format", "synthetic", "--output", str(mine), "--overwrite",
               "--option", "num_users=20", "--option", "num_items=10"])
    err = capsys.readouterr().err
    assert rc == 2 and (mine / "thesis.tex").read_text() == "years of work"
    assert "holds no raygr dataset (found thesis.tex)" in err and "even with --overwrite" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary directory left behind


def test_overwrite_replaces_a_dataset_but_not_a_users_file_inside_it(ds, capsys):
    (ds / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"plus files raygr did not write \(notes.txt\).*move them out"):
        prepare("synthetic", None, ds, options={**SMALL, "seed": "1"}, overwrite=True)
    assert (ds / "notes.txt").read_text() == "mine"
    (ds / "notes.txt").unlink()
    assert prepare("synthetic", None, ds, options={**SMALL, "seed": "1"}, overwrite=True)["num_users"] == 40


def test_overwrite_help_says_what_it_will_not_replace(capsys):
    with pytest.raises(SystemExit):
        main(["data", "prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a directory with other files is refused, with or without --overwrite" in text


def damage_missing_shard(ds: Path) -> str:
    (ds / SHARD).unlink()
    return f"{ds / SHARD} is missing"


def damage_truncated_shard(ds: Path) -> str:
    data = (ds / SHARD).read_bytes()
    (ds / SHARD).write_bytes(data[: len(data) // 2])
    return f"{ds / SHARD} has {len(data) // 2:,} bytes, the manifest recorded {len(data):,}"


def damage_truncated_shard_of_an_old_manifest(ds: Path) -> str:
    """Manifests written before sizes were recorded: the Parquet footer check still names the file."""
    m = json.loads((ds / "manifest.json").read_text())
    del m["sizes"]
    (ds / "manifest.json").write_text(json.dumps(m))
    data = (ds / SHARD).read_bytes()
    (ds / SHARD).write_bytes(data[: len(data) // 2])
    return f"{ds / SHARD} is not a readable Parquet file"


def damage_wrong_schema(ds: Path) -> str:
    m = json.loads((ds / "manifest.json").read_text())
    pq.write_table(pa.table({"user": pa.array([1, 2], pa.int32()), "item": pa.array([3, 4], pa.int32())}),
                   ds / SHARD)
    m["sizes"][SHARD] = (ds / SHARD).stat().st_size  # same size on record: only the schema check can tell
    (ds / "manifest.json").write_text(json.dumps(m))
    return f"{ds / SHARD} lacks the column(s) user_idx, items, timestamps"


def damage_manifest_edited_file_list(ds: Path) -> str:
    m = json.loads((ds / "manifest.json").read_text())
    del m["files"][SHARD]
    (ds / "manifest.json").write_text(json.dumps(m))
    return f"{ds / 'manifest.json'} was edited: its list of files and checksums no longer matches"


def damage_manifest_edited_counts(ds: Path) -> str:
    m = json.loads((ds / "manifest.json").read_text())
    m["num_users"] += 5
    (ds / "manifest.json").write_text(json.dumps(m))
    return f"{ds / 'manifest.json'} says num_users=45 but {ds / 'users.parquet'} has 40 rows"


def damage_manifest_not_json(ds: Path) -> str:
    (ds / "manifest.json").write_text('{"schema_version": 1, "files": {')
    return f"{ds / 'manifest.json'} is not valid JSON"


DAMAGE = [damage_missing_shard, damage_truncated_shard, damage_truncated_shard_of_an_old_manifest,
          damage_wrong_schema, damage_manifest_edited_file_list, damage_manifest_edited_counts,
          damage_manifest_not_json]


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.removeprefix("damage_"))
def test_every_damage_kind_is_named_with_what_to_do(ds, damage, capsys):
    expected = damage(ds)
    remedy = [f"raygr data describe --verify {ds}", f"raygr data prepare --format synthetic --output {ds} --overwrite"]
    if damage is not damage_manifest_not_json:  # no manifest to read the source from: a generic prepare line
        with pytest.raises(DatasetError) as e:
            check_files(ds, read_manifest(ds))
        assert expected in str(e.value) and all(r in str(e.value) for r in remedy), str(e.value)
    with pytest.raises(DatasetError) as e:
        load_dataset(ds)
    assert expected in str(e.value) and f"raygr data describe --verify {ds}" in str(e.value), str(e.value)
    assert main(["data", "describe", str(ds)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raygr data: error: ") and expected in err and "Traceback" not in err


def test_same_size_corruption_needs_verify(ds, capsys):
    data = bytearray((ds / SHARD).read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside a data page: the footer and the size still look right
    (ds / SHARD).write_bytes(bytes(data))
    check_files(ds, read_manifest(ds))  # the cheap check cannot see it ...
    assert main(["data", "describe", "--verify", str(ds)]) == 2  # ... the checksums do
    err = capsys.readouterr().err
    assert f"{ds / SHARD} does not match its checksum" in err and "raygr data prepare" in err


def test_a_missing_dataset_directory_says_so(tmp_path):
    with pytest.raises(DatasetError, match=f"dataset directory {tmp_path / 'nope'} does not exist"):
        load_dataset(tmp_path / "nope")
