"""The README tells users to open `mlflow ui` on the project's store. Check it as a user would:
the server starts on a store written by xfer, serves its runs and metrics, and a headless
Chromium (Debian's package, installed by .ci/run) renders them."""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from xfer.tracking import MlflowTracker, tracked_run

from helpers import free_port

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000", "--virtual-time-budget=20000"]



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "xfer")
    runs = {}
    for name, auc in (("ui-check-a", 0.875), ("ui-check-b", 0.625)):  # synthetic runs made by this test
        t = tracker.child()
        with tracked_run(t, name, {"xfer.task": "transfer"}):
            t.log_metrics({"test_roc_auc": auc, "test_accuracy": 0.75})
        runs[t.run_id] = (name, auc)
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=tmp,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(base + "/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(proc.stdout.read()[-3000:])
                time.sleep(0.5)
        yield base, tracker.experiment_id, runs, tmp
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_mlflow_server_serves_xfer_runs(server):
    base, exp_id, runs, _ = server
    req = urllib.request.Request(base + "/api/2.0/mlflow/runs/search",
                                 data=json.dumps({"experiment_ids": [exp_id]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        found = json.load(r)["runs"]
    assert {run["info"]["run_id"]: run["info"]["run_name"] for run in found} == {k: v[0] for k, v in runs.items()}
    for run in found:
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert metrics["test_roc_auc"] == runs[run["info"]["run_id"]][1]


def test_runs_and_test_roc_auc_appear_in_a_browser(server):
    if CHROMIUM is None:
        if os.environ.get("XFER_REQUIRE_BROWSER"):
            pytest.fail("chromium not found but XFER_REQUIRE_BROWSER is set (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    base, exp_id, runs, tmp = server
    ids = urllib.parse.quote(json.dumps(list(runs)))
    url = f"{base}/#/compare-runs?runs={ids}&experiments=%5B%22{exp_id}%22%5D"
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chrome-dom'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    assert "test_roc_auc" in dom
    for run_id, (name, auc) in runs.items():
        assert run_id in dom and name in dom and str(auc) in dom
    shot = Path(os.environ.get("XFER_UI_SCREENSHOT") or tmp / "mlflow_ui.png")
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chrome-shot'}", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000
