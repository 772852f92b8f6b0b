"""Faults against the team store: a 12-job sweep on ``mlflow server`` + PostgreSQL (started by
``xfer.servers``, as the tests do) while the server is restarted twice and one job is killed
mid-training, then the same command with ``sweep.resume=<sweep id>``.

    python experiments/bench_team.py [--jobs 12] [--restarts 2] [--down-seconds 5]

Each job is a small complete training run (IMDB, fastText-style model, 3 epochs with a
checkpoint after each, test metrics, pyfunc model). Counted from the server afterwards:
``runs_started`` (child runs of the sweep), ``runs_finished`` (jobs with a FINISHED run),
``runs_lost`` (jobs without one), ``runs_left_running``, ``metrics_missing`` (per finished run:
an epoch's val_roc_auc or a test metric absent) and ``metrics_duplicated`` (an epoch logged twice).
Writes experiments/results/team_faults.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 3
JOB = ["+experiment=imdb_base", "model=pool", "data.limit=2500", f"trainer.max_epochs={EPOCHS}", "trainer.patience=5",
       "model.encoder.bigram_buckets=20000", "trainer.progress=false", "hydra.launcher.n_jobs=2",
       "tracking.experiment=team-faults"]
TEST_METRICS = ("test_roc_auc", "test_accuracy", "train_seconds")


def mid_training(sweep_dir: Path, num: int, proc: subprocess.Popen, timeout: float = 600) -> bool:
    """Wait until job ``num`` has saved its first checkpoint (False if the sweep ended first)."""
    deadline = time.time() + timeout
    while not list(sweep_dir.glob(f"multirun/*/*/{num}/checkpoint/state.json")):
        if proc.poll() is not None or time.time() > deadline:
            return False
        time.sleep(0.05)
    time.sleep(0.3)
    return True


def faults(proc, cwd: Path, server, plan: list[tuple[int, str]], down: float, log: list[dict]) -> None:
    """Runs beside the sweep: at each planned job's first checkpoint, restart the server or kill the job."""
    from hydra_plugins.xfer_plugins.process_launcher import job_pid

    for num, what in plan:
        if not mid_training(cwd, num, proc):
            log.append({"job": num, "fault": what, "done": False})
            continue
        t0 = time.perf_counter()
        if what == "restart":
            server.stop()
            time.sleep(down)
            server.start()
        else:
            pid = job_pid(num)
            if pid is None:
                log.append({"job": num, "fault": what, "done": False})
                continue
            os.kill(pid, signal.SIGKILL)
        log.append({"job": num, "fault": what, "done": True, "seconds": round(time.perf_counter() - t0, 1)})
        print(log[-1], flush=True)


def count(uri: str, sweep_id: str, jobs: int) -> dict:
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("team-faults")
    runs = client.search_runs([exp.experiment_id], f"tags.`xfer.sweep_id` = '{sweep_id}'", max_results=5000)
    [parent] = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    finished = [r for r in children if r.info.status == "FINISHED"]
    missing = duplicated = 0
    for r in finished:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val_roc_auc")]
        missing += len(set(range(EPOCHS)) - set(steps)) + sum(k not in r.data.metrics for k in TEST_METRICS)
        duplicated += len(steps) - len(set(steps))
    done_jobs = {r.data.tags.get("xfer.job_fingerprint") for r in finished}
    return {"runs_started": len(children), "runs_finished": len(done_jobs), "runs_lost": jobs - len(done_jobs),
            "runs_left_running": sum(r.info.status == "RUNNING" for r in children),
            "runs_killed": sum(r.info.status == "KILLED" for r in children),
            "metrics_missing": missing, "metrics_duplicated": duplicated,
            "parent_status": parent.info.status,
            "parent_counts": {k: parent.data.metrics.get(k) for k in ("jobs_finished", "jobs_failed", "jobs_unfinished",
                                                                       "runs_superseded")}}


def main() -> None:
    from xfer.provenance import provenance
    from xfer.servers import MlflowServer, PostgresServer, free_port

    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=12)
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--down-seconds", type=float, default=5.0)
    args = ap.parse_args()
    prov = provenance()
    root = Path(tempfile.mkdtemp(prefix="xfer-team-bench-", dir="/tmp"))
    root.chmod(0o755)
    cwd = root / "work"
    cwd.mkdir()
    try:
        pg = PostgresServer(root / "pg", free_port()).init()
        server = MlflowServer(pg.uri(), root / "artifacts", free_port(), log=root / "mlflow.log")
        server.start()
        env = {**os.environ, "MLFLOW_TRACKING_URI": server.uri, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        seeds = ",".join(str(i) for i in range(args.jobs))
        cmd = [sys.executable, "-m", "xfer.run", "-m", f"tracking.lock_dir={root / 'locks'}", *JOB, f"seed={seeds}"]
        # restarts spread over the sweep, the kill in between
        at = [round((i + 1) * args.jobs / (args.restarts + 2)) for i in range(args.restarts + 1)]
        plan = sorted([(n, "restart") for n in at[:-1]] + [(min(at[-1], args.jobs - 2), "kill")])
        fault_log: list[dict] = []
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        th = threading.Thread(target=faults, args=(proc, cwd, server, plan, args.down_seconds, fault_log))
        th.start()
        out = proc.communicate()[0]
        th.join()
        first = {"exit_code": proc.returncode, "wall_seconds": round(time.perf_counter() - t0, 1)}
        sweep_id = out.split("sweep.resume=")[1].split()[0].rstrip(")")
        first.update(count(server.uri, sweep_id, args.jobs))
        print("sweep:", json.dumps(first), flush=True)
        t0 = time.perf_counter()
        again = subprocess.run([*cmd, f"sweep.resume={sweep_id}"], cwd=cwd, env=env, capture_output=True, text=True)
        resumed = {"exit_code": again.returncode, "wall_seconds": round(time.perf_counter() - t0, 1),
                   "jobs_skipped": (again.stdout + again.stderr).count("job already finished in run"),
                   "jobs_continued_from_checkpoint": (again.stdout + again.stderr).count("sweep resume: continuing run")}
        resumed.update(count(server.uri, sweep_id, args.jobs))
        print("resumed:", json.dumps(resumed), flush=True)
        server.stop()
        pg.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    final = {k: resumed[k] for k in ("runs_started", "runs_finished", "runs_lost", "metrics_missing",
                                     "metrics_duplicated", "runs_left_running")}
    record = {**prov, "command": "python experiments/bench_team.py " + " ".join(sys.argv[1:]),
              "jobs": args.jobs, "workers": 2, "server_restarts": sum(f["fault"] == "restart" and f["done"] for f in fault_log),
              "jobs_killed": sum(f["fault"] == "kill" and f["done"] for f in fault_log),
              "server_down_seconds": args.down_seconds, **final, "faults": fault_log,
              "sweep": first, "resumed": resumed,
              "target": f"{args.jobs}/{args.jobs} finished under one parent, 0 lost, 0 missing metrics"}
    dest = ROOT / "experiments" / "results" / "team_faults.json"
    dest.write_text(json.dumps(record, indent=2) + "\n")
    print(dest)


if __name__ == "__main__":
    main()
