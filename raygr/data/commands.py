"""``raygr data prepare`` and ``raygr data describe``.

    raygr data prepare --format s3rec --input ../shared/data/amazon-beauty --output datasets/beauty
    raygr data prepare --format synthetic --output datasets/synth --option num_users=5000
    raygr data prepare --format table --input events.parquet --output datasets/events \\
        --option user=uid --option item=iid --option time=ts --option text=title,brand
    raygr data describe datasets/beauty
"""

from __future__ import annotations

import argparse
import time

from raygr.data.dataset import DatasetError
from raygr.data.formats import READERS, options_help

_COMMON_OPTIONS = """\
every format: name=NAME (dataset name in the manifest; default: the output directory's name)
dense column: embed=wordllama (256-d text embedding of each item's title and tokens, offline;
              pip install -e ".[text]") or vectors=FILE (.parquet item_id + vector, .npz item_id +
              vector, or .npy in items.parquet order; stored as given), vectors_unknown=error|ignore
table only:   use_ray=auto|true|false (Ray Data path; auto = inputs over ray_threshold_mb),
              ray_threshold_mb=256"""


def parse_options(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> dict; a missing '=' or a repeated key is an error."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DatasetError(f"--option {pair!r} must look like key=value (e.g. --option num_users=1000)")
        if key in out:
            raise DatasetError(f"--option {key} is given twice")
        out[key] = value.strip() or value  # a bare tab or space is a value (a delimiter), not padding
    return out


def _prepare(args: argparse.Namespace) -> int:
    from raygr.data.prepare import prepare

    start = time.perf_counter()
    m = prepare(args.format, args.input, args.output, options=parse_options(args.option),
                num_shards=args.num_shards, overwrite=args.overwrite)
    src = m["source"]
    print(f"prepared {args.output}: {m['num_users']:,} users, {m['num_items']:,} items, "
          f"{m['num_interactions']:,} interactions in {m['num_shards']} shards "
          f"({args.format}, {src.get('engine')}, {src.get('duplicates_dropped', 0):,} duplicates dropped) "
          f"in {time.perf_counter() - start:.1f} s")
    return 0


def _describe(args: argparse.Namespace) -> int:
    from raygr.data.prepare import describe

    print(describe(args.path, verify=args.verify))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="prepare and inspect datasets")
    sub = data.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser(
        "prepare", help="read an input format and write a prepared dataset directory",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read an input in one of the formats below and write a dataset directory (items.parquet, "
                    "users.parquet, sequences/part-*.parquet, manifest.json) atomically.",
        epilog=f"formats and their --option keys:\n{options_help()}\n\n{_COMMON_OPTIONS}")
    p.add_argument("--format", required=True, choices=list(READERS), help="input format")
    p.add_argument("--input", help="input file or directory (not needed for synthetic)")
    p.add_argument("--output", required=True, help="dataset directory to write")
    p.add_argument("--num-shards", type=int, default=8, help="sequence shard files (users by user_idx %% N)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a different raygr dataset in --output. Only a directory holding a raygr "
                        "manifest.json and nothing raygr did not write is ever replaced: a directory with "
                        "other files is refused, with or without --overwrite")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="format option, repeatable (see below)")
    p.set_defaults(func=_prepare)

    d = sub.add_parser("describe", help="summarise a prepared dataset directory")
    d.add_argument("path", help="dataset directory")
    d.add_argument("--verify", action="store_true",
                   help="also check every byte of every file against its checksum (without it: file list, "
                        "sizes, Parquet footers and schemas only)")
    d.set_defaults(func=_describe)
