"""``raygr evaluate``: full-ranking metrics of a checkpoint, without Ray.

    raygr evaluate --checkpoint runs/joint --data datasets/synthetic            # runs/joint/checkpoints/best
    raygr evaluate --checkpoint runs/joint/checkpoints/latest --data datasets/synthetic --split valid \\
        --set train.beam_size=50 --output eval.json

Prints retrieval-only and retrieve-then-rank Recall/NDCG@{5,10,20} beside the popularity baseline,
and the code health (utilisation, perplexity, collision rate, decoding errors).
"""

from __future__ import annotations

import argparse
import json
import time


def _evaluate(args: argparse.Namespace) -> int:
    from raygr.data.dataset import check_files, load_dataset, read_manifest
    from raygr.training.checkpoint import check_compatible, read_checkpoint, write_json_atomic

    start = time.perf_counter()
    # Bad paths, a damaged dataset and a checkpoint of another dataset fail here, before torch is imported.
    info = read_checkpoint(args.checkpoint)
    manifest = read_manifest(args.data)
    check_files(args.data, manifest)
    check_compatible(info, info.config, manifest)

    from raygr.training.report import evaluate_checkpoint, format_rows, popularity_metrics

    dataset = load_dataset(args.data)
    ev = evaluate_checkpoint(info.path, dataset, split=args.split, device=args.device, overrides=args.set,
                             num_users=args.num_users)
    ev["baselines"] = {"popularity": popularity_metrics(dataset, info.config, args.split)}
    main_label = "retrieve-then-rank" if ev["main_mode"] == "retrieve_then_rank" else f"{ev['preset']}"
    print(f"{ev['preset']} checkpoint {ev['checkpoint']} (epoch {ev['epoch']}) on {ev['dataset']}, "
          f"{args.split} split, {ev['num_users']:,} users")
    print(format_rows([("popularity", ev["baselines"]["popularity"]),
                       ("retrieval only", ev["retrieval_only"]),
                       (main_label, ev["main"])]))
    cb = ev["codebook"]
    if cb:
        print("codes: utilisation " + ", ".join(f"{u:.2f}" for u in cb["utilization"])
              + " | perplexity " + ", ".join(f"{p:.0f}" for p in cb["perplexity"])
              + f" | collision rate {cb['collision_rate']:.3f} | unreachable items {cb['unreachable_items']}")
    d = ev["decoding"]
    ranked = f"| ranker: {ev['candidates_per_user']:.0f} candidates per user " if ev["candidates_per_user"] else ""
    print(f"decoding: invalid {d['invalid_rate']:.4f} | duplicate {d['duplicate_rate']:.4f} {ranked}"
          f"| {time.perf_counter() - start:.1f} s")
    if args.output:
        write_json_atomic(args.output, ev)
        print(f"wrote {args.output}")
    else:
        print(json.dumps({"main": ev["main"], "retrieval_only": ev["retrieval_only"]}))
    return 0


def add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="full-ranking metrics and code health of a checkpoint (no Ray needed)",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint directory, or a run directory (uses its checkpoints/best)")
    p.add_argument("--data", required=True, help="the prepared dataset directory the checkpoint was trained on")
    p.add_argument("--split", choices=["test", "valid"], default="test")
    p.add_argument("--num-users", type=int, default=0, help="evaluate a seeded subset of users (0 = all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="evaluation-time config override, e.g. train.beam_size=50 (repeatable)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--output", help="also write the numbers to this JSON file")
    p.set_defaults(func=_evaluate)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    add_evaluate(subparsers)
