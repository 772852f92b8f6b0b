"""Parallel safety of sweeps on the sqlite MLflow store: 8 jobs on 2 joblib workers, 5 times,
all into one store; counts runs started / finished / lost and "database is locked" errors.

    python experiments/bench_parallel_safety.py [--repeats 5] [--jobs 8] [--store DIR]

Each job is a small but complete training run (data, preprocessing, 1 epoch, test metrics,
bundle, pyfunc model, training curve: every kind of MLflow write a real job makes).
Writes experiments/results/parallel_safety.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOB = ["+experiment=imdb_base", "model=pool", "data.limit=200", "trainer.max_epochs=1",
       "model.encoder.bigram_buckets=1000", "trainer.progress=false", "hydra.launcher.n_jobs=2"]


def main() -> None:
    from xfer.provenance import provenance

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--store", default=None, help="a directory to keep the store in (default: temporary)")
    args = ap.parse_args()
    prov = provenance()
    with tempfile.TemporaryDirectory(prefix="parallel_safety_") as tmp:
        store = Path(args.store or tmp)
        shutil.rmtree(store, ignore_errors=True)
        store.mkdir(parents=True)
        out = measure(store, args)
    dest = ROOT / "experiments" / "results" / "parallel_safety.json"
    dest.write_text(json.dumps({**prov, **out}, indent=2) + "\n")
    print(dest)


def measure(store: Path, args: argparse.Namespace) -> dict:
    uri = f"sqlite:///{store / 'mlflow.db'}"
    seeds = ",".join(str(i) for i in range(args.jobs))
    sweeps = []
    import mlflow

    for rep in range(args.repeats):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "xfer.run", "-m", f"tracking.uri={uri}", *JOB, f"seed={seeds}"],
                              cwd=store, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        log = proc.stdout + proc.stderr
        client = mlflow.MlflowClient(uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=50000)
        parents = sorted((r for r in runs if r.data.tags.get("xfer.task") == "sweep"), key=lambda r: r.info.start_time)
        parent = parents[-1]
        jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        complete = [r for r in jobs if r.info.status == "FINISHED" and "test_roc_auc" in r.data.metrics
                    and r.data.tags.get("xfer.model_uri")]
        sweeps.append({"sweep": rep + 1, "exit_code": proc.returncode, "wall_seconds": round(wall, 1),
                       "runs_started": len(jobs), "runs_finished": len(complete),
                       "runs_lost": args.jobs - len(complete),
                       "lock_errors": sum("database is locked" in line for line in log.splitlines()),
                       "parent_status": parent.info.status,
                       "distinct_output_dirs": len({r.data.tags.get("xfer.job_num") for r in jobs})})
        print(sweeps[-1], flush=True)
    total = {k: sum(s[k] for s in sweeps) for k in ("runs_started", "runs_finished", "runs_lost", "lock_errors")}
    print(json.dumps(total), flush=True)
    return {"jobs_per_sweep": args.jobs, "workers": 2, "sweeps": sweeps, **total,
            "target": f"{args.jobs * args.repeats}/{args.jobs * args.repeats} finished, 0 lost"}

if __name__ == "__main__":
    main()
