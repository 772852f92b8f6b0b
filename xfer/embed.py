"""Embeddings from any named layer, their files, and t-SNE maps.

CLI::

    python -m xfer.embed --bundle outputs/.../bundle --data hotel_delhi --layer hidden \\
        --split test --out hotel_hidden.parquet            # or .npy (+ .ids.npy/.labels.npy)

``--bundle`` also takes an MLflow run id, ``runs:/<id>/bundle`` or a ``models:/`` URI.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .tracking import resolve_bundle
from .errors import ConfigError, cli_main
from .models import layer_names
from .encode import INFERENCE_ROUND_TO, iter_batches

log = logging.getLogger(__name__)


def layer_embeddings(net, seqs: Sequence, layer: str, batch_size: int = 256) -> np.ndarray:
    """One vector per review from ``layer`` (sequence layers mean-pooled over valid tokens)."""
    if layer not in layer_names(net):
        raise ConfigError(f"layer: unknown layer {layer!r} (one of {', '.join(layer_names(net))})")
    out: np.ndarray | None = None
    for inputs, _, idx in iter_batches(seqs, None, batch_size, round_to=INFERENCE_ROUND_TO):
        vec = net.layer_outputs(*inputs)[layer].asnumpy()
        if out is None:
            out = np.zeros((len(seqs), vec.shape[1]), dtype=np.float32)
        out[idx] = vec
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def write_embeddings(path: str | Path, vectors: np.ndarray, ids: Sequence, labels: Sequence) -> Path:
    """``.parquet``: columns id, label, e0..eN; ``.npy``: the matrix plus ``.ids.npy``/``.labels.npy``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        frame = pd.DataFrame(vectors, columns=[f"e{i}" for i in range(vectors.shape[1])])
        frame.insert(0, "label", np.asarray(labels))
        frame.insert(0, "id", [str(i) for i in ids])
        frame.to_parquet(tmp, index=False)
    elif path.suffix == ".npy":
        with open(tmp, "wb") as f:
            np.save(f, vectors)
        np.save(path.with_suffix(".ids.npy"), np.asarray([str(i) for i in ids]))
        np.save(path.with_suffix(".labels.npy"), np.asarray(labels))
    else:
        raise ConfigError(f"{path}: output must end in .parquet or .npy")
    tmp.replace(path)
    return path


def tsne_plot(groups: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str,
              seed: int = 0, perplexity: float = 30.0) -> Path:
    """One t-SNE map of several domains' embeddings: colour = label, marker = domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    names = list(groups)
    X = np.concatenate([groups[n][0] for n in names])
    y = np.concatenate([groups[n][1] for n in names])
    dom = np.concatenate([[i] * len(groups[n][0]) for i, n in enumerate(names)])
    perp = min(perplexity, max(2.0, (len(X) - 1) / 3))
    xy = TSNE(n_components=2, perplexity=perp, random_state=seed, init="pca").fit_transform(X)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    markers, colours = ["o", "^", "s", "D"], {0: "#d62728", 1: "#1f77b4"}
    for i, n in enumerate(names):
        for lab in (0, 1):
            m = (dom == i) & (y == lab)
            ax.scatter(xy[m, 0], xy[m, 1], s=12, alpha=0.6, marker=markers[i % 4], c=colours[lab],
                       label=f"{n} / {'positive' if lab else 'negative'}", edgecolors="none")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8, markerscale=1.5)
    from .report import save_figure

    return save_figure(fig, path)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    from .tracking import tracking_uri

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
