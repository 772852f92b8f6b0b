"""Helpers shared by the study scripts in experiments/: what a job left on disk and records
without this machine's paths."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from xfer.data import data_dir


def portable(obj, tmp: str | None = None):
    """Paths of this machine out of a record: the data root becomes $XFER_DATA_DIR (as configs
    spell it), a temporary store ``tmp`` becomes ``<temporary directory>``."""
    text = json.dumps(obj).replace(str(data_dir()), "$XFER_DATA_DIR")
    return json.loads(text.replace(str(tmp), "<temporary directory>") if tmp else text)


def mb(path: Path) -> float:
    """MB of the files under ``path`` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2 ** 20 if path.exists() else 0.0


def run_sweep(store: Path, user_args: list[str], *extra: str) -> tuple[str, dict]:
    """Run ``python -m xfer.run <user_args>`` with tracking into ``store`` (also its working
    directory and where sweep.log goes), progress bars off, then ``extra`` overrides; returns the
    store's tracking URI and the sweep's command as a user types it, exit code and wall time."""
    store.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "xfer.run", *user_args, f"tracking.uri={uri}",
           f"tracking.artifact_location={store / 'artifacts'}", "trainer.progress=false",
           "base.trainer.progress=false", *extra]
    t0 = time.perf_counter()
    with open(store / "sweep.log", "w") as log:
        code = subprocess.call(cmd, cwd=store, stdout=log, stderr=subprocess.STDOUT)
    return uri, {"sweep_command": " ".join(["python", "-m", "xfer.run", *user_args]), "exit_code": code,
                 "wall_seconds": time.perf_counter() - t0}


def store_runs(uri: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(uri)
    return client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=50000)


def disk_use(uri: str, *outputs: Path) -> dict:
    """MB of MLflow artifacts per run (its own artifacts plus the logged model it owns) and of the
    job's output directories."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    sizes = []
    for run in store_runs(uri):
        size = mb(Path(run.info.artifact_uri.removeprefix("file://")))
        model = run.data.tags.get("xfer.model_uri")
        if model:
            location = client.get_logged_model(model.removeprefix("models:/")).artifact_location
            size += mb(Path(location.removeprefix("file://")))
        sizes.append((run.data.tags.get("xfer.task"), run.data.tags.get("xfer.method") or "", size))
    return {"artifact_mb_per_base_run": max((s for task, _, s in sizes if task == "train"), default=0.0),
            "artifact_mb_per_transfer_run": max((s for _, m, s in sizes if m.startswith("transfer_")), default=0.0),
            "artifact_mb_all_runs": sum(s for *_, s in sizes), "outputs_mb": sum(mb(o) for o in outputs)}


def results_path(out_dir: str | Path, name: str) -> Path:
    """``<out_dir>/results/<name>.json``, its directory made."""
    (Path(out_dir) / "results").mkdir(parents=True, exist_ok=True)
    return Path(out_dir) / "results" / f"{name}.json"


def sweep_page_source(record: dict, name: str) -> str:
    """The opening of a sweep study's page: the JSON and the commands it comes from, the commit and
    the machine."""
    m = record["machine"]
    return (f"Generated from [`results/{name}.json`](results/{name}.json) by `{record['command']}`, which runs "
            f"`{record['sweep_command']}` in an empty MLflow store.\n\n"
            f"Commit {record['commit'][:12]}{' (dirty tree)' if record['dirty'] else ''}, {record['date']}, "
            f"{m['cpu']}, {m['cores']} cores.")


def recorded_study(out_dir: str | Path, name: str, report: bool, prefix: str,
                   make: Callable[[Path], tuple[dict, Path]], finish: Callable[[dict], None]) -> dict:
    """A study's record: with ``report``, the one in ``results/<name>.json``; otherwise made anew -
    the provenance taken before anything is written into the tree, ``make(tmp)`` run in a fresh
    temporary directory (it returns its result and the directory it worked in, whose path the
    record leaves out), ``finish(record)`` adding what is derived (or raising SystemExit when there
    is nothing to record) - and written there."""
    from xfer.provenance import provenance

    path = results_path(out_dir, name)
    if not report:
        prov = provenance()
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            result, root = make(Path(tmp))
            record = portable({**prov, **result}, str(root))
        finish(record)
        path.write_text(json.dumps(record, indent=2) + "\n")
    return json.loads(path.read_text())
