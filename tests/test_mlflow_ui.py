"""The README tells users to open `mlflow ui` on the project's store: check the server starts
against a store written by xfer and serves its runs and metrics (the API behind the UI)."""
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from xfer.tracking import MlflowTracker, tracked_run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_server_serves_xfer_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "xfer")
    with tracked_run(tracker, "probe-run", {"xfer.task": "train"}):
        tracker.log_metrics({"test_roc_auc": 0.875})
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow_bin), "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                with urllib.request.urlopen(base + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if server.poll() is not None:
                    raise AssertionError(server.stdout.read()[-3000:])
                time.sleep(0.5)
        body = json.dumps({"experiment_ids": [tracker.experiment_id]}).encode()
        req = urllib.request.Request(base + "/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            runs = json.load(r)["runs"]
        assert [run["info"]["run_name"] for run in runs] == ["probe-run"]
        assert {"key": "test_roc_auc", "value": 0.875} in [
            {k: m[k] for k in ("key", "value")} for m in runs[0]["data"]["metrics"]]
        with urllib.request.urlopen(base + "/", timeout=10) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
    finally:
        server.terminate()
        server.wait(timeout=30)
