"""Peak memory (RSS) of the default commands as users run them, each in its own child process,
one after the other into one fresh store:

1. ``+experiment=imdb_base`` (trains the base);
2. ``+experiment=hotel_transfer`` (the default: 5 splits, base reused);
3. a ``-m`` sweep (``+experiment=hotel_delhi_transfer schedule=frozen,gradual data.n_train=500``,
   2 joblib workers): the largest worker;
4. ``+experiment=hotel_transfer`` on a stand-in of the full hotel challenge file (38,932 rows: the
   bundled sample resampled with replacement, same schema and length distribution; the full file
   is not on this machine), 1 split and 2 epochs per network (the peak is reached in the first
   epoch and does not grow with more).

    python experiments/bench_memory.py [--only imdb_base hotel_transfer sweep_worker full_size_standin]

Writes experiments/results/memory.json: ``peak_rss_mb`` and wall time per command, with provenance.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FULL_ROWS = 38_932
TARGET_MB = 2560
#: runs a command in a grandchild and prints the peak RSS (KiB) of its process tree's largest process
WRAP = ("import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(p.stderr[-4000:] if p.returncode else '')\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(p.returncode)\n")


def standin(work: Path) -> Path:
    from xfer.data import data_dir

    sample = pd.read_csv(data_dir() / "hotel" / "hotel_reviews_sample.csv.gz")
    frame = sample.sample(n=FULL_ROWS, replace=True, random_state=0).reset_index(drop=True)
    frame["User_ID"] = [f"id{i}" for i in range(len(frame))]
    src = work / "hotel_standin.csv.gz"
    frame.to_csv(src, index=False, compression="gzip")
    return src


def commands(work: Path) -> dict[str, list[str]]:
    quiet = ["trainer.progress=false"]
    return {
        "imdb_base": ["+experiment=imdb_base", *quiet],
        "hotel_transfer": ["+experiment=hotel_transfer", *quiet],
        "sweep_worker": ["-m", "+experiment=hotel_delhi_transfer", "schedule=frozen,gradual", "data.n_train=500",
                         *quiet],
        "full_size_standin": ["+experiment=hotel_transfer", f"data.files.all={standin(work)}", "transfer.repeats=1",
                              "trainer.max_epochs=2", *quiet],
    }


def measure(name: str, overrides: list[str], work: Path) -> dict:
    store = [f"tracking.uri=sqlite:///{work / 'mlflow.db'}", f"tracking.artifact_location={work / 'artifacts'}"]
    flags = [o for o in overrides if o.startswith("-")]  # Hydra's flags (-m) before the overrides
    cmd = [sys.executable, "-c", WRAP, sys.executable, "-m", "xfer.run", *flags, *store,
           *[o for o in overrides if not o.startswith("-")]]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name}: {proc.stderr[-3000:]}")
    peak = int(proc.stdout.strip().splitlines()[-1]) / 1024
    command = "python -m xfer.run " + " ".join(o.replace(str(work), "<temp>") for o in overrides)
    print(f"{name}: peak RSS {peak:.0f} MB ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"command": command, "peak_rss_mb": peak, "wall_seconds": time.perf_counter() - t0}


def main() -> None:
    from xfer.provenance import provenance

    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="+", default=None)
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "memory.json"))
    ap.add_argument("--store", default=None, help="keep the store in this directory (default: a temporary one)")
    args = ap.parse_args()
    prov = provenance()
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        work = Path(args.store or tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs = {name: measure(name, cmd, work) for name, cmd in commands(work).items()
                if args.only is None or name in args.only}
    out = {**prov, "target_mb": TARGET_MB, "commands": runs,
           "within_target": all(r["peak_rss_mb"] <= TARGET_MB for r in runs.values())}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: round(v["peak_rss_mb"]) for k, v in runs.items()}))


if __name__ == "__main__":
    main()
