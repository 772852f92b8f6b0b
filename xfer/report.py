"""Plots and tables made from training results; the report CLI reads runs through xfer.tracking."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from .errors import cli_main
from .plots import markdown_table, save_figure


# --------------------------------------------------------------------------- learning curves
#: what each branch of a two-branch network (``model.ngrams``) scores on its own
BRANCH_METRICS = ("test_encoder_branch_roc_auc", "test_encoder_branch_accuracy", "test_ngrams_branch_roc_auc",
                  "test_ngrams_branch_accuracy")
#: what self-training on the target did: the teacher's run counts the unlabelled reviews it scored
#: and those it was sure of (and, where n_train withheld the pool's labels, the share of its
#: pseudo-labels that agree with them); the student's run the pseudo-labelled rows it trained on
#: and their share of positives
SELF_TRAIN_METRICS = ("self_train_unlabelled", "self_train_pseudo_labelled", "self_train_pseudo_label_accuracy",
                      "pseudo_labelled", "pseudo_positive_share")
#: of SELF_TRAIN_METRICS, the shares (the others are counts)
SELF_TRAIN_SHARES = ("self_train_pseudo_label_accuracy", "pseudo_positive_share")


def runs_to_records(runs: Sequence[Mapping]) -> list[dict]:
    """MLflow child runs of transfer jobs (tags xfer.method / xfer.n_train / xfer.seed) -> records,
    one per (method, n_train, seed): the newest wins (``runs`` come newest first), so controls that
    several jobs of a sweep ran on the same split count once."""
    out, seen = [], set()
    for r in runs:
        tags, metrics = r["tags"], r["metrics"]
        method = tags.get("xfer.method")
        if not method or method == "comparison" or "test_roc_auc" not in metrics or "xfer.n_train" not in tags:
            continue
        key = (method, int(tags["xfer.n_train"]), int(tags.get("xfer.seed", 0)))
        if key in seen:
            continue
        seen.add(key)
        out.append({"method": method, "n_train": int(tags["xfer.n_train"]), "seed": int(tags.get("xfer.seed", 0)),
                    "test_roc_auc": float(metrics["test_roc_auc"]),
                    "test_accuracy": float(metrics.get("test_accuracy", float("nan"))), "run_id": r["run_id"],
                    # the branches of a network with an n-gram branch, where it has them
                    **{k: float(metrics[k]) for k in BRANCH_METRICS + SELF_TRAIN_METRICS if k in metrics}})
    return out


def learning_curve_summary(records: Sequence[Mapping]):
    """Mean, std and count of test ROC-AUC per (method, n_train)."""
    import pandas as pd

    frame = pd.DataFrame(records)
    return (frame.groupby(["method", "n_train"])["test_roc_auc"].agg(["mean", "std", "count"]).reset_index()
            .sort_values(["n_train", "mean"], ascending=[True, False]).reset_index(drop=True))


def learning_curve_table(summary) -> str:
    """Markdown table of a ``learning_curve_summary``."""
    rows = [{"n_train": int(r.n_train), "method": r.method, "seeds": int(r["count"]), "test_roc_auc": float(r["mean"]),
             "std": float(r["std"]) if r["count"] > 1 else 0.0} for _, r in summary.iterrows()]
    return markdown_table(rows, ["n_train", "method", "seeds", "test_roc_auc", "std"])


def self_training_table(records: Sequence[Mapping]) -> str:
    """Markdown table of what target self-training did per (method, n_train), means over seeds:
    the unlabelled reviews the teacher scored and was sure of (and how many of its pseudo-labels
    agree with withheld labels), the pseudo-labelled rows the student trained on and their share
    of positives; "" when no record has them."""
    import pandas as pd

    frame = pd.DataFrame([r for r in records if any(k in r for k in SELF_TRAIN_METRICS)])
    if frame.empty:
        return ""
    cols = [c for c in SELF_TRAIN_METRICS if c in frame]
    means = frame.groupby(["n_train", "method"])[cols].mean().reset_index()
    rows = [{"n_train": int(r.n_train), "method": r.method,
             **{c: (float(r[c]) if c in SELF_TRAIN_SHARES else round(float(r[c])))
                for c in cols if pd.notna(r[c])}} for _, r in means.iterrows()]
    for row in rows:  # no pseudo-labelled rows (no unlabelled pool): no share of positives either
        if row.get("pseudo_labelled") == 0:
            row.pop("pseudo_positive_share", None)
    return markdown_table(rows, ["n_train", "method", *cols])


def crossover(summary, method_prefix: str = "transfer", others=("scratch", "tfidf_lr")) -> dict[str, str]:
    """For each control: the smallest n_train from which the best transfer schedule no longer
    beats it (mean test ROC-AUC), or a sentence saying it wins everywhere measured."""
    result = {}
    ns = sorted(summary["n_train"].unique())
    for other in others:
        lost = []
        for n in ns:
            at = summary[summary["n_train"] == n]
            tr = at[at["method"].str.startswith(method_prefix)]["mean"]
            ctl = at[at["method"] == other]["mean"]
            if len(tr) and len(ctl) and tr.max() <= ctl.iloc[0]:
                lost.append(n)
        result[other] = (f"transfer stops beating {other} at n_train = {lost[0]}" if lost
                         else f"transfer beats {other} at every measured n_train ({', '.join(map(str, ns))})")
    return result


def labels_to_match(summary, method_prefix: str = "transfer", control: str = "tfidf_lr") -> list[dict]:
    """Data efficiency, as ULMFiT reports it: for each n_train, how many labels ``control`` needs to
    reach the best ``method_prefix`` method's mean test ROC-AUC, read off the control's own curve
    (linear in log n_train between measured points). ``labels`` is None when the control never gets
    there within the measured range; ``ratio`` is labels / n_train."""
    import numpy as np

    ctl = summary[summary["method"] == control].sort_values("n_train")
    xs, ys = np.log(ctl["n_train"].to_numpy(dtype=float)), ctl["mean"].to_numpy(dtype=float)
    out = []
    for n in sorted(summary["n_train"].unique()):
        at = summary[(summary["n_train"] == n) & summary["method"].str.startswith(method_prefix)]
        if at.empty or not len(xs):
            continue
        target, labels = float(at["mean"].max()), None
        if target <= ys[0]:
            labels = float(np.exp(xs[0]))
        for i in range(1, len(xs)):
            if labels is None and ys[i - 1] < target <= ys[i]:
                labels = float(np.exp(xs[i - 1] + (target - ys[i - 1]) / (ys[i] - ys[i - 1]) * (xs[i] - xs[i - 1])))
        out.append({"n_train": int(n), "test_roc_auc": target, "labels": None if labels is None else round(labels),
                    "ratio": None if labels is None else labels / n})
    return out


def labels_to_match_text(summary) -> str:
    """``labels_to_match`` as one sentence."""
    parts = [f"{x['n_train']}: {x['labels']:,} ({x['ratio']:.1f}x)" if x["labels"] is not None
             else f"{x['n_train']}: more than measured" for x in labels_to_match(summary)]
    return "labels TF-IDF + LR needs to match the best transfer schedule, at each n_train: " + "; ".join(parts)


def learning_curve_plot(summary, path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for method, part in summary.groupby("method"):
        part = part.sort_values("n_train")
        std = part["std"].fillna(0.0)
        ax.plot(part["n_train"], part["mean"], marker="o", label=method,
                linestyle="-" if method.startswith("transfer") else "--")
        ax.fill_between(part["n_train"], part["mean"] - std, part["mean"] + std, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training reviews (n_train, log scale)")
    ax.set_ylabel("test ROC-AUC (mean +- std over seeds)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m xfer.report --tracking-uri URI [--filter F] [--parent RUN_ID] --out DIR/NAME``"""
    import argparse
    import json
    import sys

    from .errors import XferError
    from .tracking import MlflowTracker

    ap = argparse.ArgumentParser(prog="python -m xfer.report", description="learning-curve report from MLflow runs")
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--experiment", default="xfer")
    ap.add_argument("--filter", default="", help="extra MLflow filter, e.g. \"tags.`xfer.data` = 'hotel_delhi'\"")
    ap.add_argument("--parent", default=None, help="log the report on this (sweep) run")
    ap.add_argument("--out", required=True, help="path prefix: writes <out>.png, <out>.md, <out>.json")
    ap.add_argument("--title", default="Transfer vs controls by labelled data")
    args = ap.parse_args(argv)
    tracker = MlflowTracker(args.tracking_uri, args.experiment)
    flt = "attributes.status = 'FINISHED' and tags.`xfer.task` = 'transfer'"
    records = runs_to_records(tracker.find_runs(f"{flt} and {args.filter}" if args.filter else flt))
    if not records:
        raise XferError(f"{tracker.uri}: no finished transfer runs match (experiment {args.experiment!r})")
    summary = learning_curve_summary(records)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = learning_curve_plot(summary, out.with_suffix(".png"), args.title)
    verdicts = crossover(summary)
    verdicts["labels_to_match_tfidf_lr"] = labels_to_match_text(summary)
    command = "python -m xfer.report " + " ".join(sys.argv[1:] if argv is None else argv)
    md = (f"Command: `{command}`\n\n" + "\n".join(f"- {v}" for v in verdicts.values()) + "\n\n"
          + learning_curve_table(summary)
          + f"\n![learning curve]({png.name})\n")
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "verdicts": verdicts,
                                                    "records": records}, indent=2) + "\n")
    if args.parent:
        parent = tracker.child()
        parent.run_id = args.parent
        for suffix in (".png", ".md", ".json"):
            parent.log_artifact(out.with_suffix(suffix))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
