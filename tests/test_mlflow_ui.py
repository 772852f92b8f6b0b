"""The README tells users to open `mlflow ui` on the project's store. Check it as a user would,
on a small real comparison (a transfer job with its controls on 2 splits of the hotel sample):
the server serves its runs and metrics, and a headless Chromium (Debian's package, installed by
.ci/run) renders the runs table grouped by method, each group with its mean test ROC-AUC."""
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from xfer.config import compose_config
from xfer.jobs import run_task
from xfer.schema import validate
from xfer.tracking import make_tracker

from helpers import TRANSFER_QUICK, free_port, wait_for_http

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1000", "--virtual-time-budget=25000"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import need_data

    need_data("hotel/hotel_reviews_sample.csv.gz", "imdb/train.csv.gz")
    tmp = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    cfg = validate(compose_config([*TRANSFER_QUICK, f"tracking.uri={uri}", f"tracking.artifact_location={tmp}/artifacts",
                                   "transfer.repeats=2", "transfer.tsne.enabled=false", "heads.catboost.iterations=10",
                                   "transfer.save_bundle=false", "tracking.log_model=false"]))
    tracker = make_tracker(cfg["tracking"])
    result = run_task(cfg, tmp / "out", tracker)
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=tmp,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base + "/health", proc, seconds=120)
        yield base, tracker, result["records"], tmp
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_mlflow_server_serves_xfer_runs(server):
    base, tracker, records, _ = server
    req = urllib.request.Request(base + "/api/2.0/mlflow/runs/search",
                                 data=json.dumps({"experiment_ids": [tracker.experiment_id],
                                                  "filter": "tags.method LIKE '%'"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        found = json.load(r)["runs"]
    assert {run["info"]["run_id"] for run in found} == {r["run_id"] for r in records}
    by_id = {r["run_id"]: r for r in records}
    for run in found:
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        record = by_id[run["info"]["run_id"]]
        assert metrics["test_roc_auc"] == pytest.approx(record["test_roc_auc"], abs=1e-12)
        assert (tags["method"], tags["data"], tags["n_train"]) == (record["method"], "hotel", str(record["n_train"]))
        contexts = {t["value"] for d in run["inputs"]["dataset_inputs"] for t in d.get("tags", [])}
        assert {"training", "test"} <= contexts  # the Dataset column is filled


def test_runs_grouped_by_method_with_their_mean_in_a_browser(server):
    if CHROMIUM is None:
        if os.environ.get("XFER_REQUIRE_BROWSER"):
            pytest.fail("chromium not found but XFER_REQUIRE_BROWSER is set (.ci/run installs it)")
        pytest.skip("chromium not installed (apt-get install chromium)")
    base, tracker, records, tmp = server
    url = f"{base}/{tracker.comparison_view}"
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chrome-dom'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180).stdout
    numbers = [float(x) for x in re.findall(r"\d\.\d{6,}", dom)]
    methods = {r["method"] for r in records}
    assert methods == {"transfer_gradual", "scratch", "catboost_embeddings", "tfidf_lr"}
    for method in methods:
        assert f"Group: {method}" in dom, method
        aucs = [r["test_roc_auc"] for r in records if r["method"] == method]
        assert len(aucs) == 2
        mean = sum(aucs) / 2  # the group row shows the average of its runs
        assert any(abs(x - mean) < 1e-9 for x in numbers), (method, mean)
    shot = Path(os.environ.get("XFER_UI_SCREENSHOT") or tmp / "mlflow_ui.png")
    subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chrome-shot'}", f"--screenshot={shot}", url],
                   capture_output=True, timeout=180)
    assert shot.stat().st_size > 10_000
