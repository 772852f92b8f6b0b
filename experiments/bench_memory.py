"""Peak memory of +experiment=hotel_transfer at the size of the full hotel challenge file.

    python experiments/bench_memory.py --tracking-uri sqlite:////path/with/the/cnn/base/mlflow.db

The full file (38,932 rows) is not on this machine, so the script builds a stand-in of the same
row count and schema by resampling the bundled 499-row sample with replacement (review lengths and
categorical values keep their real distribution; the duplicated texts make the vocabulary
smaller than the real file's, which is capped at 60,000 tokens anyway). It runs the experiment as
a user would, in a child process, and reads the child's peak RSS with getrusage. To bound the run
time it does 1 seeded split and 2 epochs per network (peak memory is reached in the first epoch
and does not grow with more). The base must already be in the store (it is found by fingerprint).
Writes experiments/results/memory_hotel_transfer.json (peak_rss_mb).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FULL_ROWS = 38_932


def main() -> None:
    from xfer.data import data_dir

    ap = argparse.ArgumentParser()
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--rows", type=int, default=FULL_ROWS)
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "memory_hotel_transfer.json"))
    ap.add_argument("overrides", nargs="*", help="extra overrides for the job")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    sample = pd.read_csv(data_dir() / "hotel" / "hotel_reviews_sample.csv.gz")
    standin = sample.sample(n=args.rows, replace=True, random_state=0).reset_index(drop=True)
    standin["User_ID"] = [f"id{i}" for i in range(len(standin))]
    src = work / "hotel_standin.csv.gz"
    standin.to_csv(src, index=False, compression="gzip")
    overrides = ["+experiment=hotel_transfer", f"data.files.all={src}", "transfer.repeats=1",
                 "trainer.max_epochs=2", "trainer.progress=false", "transfer.tsne.enabled=true",
                 *args.overrides]
    cmd = [sys.executable, "-m", "xfer.run", f"tracking.uri={args.tracking_uri}", *overrides]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    if "Base: reused" not in proc.stdout + proc.stderr:
        raise SystemExit("the base was not reused: run imdb_base into this store first")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    table = (proc.stdout.split("| method |", 1)[1] if "| method |" in proc.stdout else "")
    out = {"command": " ".join(["python experiments/bench_memory.py --tracking-uri <store with the base>",
                                  *([f"--rows {args.rows}"] if args.rows != FULL_ROWS else []), *args.overrides]),
           "job": "python -m xfer.run " + " ".join(overrides), "rows": args.rows,
           "peak_rss_mb": peak, "target_mb": 3072, "wall_seconds": wall,
           "comparison_table": ("| method |" + table).strip() if table else None,
           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}}
    dest = Path(args.out)
    dest.write_text(json.dumps(out, indent=2))
    print(f"peak RSS {peak:.0f} MB over {wall:.0f} s -> {dest}")


if __name__ == "__main__":
    main()
