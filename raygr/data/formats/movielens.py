"""The ``movielens`` format: MovieLens 1M (ratings.dat + movies.dat) and 100K (u.data + u.item)."""

from __future__ import annotations

from pathlib import Path

from raygr.data.dataset import DatasetError, ItemTable, SequenceData
from raygr.data.formats.content import ItemContent, content_tokens
from raygr.data.formats.files import PathLike, existing, split_lines
from raygr.data.formats.interactions import (
    Interactions,
    MissingItems,
    build,
    filter_rating,
    row_where,
    strings,
)

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
                 "Sci-Fi", "Thriller", "War", "Western"]


def _ml_items(path: Path, variant: str) -> dict[str, ItemContent]:
    """movies.dat ('id::title::Genre|Genre') or u.item ('id|title|date|video date|url|19 genre flags')."""
    if variant == "1m":
        cols, lines = split_lines(path, "::", 3, "MovieID::Title::Genres", encoding="latin-1")
        genres = [g.split("|") if g else [] for g in cols[2]]
    else:
        n = 5 + len(ML100K_GENRES)
        cols, lines = split_lines(path, "|", n, "id|title|release date|video release date|url|19 flags",
                                   encoding="latin-1")
        flags = list(zip(*cols[5:]))
        for r, fl in enumerate(flags):
            if any(f not in ("0", "1") for f in fl):
                raise DatasetError(
                    f"{path}:{lines[r]}: genre flags (fields 6-24) must be 0 or 1, got {'|'.join(fl)}")
        genres = [[g for g, f in zip(ML100K_GENRES, fl) if f == "1"] for fl in flags]
    content: dict[str, ItemContent] = {}
    for r, (iid, title) in enumerate(zip(cols[0], cols[1])):
        iid = iid.strip()
        if iid in content:
            raise DatasetError(f"{path}:{lines[r]}: movie {iid!r} appears again")
        content[iid] = ItemContent(title or None, content_tokens(title, [("genre", genres[r])]))
    return content


def read_movielens(path: PathLike, *, min_rating: float | None = None, missing_items: MissingItems = "error",
                   report: dict | None = None) -> tuple[ItemTable, SequenceData]:
    """MovieLens 1M (ratings.dat 'user::item::rating::time' + movies.dat) or 100K (u.data, tab-separated,
    + u.item); input = the directory or the ratings file. min_rating keeps ratings >= it."""
    p = existing(path, "input")
    if p.is_dir():
        ratings = next((p / n for n in ("ratings.dat", "ratings.dat.gz", "u.data", "u.data.gz")
                        if (p / n).is_file()), None)
        if ratings is None:
            raise DatasetError(f"{p} holds neither ratings.dat (MovieLens 1M) nor u.data (MovieLens 100K)")
    else:
        ratings = p
    variant = "100k" if ratings.name.startswith("u.data") else "1m"
    sep, item_names = (("\t", ["u.item", "u.item.gz"]) if variant == "100k"
                       else ("::", ["movies.dat", "movies.dat.gz"]))
    item_path = next((ratings.with_name(n) for n in item_names if ratings.with_name(n).is_file()), None)
    cols, lines = split_lines(ratings, sep, 4, "user, item, rating, timestamp")
    where = row_where(ratings, lines)
    keep = None if min_rating is None else filter_rating(cols[2], min_rating, where, "rating")
    users, items, times = strings(cols[0]), strings(cols[1]), strings(cols[3])
    if keep is not None:
        users, items, times, lines = users.take(keep), items.take(keep), times.take(keep), lines[keep]
        where = row_where(ratings, lines)
    content = _ml_items(item_path, variant) if item_path else None
    if report is not None:
        report.update(files=[str(x) for x in (ratings, item_path) if x], variant=variant,
                      rows_filtered=0 if keep is None else len(cols[0]) - len(keep))
    return build(Interactions(users, items, times, where, str(ratings), time_field="timestamp"), content,
                 content_file=str(item_path), missing_items=missing_items, report=report)
