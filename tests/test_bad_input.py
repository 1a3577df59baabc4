"""Bad inputs raise DatasetError naming the file, the line/row/field and what is wrong."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from raygr.data.dataset import DatasetError
from raygr.data.formats import read
from raygr.data.prepare import prepare


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if path.name.endswith(".gz") else text.encode())
    return path


def fails(fmt: str, path: Path | None, message: str, options: dict | None = None) -> str:
    """Reading raises DatasetError whose message contains ``message`` (literally); returns it."""
    with pytest.raises(DatasetError) as e:
        read(fmt, path, options)
    assert message in str(e.value), f"{message!r} not in {str(e.value)!r}"
    return str(e.value)


HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"


def test_missing_files(tmp_path):
    fails("recbole", tmp_path / "nope", f"input {tmp_path / 'nope'} does not exist")
    fails("recbole", tmp_path, f"{tmp_path} holds no RecBole .inter file (looked for *.inter, *.inter.gz)")
    fails("movielens", tmp_path, "holds neither ratings.dat (MovieLens 1M) nor u.data (MovieLens 100K)")
    write(tmp_path / "a.txt", "1 2\n")
    write(tmp_path / "b.txt", "1 2\n")
    fails("s3rec", tmp_path, "holds several sequence (.txt) files (a.txt, b.txt); pass the one to use")
    fails("s3rec", tmp_path / "a.txt", "item table", {"items": str(tmp_path / "items.jsonl")})


def test_recbole_header_and_fields(tmp_path):
    p = write(tmp_path / "x.inter", "user_id\titem_id:token\n1\t2\n")
    fails("recbole", p, f"{p}:1: header field 'user_id' is not name:type")
    p = write(tmp_path / "y.inter", "uid:token\titem_id:token\n1\t2\n")
    fails("recbole", p, f"{p}:1: header has no 'user_id' column (columns: uid, item_id); "
                        "name it with --option user=COLUMN")
    p = write(tmp_path / "z.inter", HEADER + "1\t2\t100\n1\t3\n")
    fails("recbole", p, f"{p}:3: expected 3 tab-separated fields (user_id, item_id, timestamp), found 2")
    p = write(tmp_path / "w.inter.gz", HEADER + "1\t2\t100\n\n1\t3\tyesterday\n")
    fails("recbole", p, f"{p}:4: field 'timestamp' is not a number or a date: 'yesterday'")
    p = write(tmp_path / "v.inter", HEADER + "1\t\t100\n")
    fails("recbole", p, f"{p}:2: field 'item_id' is empty")
    p = write(tmp_path / "u.inter", HEADER)
    fails("recbole", p, f"{p}: no interactions")


def test_non_numeric_timestamps_and_ratings(tmp_path):
    p = write(tmp_path / "ml" / "ratings.dat", "1::10::5::978300760\n1::20::4::noon\n")
    fails("movielens", p, f"{p}:2: field 'timestamp' is not a number or a date: 'noon'")
    p = write(tmp_path / "ml2" / "ratings.dat", "1::10::5::978300760\n1::20::four::978300761\n")
    fails("movielens", p, f"{p}:2: field 'rating' is not a number: 'four'", {"min_rating": "4"})
    p = write(tmp_path / "ev.csv", "uid,iid,ts\na,1,100\nb,2,soon\n")
    fails("table", p, f"{p} row 2: field 'ts' is not a number or a date: 'soon'",
          {"user": "uid", "item": "iid", "time": "ts"})


def test_malformed_lines(tmp_path):
    p = write(tmp_path / "ml" / "ratings.dat", "1::10::5::978300760\n1::20::4\n")
    fails("movielens", p, f"{p}:2: expected 4 '::'-separated fields (user, item, rating, timestamp), found 3")
    write(tmp_path / "m100" / "u.data", "1\t10\t5\t978300760\n")
    bad = write(tmp_path / "m100" / "u.item", "10|Heat (1995)|x||url|" + "|".join(["0"] * 18 + ["2"]) + "\n")
    fails("movielens", tmp_path / "m100", f"{bad}:1: genre flags (fields 6-24) must be 0 or 1")
    p = write(tmp_path / "items" / "Toy.txt", "1 1\n")
    bad = write(tmp_path / "items" / "items.jsonl", '{"item_id": 1}\n{"item_id": 2, "title": \n')
    fails("s3rec", p.parent, f"{bad}:2: invalid JSON at column")
    bad = write(tmp_path / "items" / "items.jsonl", '{"item_id": 1, "title": ["not", "a", "string"]}\n')
    fails("s3rec", p.parent, f"{bad}:1: field 'title' must be a string")
    bad = write(tmp_path / "items" / "items.jsonl", '{"title": "no id"}\n')
    fails("s3rec", p.parent, f"{bad}:1: expected an object with an 'item_id' field")
    p = write(tmp_path / "letter" / "Sci.inter.json", '{"0": [1, 2],\n "1": [3 4]}')
    fails("letter", p, f"{p}:2: invalid JSON at column")
    p = write(tmp_path / "letter2" / "Sci.inter.json", '{"0": [1, 2.5]}')
    fails("letter", p, f"{p}: user '0', position 1: an item id must be an integer or a string, got 2.5")
    p = write(tmp_path / "gz" / "Toy.txt.gz", "")
    p.write_bytes(b"not gzip at all")
    fails("s3rec", p, f"{p}: cannot read")


def test_empty_sequences_and_repeated_users(tmp_path):
    p = write(tmp_path / "a" / "Toy.txt", "1 5 6\n2\n")
    fails("s3rec", p, f"{p}:2: user '2' has no items (expected 'user item item ...')")
    p = write(tmp_path / "b" / "Toy.txt", "1 5 6\n2 5\n1 7\n")
    fails("s3rec", p, f"{p}:3: user '1' appears again (first on line 1)")
    p = write(tmp_path / "c" / "Sci.inter.json", json.dumps({"0": [1], "3": []}))
    fails("letter", p, f"{p}: user '3' has an empty sequence")


def test_unknown_item_ids_between_item_table_and_interactions(tmp_path):
    seq = write(tmp_path / "Toy.txt", "1 1 2\n2 3\n")
    items = write(tmp_path / "items.jsonl", '{"item_id": 1, "title": "a"}\n{"item_id": 2, "title": "b"}\n')
    fails("s3rec", tmp_path, f"{items} has no entry for item '3', which {seq}:2 refers to; add it, "
                             "or pass --option missing_items=empty")
    table, seqs, source = read("s3rec", tmp_path, {"missing_items": "empty"})
    assert table.tokens[2] == [] and source["items_without_content"] == 1
    write(tmp_path / "items.jsonl", '{"item_id": 1}\n{"item_id": 2}\n{"item_id": 1}\n')
    fails("s3rec", tmp_path, f"{items}:3: item_id '1' appears again (first on line 1)")

    ev = write(tmp_path / "t" / "ev.csv", "u,i\na,X\nb,Y\n")
    it = write(tmp_path / "t" / "it.csv", "id,title\nX,first\nX,again\n")
    fails("table", ev, f"{it} row 2: item 'X' appears again",
          {"user": "u", "item": "i", "items": str(it), "item_key": "id", "text": "title"})


def test_duplicate_rows_are_dropped_and_counted(tmp_path):
    p = write(tmp_path / "d.inter", HEADER + "1\t2\t100\n1\t3\t100\n1\t2\t100\n1\t2\t101\n")
    _, seqs, source = read("recbole", p)
    assert source["duplicates_dropped"] == 1 and seqs.items.tolist() == [1, 2, 1]


def test_table_columns_and_mapping(tmp_path):
    p = write(tmp_path / "ev.csv", "uid,iid,time\na,1,100\n")
    fails("table", p, "format 'table' needs the column names: --option user=COLUMN --option item=COLUMN")
    fails("table", p, f"{p}: no column 'ts' (columns: uid, iid, time); set --option time=COLUMN",
          {"user": "uid", "item": "iid", "time": "ts"})
    fails("table", p, f"{p}: no column 'brand' (columns: uid, iid, time); set --option text=COLUMN",
          {"user": "uid", "item": "iid", "text": "brand"})
    p = write(tmp_path / "e2.csv", "uid,iid\na,1\n ,2\n")
    fails("table", p, f"{p} row 2: field 'uid' is empty", {"user": "uid", "item": "iid"})
    p = write(tmp_path / "notes.txt", "hello")
    fails("table", p, "not a table; use a .parquet, .csv or .csv.gz file", {"user": "u", "item": "i"})
    with pytest.raises(DatasetError, match=re.escape("num_shards must be >= 1, got 0")):
        prepare("synthetic", None, tmp_path / "out", num_shards=0)
