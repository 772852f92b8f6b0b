"""Transfer vs scratch vs CatBoost-on-embeddings vs TF-IDF+LR on hotel_delhi, by n_train.

    python experiments/run_delhi_comparison.py [--n-train 100 500 1000 0] [--seeds 0 1 2]
        [--schedules frozen gradual discriminative full] [overrides ...]

n_train 0 means the whole training split. Every job is `+experiment=hotel_delhi_transfer`
run in-process against a throwaway MLflow store, so the IMDB base is trained once (by its
fingerprint) and reused by every job. The test split is the same seeded 20 % for every
n_train of a seed. Writes experiments/results/hotel_delhi_comparison.json (one record per
method, n_train and seed) and experiments/hotel_delhi_comparison.md.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


from xfer.config import compose_config
from xfer.report import learning_curve_summary, learning_curve_table
from xfer.jobs import run_task
from xfer.tracking import make_tracker

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", nargs="+", type=int, default=[100, 500, 1000, 0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--schedules", nargs="+", default=["frozen", "gradual", "discriminative", "full"])
    ap.add_argument("--store", default=None, help="MLflow sqlite file (default: a temporary one)")
    ap.add_argument("--name", default="hotel_delhi_comparison")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="xfer-delhi-")
    store = args.store or os.path.join(tmp, "mlflow.db")
    records, started = [], time.perf_counter()
    for seed in args.seeds:
        for n in args.n_train:
            for i, sched in enumerate(args.schedules):
                methods = "[transfer,scratch,catboost_embeddings,tfidf_lr]" if i == 0 else "[transfer]"
                overrides = ["+experiment=hotel_delhi_transfer", f"seed={seed}", f"schedule={sched}",
                             f"transfer.methods={methods}", f"tracking.uri=sqlite:///{store}",
                             "trainer.progress=false", "transfer.save_bundle=false",
                             f"transfer.tsne.enabled={'true' if (seed, n, i) == (args.seeds[0], 0, 1) else 'false'}",
                             *([f"data.n_train={n}"] if n else []), *args.overrides]
                cfg = compose_config(overrides)
                out_dir = Path(tmp) / f"s{seed}-n{n}-{sched}"
                result = run_task(cfg, out_dir, make_tracker(cfg["tracking"]))
                gc.collect()  # each job holds several networks and optimizer states
                for r in result["records"]:
                    records.append({k: r[k] for k in ("method", "n_train", "seed", "test_roc_auc", "test_accuracy",
                                                      "test_f1", "train_seconds")})
                tsne = out_dir / "tsne_transferred.png"
                if tsne.exists():
                    for name in ("tsne_base.png", "tsne_transferred.png"):
                        (HERE / f"{args.name}_{name}").write_bytes((out_dir / name).read_bytes())
    summary = learning_curve_summary(records)
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
           "command": "python experiments/run_delhi_comparison.py " + " ".join(sys.argv[1:]),
           "wall_seconds": time.perf_counter() - started,
           "data": "hotel_delhi, happy = Rating >= 7, seeded stratified 70/10/20 train/val/test; n_train is a "
                   "stratified subset of the training split; the test split depends only on the seed",
           "records": records}
    (HERE / "results" / f"{args.name}.json").write_text(json.dumps(out, indent=2) + "\n")
    table = learning_curve_table(summary)
    (HERE / f"{args.name}.md").write_text(f"Command: `{out['command']}`\n\nMachine: {out['machine']}\n\n{table}")
    print(table)


if __name__ == "__main__":
    main()
