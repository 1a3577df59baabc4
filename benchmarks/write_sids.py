"""Write the content SIDs a config computes (``model.sid_source=content``) as a SID file, so another run
(a tiger run, say) trains on exactly those SIDs with ``model.sid_source=file``.

    python -m benchmarks.write_sids --config jobs/configs/beauty_joint.yaml --data BEAUTY_WL \\
        --set model.sid_rec_weight=1 --set model.sid_collab_weight=0 \\
        --set train.init_from=runs/beauty-sasrec --out /tmp/beauty-rec-sids.json
"""

from __future__ import annotations

import argparse

from raygr.config import load_config
from raygr.data.dataset import load_dataset
from raygr.data.sid_file import load_sids, write_sids
from raygr.training.factory import semantic_sids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    cfg = load_config(args.config, ["model.sid_source=content", *args.set])
    ds = load_dataset(args.data)
    codes = semantic_sids(cfg, ds)
    write_sids(args.out, ds.items.item_id, codes)
    assert (load_sids(args.out, ds.items.item_id) == codes).all()
    print(f"wrote {args.out}: {len(codes)} items, {codes.shape[1]} levels")


if __name__ == "__main__":
    main()
