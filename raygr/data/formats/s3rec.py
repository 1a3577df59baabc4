"""The ``s3rec`` format: S3-Rec / P5 sequence lines 'user item item ...' with a JSONL item table or
X_item2attributes.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from raygr.data.dataset import DatasetError, ItemTable, SequenceData
from raygr.data.formats.content import ItemContent, content_from_record, content_tokens
from raygr.data.formats.files import PathLike, existing, find, iter_lines, load_json, sibling
from raygr.data.formats.interactions import Interactions, MissingItems, build, row_where, strings


def _items_jsonl(path: Path, description: bool = False, titles: bool = True) -> dict[str, ItemContent]:
    """One JSON object per line with ``item_id`` and any of title / attributes / brand / categories;
    ``titles=False`` ignores the titles (an item is then its attributes / brand / categories only)."""
    content: dict[str, ItemContent] = {}
    first_line: dict[str, int] = {}
    for n, line in iter_lines(path):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}:{n}: invalid JSON at column {e.colno}: {e.msg}") from None
        if not isinstance(rec, dict) or rec.get("item_id") in (None, ""):
            raise DatasetError(f"{path}:{n}: expected an object with an 'item_id' field")
        iid = str(rec["item_id"])
        if iid in first_line:
            raise DatasetError(f"{path}:{n}: item_id {iid!r} appears again (first on line {first_line[iid]})")
        first_line[iid] = n
        if not titles:
            rec = {k: v for k, v in rec.items() if k != "title"}
        content[iid] = content_from_record(rec, f"{path}:{n}", description)
    return content


def _item2attributes(path: Path) -> dict[str, ItemContent]:
    data = load_json(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected an object {{item: [attribute ids]}}, got {type(data).__name__}")
    content = {}
    for iid, attrs in data.items():
        if not isinstance(attrs, list):
            raise DatasetError(f"{path}: item {iid!r}: expected a list of attribute ids, got {attrs!r}")
        content[str(iid)] = ItemContent(None, content_tokens(values=[("attr", attrs)]))
    return content


def read_s3rec(path: PathLike, *, items: PathLike | None = None, attributes: PathLike | None = None,
               titles: bool = True, missing_items: MissingItems = "error",
               report: dict | None = None) -> tuple[ItemTable, SequenceData]:
    """S3-Rec / P5 sequences: lines 'user item item ...' in time order (X.txt, .gz accepted), with
    item content from a JSONL item table (item_id, title, attributes; preferred) or X_item2attributes.json
    (attribute ids; used when attributes= is given without items=). titles=false drops the JSONL titles,
    leaving items their attributes only. Input = the directory (files found by name) or the sequence file."""
    p = existing(path, "input")
    if p.is_dir():
        attr = find(p, ["*_item2attributes.json", "*_item2attributes.json.gz"], "item2attributes",
                     required=False)
        stem = attr.name.split("_item2attributes")[0] if attr else None
        seq = (find(p, [f"{stem}.txt", f"{stem}.txt.gz"], f"{stem}.txt sequence") if stem
               else find(p, ["*.txt", "*.txt.gz"], "sequence (.txt)"))
    else:  # the sequence file: its X_item2attributes.json sibling, if any
        seq, attr = p, sibling(p, ".txt", ["_item2attributes.json", "_item2attributes.json.gz"])
    assert seq is not None
    jsonl = find(seq.parent, ["*.jsonl", "*.jsonl.gz"], "JSONL item table", required=False)
    # An explicit attributes= file is what the user asked for, even beside a JSONL item table.
    jsonl = existing(items, "item table") if items else None if attributes else jsonl
    attr = existing(attributes, "item2attributes file") if attributes else attr
    users: list[str] = []
    flat: list[str] = []
    lines: list[int] = []
    first_line: dict[str, int] = {}
    for n, line in iter_lines(seq):
        parts = line.split()
        if len(parts) < 2:
            raise DatasetError(f"{seq}:{n}: user {parts[0]!r} has no items (expected 'user item item ...')")
        if parts[0] in first_line:
            raise DatasetError(
                f"{seq}:{n}: user {parts[0]!r} appears again (first on line {first_line[parts[0]]})")
        first_line[parts[0]] = n
        users += [parts[0]] * (len(parts) - 1)
        flat += parts[1:]
        lines += [n] * (len(parts) - 1)
    content_path = jsonl or attr
    content = (None if content_path is None else _items_jsonl(jsonl, titles=titles) if jsonl
               else _item2attributes(attr))
    data = Interactions(strings(users), strings(flat), None, row_where(seq, np.asarray(lines)), str(seq))
    if report is not None:
        report["files"] = [str(x) for x in (seq, content_path) if x]
    return build(data, content, content_file=str(content_path), missing_items=missing_items, report=report)
