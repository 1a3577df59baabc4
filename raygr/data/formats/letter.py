"""The ``letter`` format: LETTER / LC-Rec JSON, X.inter.json {user: [items]} + optional X.item.json."""

from __future__ import annotations

from raygr.data.dataset import DatasetError, ItemTable, SequenceData
from raygr.data.formats.content import content_from_record
from raygr.data.formats.files import PathLike, existing, find, load_json, sibling
from raygr.data.formats.interactions import Interactions, MissingItems, build, strings


def read_letter(path: PathLike, *, description: bool = False, missing_items: MissingItems = "error",
                report: dict | None = None) -> tuple[ItemTable, SequenceData]:
    """LETTER / LC-Rec JSON: X.inter.json {user: [items in time order]} + optional X.item.json(.gz)
    {item: {title, description, brand, categories}}; description words only with description=true."""
    p = existing(path, "input")
    inter = find(p, ["*.inter.json", "*.inter.json.gz"], "LETTER .inter.json") if p.is_dir() else p
    assert inter is not None
    item_path = sibling(inter, ".inter.json", [".item.json", ".item.json.gz"])
    data = load_json(inter)
    if not isinstance(data, dict):
        raise DatasetError(f"{inter}: expected an object {{user: [item ids]}}, got {type(data).__name__}")
    users: list[str] = []
    flat: list[str] = []
    for uid, seq in data.items():
        if not isinstance(seq, list):
            raise DatasetError(
                f"{inter}: user {uid!r}: expected a list of item ids, got {type(seq).__name__}")
        if not seq:
            raise DatasetError(f"{inter}: user {uid!r} has an empty sequence")
        for k, x in enumerate(seq):
            if isinstance(x, bool) or not isinstance(x, int | str):
                raise DatasetError(f"{inter}: user {uid!r}, position {k}: an item id must be an integer "
                                   f"or a string, got {x!r}")
        users += [str(uid)] * len(seq)
        flat += [str(x) for x in seq]
    starts: dict[str, int] = {}
    for r, uid in enumerate(users):
        starts.setdefault(uid, r)

    def where(r: int) -> str:
        return f"{inter}: user {users[r]!r}, position {r - starts[users[r]]}"

    content = None
    if item_path:
        raw = load_json(item_path)
        if not isinstance(raw, dict):
            raise DatasetError(
                f"{item_path}: expected an object {{item: {{title, ...}}}}, got {type(raw).__name__}")
        content = {str(k): content_from_record(v, f"{item_path}: item {k!r}", description)
                   for k, v in raw.items()}
    if report is not None:
        report["files"] = [str(x) for x in (inter, item_path) if x]
    return build(Interactions(strings(users), strings(flat), None, where, str(inter)), content,
                 content_file=str(item_path), missing_items=missing_items, report=report)
