"""Input formats: one reader per format, each returning ``(ItemTable, SequenceData)``.

    items, seqs = read_recbole("data/ml-100k")                 # .inter (+ .item); .gz accepted
    items, seqs = read_s3rec("data/amazon-beauty")             # Beauty.txt + attributes / titles
    items, seqs = read_table("events.parquet", user="uid", item="iid", time="ts", text=("title", "brand"))
    items, seqs, source = read("movielens", "data/ml-1m", {"min_rating": "4"})   # CLI-style options

Rules every reader follows, so that datasets from different formats look alike:

- Ids. Users get 0..U-1 and items 1..N (0 is padding) in the *natural order* of their original ids:
  numerically when every id is an integer (S3-Rec and MovieLens ids keep their order, item "1" -> 1),
  else by string. Natural order needs no ordered pass over the rows, so the Ray path
  (``raygr.distributed.prepare``) computes exactly the same mapping. Original ids are kept in
  ``ItemTable.item_id`` / ``SequenceData.user_id``.
- Items are the items with at least one interaction; item-table rows of other items are dropped and
  counted. An interaction whose item has no item-table row is an error, unless ``missing_items=empty``
  (the item is kept with no content).
- Order. Each user's interactions are sorted by timestamp, stably (ties keep file order). Formats with no
  timestamps (s3rec, letter) are in order already; their timestamps are the positions 0, 1, 2, ...
  Timestamps may be integers, decimals (sorted as given, stored floored to int64) or dates (stored as
  Unix seconds).
- Exact duplicate rows (same user, item and timestamp) are dropped and counted (``duplicates_dropped``
  in the report); a malformed row raises ``DatasetError`` naming the file, the line (or row) and the field.
- Content tokens, hashed later by the item encoder: ``title:<word>`` for each lowercased word of a title
  (``desc:<word>`` for descriptions, opt-in), and whole values as one token each: ``attr:<value>``,
  ``brand:<value>``, ``cat:<value>``, ``genre:<value>``, other columns ``<column>:<value>``. Values are
  lowercased with whitespace collapsed; a list gives one token per element; duplicates are dropped.

Readers take ``report=`` (a dict they fill with counts: files, rows, duplicates dropped, ...), which
``prepare`` stores as the manifest's ``source``.

Modules: one per format (``recbole``, ``s3rec``, ``letter``, ``movielens``, ``table``); ``registry``
(formats by name, their command-line options, ``read``, the synthetic generator as a format); and the
pieces the readers share: ``files`` (opening and finding input files), ``content`` (content tokens),
``ids`` (``IdMap``), ``timestamps`` (parsing and sort keys) and ``interactions`` (rows -> the canonical
``(ItemTable, SequenceData)``).
"""

from raygr.data.formats.content import (
    ItemContent,
    column_prefix,
    content_from_record,
    content_tokens,
    is_word_column,
    words,
)
from raygr.data.formats.files import PathLike, iter_lines, load_json, open_text
from raygr.data.formats.ids import IdMap, check_ids
from raygr.data.formats.interactions import (
    Interactions,
    MissingItems,
    build,
    csr_from_sorted,
    item_table,
    sort_interactions,
)
from raygr.data.formats.letter import read_letter
from raygr.data.formats.movielens import ML100K_GENRES, read_movielens
from raygr.data.formats.recbole import read_recbole
from raygr.data.formats.registry import READERS, coerce_options, options_help, read, read_synthetic
from raygr.data.formats.s3rec import read_s3rec
from raygr.data.formats.table import TableSpec, content_from_table, read_table, table_files, table_spec
from raygr.data.formats.timestamps import BadValue, TimeKind, merge_time_kinds, read_time

__all__ = [
    # reading by format name, and the command-line options of each format
    "READERS", "read", "options_help", "coerce_options",
    # one reader per format
    "read_recbole", "read_s3rec", "read_letter", "read_movielens", "read_table", "read_synthetic",
    "ML100K_GENRES", "TableSpec", "table_spec", "table_files",
    # the pieces shared by the readers (and the Ray path, raygr.distributed.prepare)
    "PathLike", "MissingItems", "open_text", "iter_lines", "load_json",
    "ItemContent", "words", "column_prefix", "is_word_column", "content_tokens", "content_from_record",
    "content_from_table", "IdMap", "check_ids", "TimeKind", "BadValue", "read_time", "merge_time_kinds",
    "Interactions", "build", "sort_interactions", "csr_from_sorted", "item_table",
]
