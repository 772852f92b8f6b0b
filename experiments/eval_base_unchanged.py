"""How well does an IMDB base network do on hotel_delhi with no hotel labels at all?

    python experiments/eval_base_unchanged.py --store /tmp/dstore/mlflow.db [--seeds 0 1 2]

Every finished base run (tag xfer.task=train, IMDB data) in the MLflow store is applied
unchanged (its own IMDB output head) to the seeded hotel_delhi test splits. Writes
experiments/results/base_unchanged_hotel_delhi.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

from xfer.bundle import load_bundle
from xfer.config import compose_config
from xfer.data import load_dataset
from xfer.train import classification_metrics
from xfer.tracking import MlflowTracker


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = ap.parse_args()
    tracker = MlflowTracker(f"sqlite:///{args.store}", "xfer")
    data = compose_config(["data=hotel_delhi"])["data"]
    splits = {s: load_dataset(data, seed=s).test for s in args.seeds}
    records = []
    for run in tracker.find_runs("tags.`xfer.task` = 'train' and tags.`xfer.data` = 'imdb' "
                                 "and attributes.status = 'FINISHED'"):
        bundle = load_bundle(tracker.download_artifacts(run["run_id"], "bundle"))
        for seed, test in splits.items():
            m = classification_metrics(test["label"], bundle.predict_proba(test))
            records.append({"base_run": run["run_id"], "model": run["tags"].get("xfer.model"), "seed": seed,
                            "imdb_test_accuracy": run["metrics"].get("test_accuracy"),
                            **{f"test_{k}": v for k, v in m.items()}})
            print(json.dumps(records[-1]))
    out = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
           "command": "python experiments/eval_base_unchanged.py " + " ".join(sys.argv[1:]), "records": records}
    path = Path(__file__).resolve().parent / "results" / "base_unchanged_hotel_delhi.json"
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
