"""A 3 x 3 x 3 transfer sweep (schedule x n_train x seed) on hotel_delhi with 2 parallel
workers, in a fresh MLflow store, then a check of what the store holds.

    python experiments/run_sweep_3x3x3.py [--store DIR] [-- extra overrides]

The store is a fresh temporary directory unless ``--store`` names an empty one to keep.

The base (the default `imdb_base` CNN) is not in the fresh store, so the sweep must train it,
and exactly once: the first job takes the base lock and trains it, the others wait and reuse
it. Writes experiments/results/sweep_3x3x3.json: jobs, runs_started / runs_finished / runs_failed,
bases_trained, the parent's status and counts, wall time, and any "database is locked" lines.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OVERRIDES = ["+experiment=hotel_delhi_transfer", "schedule=frozen,gradual,discriminative",
             "data.n_train=100,500,1000", "seed=0,1,2", "transfer.methods=[transfer]",
             "transfer.tsne.enabled=false", "trainer.progress=false", "hydra.launcher.n_jobs=2"]


def expected_jobs(overrides: list[str]) -> int:
    """Jobs of a Hydra sweep: the product of the comma-separated values' counts."""
    n = 1
    for o in overrides:
        key, _, value = o.partition("=")
        if value and not key.startswith("hydra.") and "," in value and not value.startswith("["):
            n *= len(value.split(","))
    return n


def main() -> None:
    from xfer.provenance import provenance

    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=None, help="an empty directory to keep the store in (default: temporary)")
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args()
    prov = provenance()
    with tempfile.TemporaryDirectory(prefix="sweep_3x3x3_") as tmp:
        out = run(Path(args.store or tmp), args.extra)
    dest = ROOT / "experiments" / "results" / "sweep_3x3x3.json"
    dest.write_text(json.dumps({**prov, **out}, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "mean_test_roc_auc"}, indent=2))
    print(dest)


def run(store: Path, extra: list[str]) -> dict:
    if store.exists() and any(store.iterdir()):
        raise SystemExit(f"{store}: not empty (the check needs a fresh store)")
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "xfer.run", "-m", f"tracking.uri={uri}", *OVERRIDES, *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=store, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (store / "sweep.log").write_text(proc.stdout + proc.stderr)

    import mlflow

    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=50000)
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    bases = [r for r in runs if r.data.tags.get("xfer.task") == "train"]
    transfers = [r for r in runs if r.data.tags.get("xfer.method", "").startswith("transfer_")]
    log = proc.stdout + proc.stderr
    n_jobs = expected_jobs([*OVERRIDES, *extra])
    return {
        "sweep_command": " ".join(["python", "-m", "xfer.run", "-m", *OVERRIDES, *extra]),
        "exit_code": proc.returncode, "wall_seconds": wall, "jobs": n_jobs,
        "runs_started": len(jobs), "runs_finished": sum(r.info.status == "FINISHED" for r in jobs),
        "runs_failed": sum(r.info.status == "FAILED" for r in jobs),
        "runs_lost": n_jobs - sum(r.info.status == "FINISHED" for r in jobs),
        "bases_trained": len(bases), "transfer_runs_finished": sum(r.info.status == "FINISHED" for r in transfers),
        "parent_status": parent.info.status,
        "parent_metrics": {k: parent.data.metrics.get(k) for k in ("jobs_finished", "jobs_failed", "jobs_unfinished")},
        "database_locked_lines": sum("database is locked" in line for line in log.splitlines()),
        "distinct_job_numbers": len({r.data.tags.get("xfer.job_num") for r in jobs}),
        "mean_test_roc_auc": {f"{s}/n{n}": round(sum(v) / len(v), 4) for (s, n), v in _group(transfers).items()},
    }

def _group(runs):
    groups: dict[tuple, list] = {}
    for r in runs:
        if r.info.status == "FINISHED":
            key = (r.data.tags["xfer.method"], r.data.tags.get("xfer.n_train"))
            groups.setdefault(key, []).append(r.data.metrics["test_roc_auc"])
    return dict(sorted(groups.items()))


if __name__ == "__main__":
    main()
