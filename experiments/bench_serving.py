"""Serving benchmark: batch-prediction throughput and peak memory, and single-review latency
against `mlflow models serve`, for one trained bundle on this machine.

    python experiments/bench_serving.py [--bundle <bundle dir | run id>] [--name cnn_ngrams] [--scales 1,10] [--requests 500]

Without ``--bundle`` it first trains the default base (``+experiment=imdb_base``, about 2.5 min)
into its scratch store, so the study runs from nothing.

The bundle is logged as a pyfunc model into a scratch MLflow store, registered as
``bench@champion`` and used from there, as a user would. Batch prediction runs
``python -m xfer.predict`` on the IMDB test set (25,000 reviews) repeated ``scale`` times, each
in a fresh process whose peak RSS is read with getrusage. Latency: ``--requests`` sequential
POSTs of one real review each (after 20 warm-up requests) to the local server; then the same
against the model logged with ``small_request_rows=0`` (every request's operators on all
cores, the behaviour before one-review requests ran on one thread): ``server_every_core``; and
the default model in a server started with ``OMP_NUM_THREADS=1``: ``server_omp_1``.
Writes ``experiments/results/serving_<name>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xfer.data import data_dir  # noqa: E402
from xfer.servers import free_port  # noqa: E402

# runs predict in a child and prints the child's peak RSS (KiB) as the last line
WRAP = ("import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(p.returncode)\n")


def publish(bundle_ref: str, uri: str, tracking_uri: str | None, config: dict | None = None,
            name: str = "bench") -> str:
    """Log the bundle as a pyfunc model in the scratch store and register it; returns its URI
    (``config``: model_config entries over the defaults)."""
    import mlflow

    from xfer.tracking import resolve_bundle
    from xfer.registry import register_run
    from xfer.tracking import MlflowTracker

    bundle = resolve_bundle(bundle_ref, tracking_uri)
    tracker = MlflowTracker(uri, "bench")
    tracker.start("bench-model")
    tracker.log_metrics({"test_roc_auc": float(bundle.meta.get("metrics", {}).get("test_roc_auc", 0.0))})
    frame = pd.read_csv(data_dir() / "imdb" / "test.csv.gz", nrows=5)
    tracker.log_model(bundle, frame, config=config)
    tracker.end()
    client = mlflow.MlflowClient(uri)
    register_run(client, client.get_run(tracker.run_id), name)
    return f"models:/{name}@champion"


def batch(model: str, src: Path, out: Path, env: dict) -> dict:
    cmd = [sys.executable, "-c", WRAP, sys.executable, "-m", "xfer.predict", f"model={model}", f"input={src}",
           f"output={out}", "progress=false"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(proc.stderr[-2000:])
    lines = proc.stdout.strip().splitlines()
    rss_kib = int(lines[-1])
    words = lines[-2].split()  # "<out>: N reviews scored in S s (R reviews/s)"
    rows, seconds = int(words[1]), float(words[5])
    return {"rows": rows, "predict_seconds": seconds, "reviews_per_second": rows / seconds,
            "wall_seconds_with_model_load": wall, "peak_rss_mb": rss_kib / 1024,
            "input_mb": src.stat().st_size / 2**20}


def latency(model: str, texts: list[str], n: int, env: dict, workdir: Path) -> dict:
    port = free_port()
    log = open(workdir / "serve.log", "w")
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", model, "--env-manager", "local", "-h",
                               "127.0.0.1", "-p", str(port)], env=env, cwd=workdir, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(url + "/ping", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.time() - t0 > 300:
                    raise SystemExit((workdir / "serve.log").read_text()[-2000:])
                time.sleep(0.5)
        startup = time.time() - t0

        def post(text: str) -> float:
            body = json.dumps({"dataframe_split": {"columns": ["text"], "data": [[text]]}}).encode()
            req = urllib.request.Request(url + "/invocations", body, {"Content-Type": "application/json"})
            s = time.perf_counter()
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
            return (time.perf_counter() - s) * 1000

        for t in texts[:20]:
            post(t)
        ms = np.array([post(texts[i % len(texts)]) for i in range(n)])
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
        log.close()
    return {"requests": n, "latency_p50_ms": float(np.percentile(ms, 50)),
            "latency_p99_ms": float(np.percentile(ms, 99)), "latency_mean_ms": float(ms.mean()),
            "server_startup_seconds": startup}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=None, help="default: train `+experiment=imdb_base` into the scratch store")
    ap.add_argument("--tracking-uri", default=None, help="store that holds --bundle when it is a run id")
    ap.add_argument("--name", default="cnn_ngrams")
    ap.add_argument("--scales", default="1,10")
    ap.add_argument("--requests", type=int, default=500)
    args = ap.parse_args()

    from xfer.provenance import provenance

    prov = provenance()
    with tempfile.TemporaryDirectory(prefix="bench_serving_") as tmp:
        out = measure(args, Path(tmp))
    dest = ROOT / "experiments" / "results" / f"serving_{args.name}.json"
    dest.write_text(json.dumps({**prov, **out}, indent=2) + "\n")
    print(dest)


def default_base(work: Path) -> tuple[str, str]:
    """Train the default base (``+experiment=imdb_base``) into a store in ``work``; its run id and store."""
    from xfer.config import compose_config
    from xfer.jobs import run_task
    from xfer.tracking import make_tracker

    uri = f"sqlite:///{work / 'base.db'}"
    cfg = compose_config(["+experiment=imdb_base", f"tracking.uri={uri}", f"tracking.artifact_location={work}/base",
                          "trainer.progress=false"])
    return run_task(cfg, work / "base_out", make_tracker(cfg["tracking"]))["run_id"], uri


def measure(args: argparse.Namespace, work: Path) -> dict:
    trained = args.bundle is None
    if trained:
        args.bundle, args.tracking_uri = default_base(work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}
    model = publish(args.bundle, uri, args.tracking_uri)
    test = pd.read_csv(data_dir() / "imdb" / "test.csv.gz")
    src1 = work / "imdb_test.csv"
    test.to_csv(src1, index=False)
    results = {"batch": {}}
    for scale in [int(s) for s in args.scales.split(",")]:
        src = src1
        if scale > 1:
            src = work / f"imdb_test_x{scale}.csv"
            with open(src, "w") as f:
                for i in range(scale):
                    test.to_csv(f, index=False, header=i == 0)
        results["batch"][f"x{scale}"] = r = batch(model, src, work / "scored.csv", env)
        print(f"batch x{scale}: {r['rows']} reviews, {r['reviews_per_second']:.0f} reviews/s, "
              f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
        if src != src1:
            src.unlink()
    rng = np.random.default_rng(0)
    texts = test["text"].iloc[rng.permutation(len(test))[: args.requests + 20]].tolist()
    results["server"] = latency(model, texts, args.requests, env, work)
    # the same with every request on all cores (small_request_rows=0): what one-thread small requests change
    every_core = publish(args.bundle, uri, args.tracking_uri, {"small_request_rows": 0}, name="bench_every_core")
    results["server_every_core"] = latency(every_core, texts, args.requests, env, work)
    # and the default model in a server started with OMP_NUM_THREADS=1 (every operator of every
    # request on one thread, from the process's start)
    results["server_omp_1"] = latency(model, texts, args.requests, {**env, "OMP_NUM_THREADS": "1"}, work)
    for key in ("server", "server_every_core", "server_omp_1"):
        print(f"{key}: p50 {results[key]['latency_p50_ms']:.1f} ms, p99 {results[key]['latency_p99_ms']:.1f} ms",
              flush=True)
    first = results["batch"][next(iter(results["batch"]))]
    from xfer.tracking import resolve_bundle

    return {"name": args.name, "bundle": "the default base, trained by this script (+experiment=imdb_base)"
            if trained else args.bundle,
            "architecture": resolve_bundle(args.bundle, args.tracking_uri).model_cfg["architecture"],
            "reviews_per_second": first["reviews_per_second"],
            "latency_p50_ms": results["server"]["latency_p50_ms"],
            "latency_p99_ms": results["server"]["latency_p99_ms"], **results}

if __name__ == "__main__":
    main()
