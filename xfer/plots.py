"""Figures and tables of results (matplotlib PNGs, markdown); no tracking."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence


def training_curve(history: Sequence[Mapping[str, float]], path: str | Path, title: str = "") -> Path:
    """Train loss and validation ROC-AUC/accuracy per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = list(range(1, len(history) + 1))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
    if "val_log_loss" in history[0]:
        ax1.plot(epochs, [h["val_log_loss"] for h in history], marker="o", label="val log loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    for key in ("val_roc_auc", "val_accuracy"):
        ax2.plot(epochs, [h[key] for h in history], marker="o", label=key)
    ax2.set_xlabel("epoch")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.set_xticks(epochs)
    fig.suptitle(title)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write (PNG, 100 dpi) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"
