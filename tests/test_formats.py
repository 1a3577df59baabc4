"""Every input format on tiny fixtures: id remapping (originals kept), time order, content tokens, gzip."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raygr.data import formats
from raygr.data.dataset import DatasetError
from raygr.data.formats import IdMap, read, sort_interactions


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def seqs_by_id(items, seqs) -> dict[str, list[str]]:
    """{original user id: [original item ids, oldest first]}."""
    return {u: [items.item_id[i - 1] for i in seqs.sequence(k)] for k, u in enumerate(seqs.user_id)}


def tokens_of(items, item_id: str) -> list[str]:
    return items.tokens[items.item_id.index(item_id)]


# ------------------------------------------------------------------------------------------- ids


def test_ids_numbered_in_natural_order():
    ids = IdMap.build(pa.array(["10", "9", "2", "9"]))
    assert ids.ids() == ["2", "9", "10"]  # numeric, not "10" < "2"
    assert ids.lookup(pa.array(["9", "10"])).tolist() == [1, 2]
    assert IdMap.build(pa.array(["b", "10", "a"])).ids() == ["10", "a", "b"]  # any non-integer: by string
    assert IdMap.build(pa.array(["007", "7"])).ids() == ["007", "7"]  # leading zeros: distinct ids
    assert IdMap.build(pa.array([5, -1, 5], pa.int64())).ids() == ["-1", "5"]
    with pytest.raises(KeyError, match="11"):
        ids.lookup(pa.array(["11"]))


def test_sort_is_stable_and_drops_exact_duplicates():
    user = np.array([1, 0, 1, 1, 1, 1])
    item = np.array([7, 3, 8, 7, 9, 8])
    key = np.array([5, 1, 5, 5, 2, 5])  # user 1 at t=5: items 7, 8, 7 (dup), 8 (dup)
    order, dups = sort_interactions(user, item, key)
    assert dups == 2
    assert order.tolist() == [1, 4, 0, 2]  # user 0; then user 1 by time, ties in file order


# --------------------------------------------------------------------------------------- recbole

INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "u2\t10\t4\t300\n"
         "u1\t2\t5\t200\n"
         "u2\t9\t3\t100\n"
         "u1\t10\t2\t200\n"   # tie with the row above: keeps file order
         "u1\t9\t1\t50\n")
ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\tscore:float\n"
        "2\tToy Story\t1995\tAnimation Children's Comedy\t1.0\n"
        "9\tHeat\t1995\tAction Crime\t2.0\n"
        "10\tUnused Title\t1990\tDrama\t3.0\n"
        "11\tNever Rated\t1990\tDrama\t3.0\n")


@pytest.mark.parametrize("gz", [False, True])
def test_recbole_sorts_by_time_and_remaps_ids(tmp_path, gz):
    inter = write(tmp_path / ("toy.inter.gz" if gz else "toy.inter"), INTER)
    write(tmp_path / "toy.item", ITEM)
    items, seqs, source = read("recbole", tmp_path if not gz else inter)
    assert seqs.user_id == ["u1", "u2"] and items.item_id == ["2", "9", "10"]  # item 11: no interaction
    assert seqs_by_id(items, seqs) == {"u1": ["9", "2", "10"], "u2": ["9", "10"]}
    assert seqs.timestamps.tolist() == [50, 200, 200, 100, 300]
    assert seqs.items.tolist() == [2, 1, 3, 2, 3]  # 1-based, natural order of the original ids
    assert tokens_of(items, "2") == ["title:toy", "title:story", "release_year:1995", "genre:animation",
                                     "genre:children's", "genre:comedy"]  # float columns skipped
    assert items.title[0] == "Toy Story"
    assert source["item_rows_without_interactions"] == 1 and source["duplicates_dropped"] == 0
    assert source["files"][0].endswith(inter.name)


def test_recbole_min_rating_and_no_timestamp(tmp_path):
    write(tmp_path / "a" / "toy.inter", INTER)
    items, seqs, source = read("recbole", tmp_path / "a", {"min_rating": "3"})
    assert seqs_by_id(items, seqs) == {"u1": ["2"], "u2": ["9", "10"]}
    assert source["rows_filtered"] == 2 and items.tokens == [[], [], []]  # no .item: no content
    no_time = "user_id:token\titem_id:token\nb\t1\na\t3\nb\t2\n"
    items, seqs, source = read("recbole", write(tmp_path / "b" / "x.inter", no_time))
    assert seqs_by_id(items, seqs) == {"a": ["3"], "b": ["1", "2"]}  # file order per user
    assert seqs.timestamps.tolist() == [0, 0, 1] and not source["has_timestamps"]


# ----------------------------------------------------------------------------------------- s3rec


@pytest.mark.parametrize("gz", [False, True])
def test_s3rec_with_item2attributes(tmp_path, gz):
    write(tmp_path / ("Toy.txt.gz" if gz else "Toy.txt"), "1 3 1 2\n2 2 3\n")
    write(tmp_path / "Toy_item2attributes.json", json.dumps({"1": [4, 5], "2": [5], "3": []}))
    items, seqs, source = read("s3rec", tmp_path)
    assert seqs_by_id(items, seqs) == {"1": ["3", "1", "2"], "2": ["2", "3"]}
    assert seqs.items.tolist() == [3, 1, 2, 2, 3]  # S3-Rec ids 1..N map to themselves
    assert seqs.timestamps.tolist() == [0, 1, 2, 0, 1]  # no timestamps: positions
    assert tokens_of(items, "1") == ["attr:4", "attr:5"] and tokens_of(items, "3") == []
    assert source["format"] == "s3rec" and not source["has_timestamps"]
    by_file = read("s3rec", tmp_path / ("Toy.txt.gz" if gz else "Toy.txt"))  # finds its sibling too
    assert by_file[0].tokens == items.tokens


def test_s3rec_prefers_the_jsonl_item_table(tmp_path):
    write(tmp_path / "Toy.txt", "7 1 2\n")
    write(tmp_path / "Toy_item2attributes.json", json.dumps({"1": [4], "2": [5]}))
    rows = [{"item_id": 1, "title": "OPI Nail Lacquer, Red", "attributes": ["OPI", "Nail  Polish"]},
            {"item_id": 2, "title": "Lipstick", "attributes": []},
            {"item_id": 3, "title": "Unused", "attributes": []}]
    write(tmp_path / "items.jsonl.gz", "".join(json.dumps(r) + "\n" for r in rows))
    items, seqs, source = read("s3rec", tmp_path)
    assert tokens_of(items, "1") == ["title:opi", "title:nail", "title:lacquer", "title:red", "attr:opi",
                                     "attr:nail polish"]
    assert items.title == ["OPI Nail Lacquer, Red", "Lipstick"]
    assert source["files"][1].endswith("items.jsonl.gz") and source["item_rows_without_interactions"] == 1


# ---------------------------------------------------------------------------------------- letter


def test_letter_json_with_gzipped_items(tmp_path):
    write(tmp_path / "Sci.inter.json", json.dumps({"0": [1, 0, 2], "5": [2, 1]}))
    meta = {"0": {"title": "Digital Caliper", "description": "Measures things", "brand": "Mitutoyo",
                  "categories": "Industrial & Scientific,Measuring,Calipers"},
            "1": {"title": "Glass Beaker", "description": "", "brand": "", "categories": ""},
            "2": {"title": "Pipette", "description": "Lab tool", "brand": "Eppendorf", "categories": "Lab"}}
    write(tmp_path / "Sci.item.json.gz", json.dumps(meta))
    items, seqs, source = read("letter", tmp_path)
    assert seqs.user_id == ["0", "5"] and items.item_id == ["0", "1", "2"]
    assert seqs_by_id(items, seqs) == {"0": ["1", "0", "2"], "5": ["2", "1"]}
    assert tokens_of(items, "0") == ["title:digital", "title:caliper", "brand:mitutoyo",
                                     "cat:industrial & scientific", "cat:measuring", "cat:calipers"]
    assert tokens_of(items, "1") == ["title:glass", "title:beaker"]
    items, _, _ = read("letter", tmp_path / "Sci.inter.json", {"description": "true"})
    assert "desc:measures" in tokens_of(items, "0")


# ------------------------------------------------------------------------------------- movielens


def test_movielens_1m(tmp_path):
    write(tmp_path / "ratings.dat", "2::20::5::978300760\n1::10::3::978300100\n1::20::4::978300000\n"
                                    "1::30::1::978300000\n")
    write(tmp_path / "movies.dat", "10::Amélie (2001)::Comedy|Romance\n20::Heat (1995)::Action|Crime\n"
                                   "30::Toy Story (1995)::Animation\n", encoding="latin-1")
    items, seqs, source = read("movielens", tmp_path)
    assert source["variant"] == "1m"
    assert seqs_by_id(items, seqs) == {"1": ["20", "30", "10"], "2": ["20"]}  # tie at ...000: file order
    assert tokens_of(items, "10") == ["title:amélie", "title:2001", "genre:comedy", "genre:romance"]
    assert items.title[0] == "Amélie (2001)"
    items, seqs, source = read("movielens", tmp_path / "ratings.dat", {"min_rating": 4})
    assert seqs_by_id(items, seqs) == {"1": ["20"], "2": ["20"]} and source["rows_filtered"] == 2


def test_movielens_100k(tmp_path):
    write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t302\t4\t881250000\n")
    flags = {"242": [0] * 19, "302": [0] * 19}
    flags["242"][5] = 1  # Comedy
    flags["302"][1] = flags["302"][16] = 1  # Action, Thriller
    lines = [f"{i}|{t}|01-Jan-1995||http://x|" + "|".join(map(str, flags[i])) for i, t in
             (("242", "Kolya (1996)"), ("302", "L.A. Confidential (1997)"))]
    write(tmp_path / "u.item", "\n".join(lines) + "\n", encoding="latin-1")
    items, seqs, source = read("movielens", tmp_path)
    assert source["variant"] == "100k" and seqs.user_id == ["186", "196"]
    assert seqs_by_id(items, seqs) == {"186": ["302"], "196": ["302", "242"]}
    assert tokens_of(items, "302") == ["title:l", "title:a", "title:confidential", "title:1997",
                                       "genre:action", "genre:thriller"]


# ----------------------------------------------------------------------------------------- table


def test_table_csv_with_dates_and_inline_text(tmp_path):
    csv = ("uid,iid,ts,title,brand\n"
           "bob,B7,2024-01-02 10:00:00,Red Lipstick,OPI\n"
           "amy,A1,2024-01-01,Nail Polish,OPI\n"
           "bob,A1,2024-01-01T09:00:00,Nail Polish (new title),Essie\n"
           "bob,A1,2024-01-01T09:00:00,Nail Polish (new title),Essie\n")  # exact duplicate
    write(tmp_path / "ev.csv.gz", csv)
    opts = {"user": "uid", "item": "iid", "time": "ts", "text": "title,brand"}
    items, seqs, source = read("table", tmp_path / "ev.csv.gz", opts)
    assert seqs_by_id(items, seqs) == {"amy": ["A1"], "bob": ["A1", "B7"]}
    assert source["duplicates_dropped"] == 1 and source["options"]["text"] == ["title", "brand"]
    assert seqs.timestamps[0] == 1704067200  # dates stored as Unix seconds
    # an item's content comes from its first row in the file
    assert tokens_of(items, "A1") == ["title:nail", "title:polish", "brand:opi"]
    assert items.title == ["Nail Polish", "Red Lipstick"]


@pytest.mark.parametrize("name, delimiter", [("ev.tsv", None), ("ev.txt.csv", "tab"), ("ev.csv", "\t")])
def test_table_tab_separated(tmp_path, name, delimiter):
    from raygr.data.commands import parse_options

    (tmp_path / name).write_text("uid\tiid\tts\nbob\tB7\t2\namy\tA1\t1\nbob\tA1\t1\n")
    pairs = ["user=uid", "item=iid", "time=ts"] + ([f"delimiter={delimiter}"] if delimiter else [])
    items, seqs, _ = read("table", tmp_path / name, parse_options(pairs))  # as `--option delimiter=...` gives it
    assert seqs_by_id(items, seqs) == {"amy": ["A1"], "bob": ["A1", "B7"]}


def test_table_parquet_directory_with_item_table(tmp_path):
    d = tmp_path / "events"
    d.mkdir()
    pq.write_table(pa.table({"u": [3, 1], "i": [20, 10], "t": [5.5, 1.0]}), d / "part-0.parquet")
    pq.write_table(pa.table({"u": [1, 3], "i": [20, 10], "t": [0.5, 5.25]}), d / "part-1.parquet")
    pq.write_table(pa.table({"item": [10, 20, 30], "name": ["Alpha One", "Beta", "Gamma"],
                             "tags": [["x", "Y"], [], ["z"]]}), tmp_path / "items.parquet")
    opts = {"user": "u", "item": "i", "time": "t", "items": str(tmp_path / "items.parquet"),
            "item_key": "item", "text": "name,tags"}
    items, seqs, source = read("table", d, opts)
    assert seqs_by_id(items, seqs) == {"1": ["20", "10"], "3": ["10", "20"]}  # 5.25 < 5.5
    assert seqs.timestamps.tolist() == [0, 1, 5, 5]  # decimals floored
    assert tokens_of(items, "10") == ["title:alpha", "title:one", "tags:x", "tags:y"]
    assert items.title == ["Alpha One", "Beta"] and source["item_rows_without_interactions"] == 1
    assert len(source["files"]) == 3


# ------------------------------------------------------------------------------------- synthetic


def test_synthetic_reads_options_from_strings():
    from raygr.data.synthetic import generate

    items, seqs, source = read("synthetic", None, {"num_users": "40", "num_items": "12", "seed": "3"})
    ref_items, ref_seqs = generate(num_users=40, num_items=12, seed=3)
    assert seqs.num_users == 40 and len(items) == 12 and items.tokens == ref_items.tokens
    assert np.array_equal(seqs.items, ref_seqs.items) and source["options"]["num_users"] == 40


def test_unknown_format_and_options_are_explained(tmp_path):
    with pytest.raises(DatasetError, match="unknown format 'csv'; choose one of recbole"):
        read("csv", tmp_path)
    with pytest.raises(DatasetError, match="'synthetic' has no option 'users'; its options: num_users"):
        read("synthetic", None, {"users": "5"})
    with pytest.raises(DatasetError, match="num_users='many' of format 'synthetic' must be an integer"):
        read("synthetic", None, {"num_users": "many"})
    with pytest.raises(DatasetError, match="allowed values are error, empty"):
        read("s3rec", tmp_path, {"missing_items": "skip"})
    with pytest.raises(DatasetError, match="format 'letter' needs an input"):
        read("letter", None)
    assert "recbole:" in formats.options_help() and "num_users=2000" in formats.options_help()
