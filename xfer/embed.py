"""Embeddings from any named layer, their files, and t-SNE maps.

CLI::

    python -m xfer.embed --bundle outputs/.../bundle --data hotel_delhi --layer hidden \\
        --split test --out hotel_hidden.parquet            # or .npy (+ .ids.npy/.labels.npy)

``--bundle`` also takes an MLflow run id, ``runs:/<id>/bundle`` or a ``models:/`` URI.
"""
from __future__ import annotations

import argparse
import logging
from typing import Sequence

import pandas as pd

from .errors import cli_main
from .features import layer_embeddings, write_embeddings

log = logging.getLogger(__name__)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    from .tracking import resolve_bundle, tracking_uri

    ap = argparse.ArgumentParser(prog="python -m xfer.embed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, help="bundle dir, MLflow run id or runs:/<id>/bundle")
    ap.add_argument("--data", default="hotel", help="a conf/data config name")
    ap.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    ap.add_argument("--layer", default="hidden")
    ap.add_argument("--out", required=True, help="output .parquet or .npy")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("overrides", nargs="*", help="Hydra-style overrides of the data config, e.g. data.limit=100")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .config import compose_config
    from .data import load_dataset

    cfg = compose_config([f"data={args.data}", *args.overrides])
    bundle = resolve_bundle(args.bundle, args.tracking_uri or tracking_uri(cfg["tracking"]["uri"]))
    ds = load_dataset(cfg["data"], seed=args.seed)
    frame = pd.concat(ds.splits().values()) if args.split == "all" else ds.splits()[args.split]
    vectors = layer_embeddings(bundle.net, bundle.sequences(frame), args.layer)
    out = write_embeddings(args.out, vectors, frame["id"], frame["label"])
    print(f"{out}: {vectors.shape[0]} x {vectors.shape[1]} from layer {args.layer!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
