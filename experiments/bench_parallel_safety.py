"""Parallel safety of sweeps on the sqlite MLflow store: sweeps of N jobs on 2 workers, repeated,
on xfer's joblib launcher and on a local Ray head, all into one store per launcher; counts runs
started / finished / lost, "database is locked" errors and unusable-store errors (the races
MLflow's select-then-insert writes lose: "cannot use the MLflow store (UNIQUE constraint ...)").

    python experiments/bench_parallel_safety.py [--repeats 3] [--jobs 12] [--launchers joblib ray]

Each job is a small but complete training run (data, preprocessing, 1 epoch, test metrics,
bundle, pyfunc model, training curve: every kind of MLflow write a real job makes), and all of a
sweep's jobs start at once. Writes experiments/results/parallel_safety.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOB = ["+experiment=imdb_base", "model=pool", "data.limit=200", "trainer.max_epochs=1",
       "model.encoder.bigram_buckets=1000", "trainer.progress=false"]
ERRORS = {"lock_errors": "database is locked", "store_errors": "cannot use the MLflow store"}


def main() -> None:
    from xfer.provenance import provenance

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--launchers", nargs="+", default=["joblib", "ray"], choices=["joblib", "ray"])
    args = ap.parse_args()
    prov = provenance()
    out = {}
    for launcher in args.launchers:
        with tempfile.TemporaryDirectory(prefix="parallel_safety_") as tmp:
            out[launcher] = measure(Path(tmp), launcher, args)
    total = {k: sum(o[k] for o in out.values()) for k in ("runs_started", "runs_finished", "runs_lost", *ERRORS)}
    dest = ROOT / "experiments" / "results" / "parallel_safety.json"
    record = {**prov, "command": "python experiments/bench_parallel_safety.py " + " ".join(sys.argv[1:]),
              "jobs_per_sweep": args.jobs, "workers": 2, "repeats": args.repeats, **total, "launchers": out,
              "target": f"{args.jobs * args.repeats * len(out)}/{args.jobs * args.repeats * len(out)} finished, "
                        "0 lost, 0 store errors"}
    dest.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(total))
    print(dest)


def start_ray(tmp: Path) -> tuple[list[str], dict, str]:
    """A local Ray head (2 CPUs), as tests/test_ray.py starts it: (overrides, env, ray binary)."""
    from xfer.servers import free_port

    ray = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    subprocess.run([ray, "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
                    "--object-store-memory", "100000000", "--temp-dir", ray_tmp], env=env, check=True,
                   capture_output=True)
    return (["hydra/launcher=ray", f"hydra.launcher.ray.init.address=127.0.0.1:{port}",
             f"hydra.sweep.dir={tmp / 'multirun'}/${{now:%H-%M-%S-%f}}"], {**env, "XFER_RAY_TMP": ray_tmp}, ray)


def measure(store: Path, launcher: str, args: argparse.Namespace) -> dict:
    import mlflow

    uri = f"sqlite:///{store / 'mlflow.db'}"
    seeds = ",".join(str(i) for i in range(args.jobs))
    extra, env, ray = (["hydra.launcher.n_jobs=2"], dict(os.environ), None)  # Ray: 2 CPUs on its head
    if launcher == "ray":
        extra, env, ray = start_ray(store)
    sweeps = []
    try:
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "xfer.run", "-m", f"tracking.uri={uri}", *extra, *JOB,
                                   f"seed={seeds}"], cwd=store, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            log = proc.stdout + proc.stderr
            client = mlflow.MlflowClient(uri)
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=50000)
            parents = sorted((r for r in runs if r.data.tags.get("xfer.task") == "sweep"),
                             key=lambda r: r.info.start_time)
            if not parents:
                raise SystemExit(f"{launcher}: the sweep made no parent run (exit {proc.returncode}):\n{log[-3000:]}")
            parent = parents[-1]
            jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
            complete = [r for r in jobs if r.info.status == "FINISHED" and "test_roc_auc" in r.data.metrics
                        and r.data.tags.get("xfer.model_uri")]
            sweeps.append({"sweep": rep + 1, "exit_code": proc.returncode, "wall_seconds": round(wall, 1),
                           "runs_started": len(jobs), "runs_finished": len(complete),
                           "runs_lost": args.jobs - len(complete),
                           **{k: sum(text in line for line in log.splitlines()) for k, text in ERRORS.items()},
                           "parent_status": parent.info.status,
                           "distinct_job_numbers": len({r.data.tags.get("xfer.job_num") for r in jobs})})
            print(launcher, sweeps[-1], flush=True)
    finally:
        if ray:
            subprocess.run([ray, "stop", "--force"], env=env, capture_output=True)
            shutil.rmtree(env["XFER_RAY_TMP"], ignore_errors=True)
    total = {k: sum(s[k] for s in sweeps) for k in ("runs_started", "runs_finished", "runs_lost", *ERRORS)}
    return {**total, "sweeps": sweeps}


if __name__ == "__main__":
    main()
