"""Features from any named layer of a network: per-review vectors, their files, t-SNE maps.
Library code (the ``python -m xfer.embed`` command wraps it)."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .encode import inference_batches
from .errors import ConfigError
from .models import layer_names


def layer_embeddings(net, seqs: Sequence, layer: str, batch_size: int | None = None) -> np.ndarray:
    """One vector per review from ``layer`` (sequence layers mean-pooled over valid tokens)."""
    if layer not in layer_names(net):
        raise ConfigError(f"layer: unknown layer {layer!r} (one of {', '.join(layer_names(net))})")
    out: np.ndarray | None = None
    for inputs, _, idx in inference_batches(seqs, batch_size):
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
    from .plots import save_figure

    return save_figure(fig, path)
