"""Train the IMDB base network with each encoder on the full data and record the results.

    python experiments/run_imdb_base.py [--encoders pool cnn bilstm gru] [overrides ...]

Each encoder runs `+experiment=imdb_base model=<encoder>` in-process with tracking off
(the figures come from the same code path as `python -m xfer.run`), on the official
25k/25k split. Writes experiments/results/imdb_base.json (metric names as in MLflow).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from xfer.config import compose_config
from xfer.jobs import run_task

#: per-encoder settings that keep each inside the 10-minute budget on 2 cores
PER_ENCODER = {
    "pool": [],
    "cnn_ngrams": [],  # the imdb_base defaults
    "cnn": ["trainer.max_len=400", "trainer.max_epochs=3"],
    "bilstm": ["trainer.max_len=300", "trainer.max_epochs=2"],
    "gru": ["trainer.max_len=300", "trainer.max_epochs=2"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoders", nargs="+", default=list(PER_ENCODER))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "imdb_base.json"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    runs = {r["encoder"]: r for r in previous.get("runs", [])}
    for enc in args.encoders:
        overrides = ["+experiment=imdb_base", f"model={enc}", "tracking.enabled=false", "trainer.progress=false",
                     *PER_ENCODER.get(enc, []), *args.overrides]
        cfg = compose_config(overrides)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = run_task(cfg, tmp)
        m = result["metrics"]
        runs[enc] = {"encoder": enc, "command": "python experiments/run_imdb_base.py " + " ".join(sys.argv[1:]),
                     "date": time.strftime("%Y-%m-%d"), "overrides": overrides[1:], "test_accuracy": m["test_accuracy"],
                     "test_roc_auc": m["test_roc_auc"], "test_f1": m["test_f1"], "train_seconds": m["train_seconds"],
                     "preprocess_seconds": m["preprocess_seconds"], "wall_seconds": time.perf_counter() - t0,
                     "best_epoch": m["best_epoch"], "epochs_run": len(result["history"]),
                     **{k: v for k, v in m.items() if "_branch_" in k}, "seed": cfg["seed"],
                     "examples_per_second": max(h["examples_per_second"] for h in result["history"])}
        print(json.dumps(runs[enc]), flush=True)
    record = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}",
              "command": "python experiments/run_imdb_base.py " + " ".join(sys.argv[1:]),
              "data": "IMDB official split: 22,500 train / 2,500 validation (seeded) / 25,000 test",
              "runs": [runs[k] for k in PER_ENCODER if k in runs] + [v for k, v in runs.items() if k not in PER_ENCODER]}
    out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
