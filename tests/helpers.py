"""What several test modules share: running the CLI in a fresh directory, listing the runs of a
store, a free port, waiting for a server, and the overrides of a quick job."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from hydra_plugins.xfer_plugins.process_launcher import job_pid
from xfer.servers import free_port  # noqa: F401 - for the tests

PY = sys.executable
BIN = str(Path(sys.executable).parent)
#: a job of seconds: the fastText-style model on 300 IMDB reviews per split, one epoch
QUICK = ["+experiment=imdb_base", "model=pool", "data.limit=300", "trainer.max_epochs=1",
         "model.encoder.bigram_buckets=1000", "trainer.progress=false"]


def cli_env(**extra: str) -> dict:
    """The environment of a CLI subprocess: this venv's tools first on PATH, no progress bars."""
    return {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""),
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **extra}


def run_cli(cwd: Path, *overrides: str, multirun: bool = False, timeout: int = 600, wait: bool = True):
    """``python -m xfer.run`` in ``cwd`` with the store ``cwd/mlflow.db``."""
    cmd = [PY, "-m", "xfer.run", *(["-m"] if multirun else []), f"tracking.uri=sqlite:///{cwd / 'mlflow.db'}",
           *overrides]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=cli_env())
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=cli_env())


def list_runs(cwd: Path, filter_string: str = "") -> list:
    """Every run of the store ``cwd/mlflow.db`` (none if there is no store)."""
    import mlflow

    db = cwd / "mlflow.db"
    if not db.exists():
        return []
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    exps = client.search_experiments()
    return client.search_runs([e.experiment_id for e in exps], filter_string) if exps else []


def wait_for_http(url: str, proc: subprocess.Popen | None = None, seconds: float = 120) -> None:
    """Until ``url`` answers 200; fails early with the server's output if it exits."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            if proc is not None and proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"server exited: {out[-3000:]}")
            time.sleep(0.5)
    raise AssertionError(f"{url}: no answer within {seconds} s")

#: a small transfer job: a pool-model base on 400 IMDB reviews per split (one epoch), relearnt on
#: the hotel sample for two epochs; the target network is the base's, so both name the model
TRANSFER_QUICK = ["+experiment=hotel_transfer", "model@base.model=pool", "model=pool", "base.data.limit=400",
                  "base.trainer.max_epochs=1", "base.trainer.progress=false", "base.model.encoder.bigram_buckets=5000",
                  "model.encoder.bigram_buckets=5000", "trainer.max_epochs=2", "trainer.progress=false"]


def checkpoint_logged(client, num: int | None = None) -> bool:
    """Whether a run of the store behind ``client`` (of sweep job ``num``, or any) has logged a
    complete checkpoint (state.json is copied last); False while the store is still being made."""
    try:
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        for run in runs:
            if num is not None and run.data.tags.get("xfer.job_num") != str(num):
                continue
            for slot in ("checkpoint/a", "checkpoint/b"):
                if any(f.path.endswith("state.json") for f in client.list_artifacts(run.info.run_id, slot)):
                    return True
    except Exception:  # noqa: BLE001 - the sweep's process is still creating the store
        return False
    return False


def kill_mid_training(proc, sweep_dir: Path, num: int, signal: signal.Signals | None = signal.SIGKILL,
                      client=None) -> None:
    """Wait until job ``num`` saved its first checkpoint (and, given ``client``, a function that
    returns a client of the sweep's store, logged it there), then kill its process with
    ``signal`` (None: only wait). The client is made only once the checkpoint is on disk: a sqlite
    client creates its store, which must not race the sweep's own creation of it."""
    deadline = time.time() + 300
    while not list(sweep_dir.glob(f"multirun/*/*/{num}/checkpoint/state.json")) or (
            client is not None and not checkpoint_logged(client(), num)):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.3)  # into its second epoch
    if signal is None:
        return
    pid = job_pid(num)  # the process running job num (xfer's launcher)
    assert pid is not None
    os.kill(pid, signal)
