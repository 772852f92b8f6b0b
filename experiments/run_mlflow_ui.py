"""What a user sees in the MLflow UI after the hotel sample comparison: `python -m xfer.run
+experiment=hotel_transfer` into an empty store, then `mlflow server` on it and a headless Chromium
on the view every xfer experiment gets (the runs table grouped by method, see the job's last log
line).

    python experiments/run_mlflow_ui.py [--out-dir DIR] [-- overrides ...]

Writes experiments/mlflow_ui_compare.png (the screenshot) and experiments/results/mlflow_ui.json:
provenance, the view's address, and per method the mean test ROC-AUC shown on the page beside the
one computed from the runs through MLflow's API (they must agree).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from xfer.provenance import provenance
from xfer.servers import free_port

from studylib import store_runs

HERE = Path(__file__).resolve().parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1000", "--virtual-time-budget=25000"]


def mlflow_server(uri: str, cwd: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("mlflow")), "server", "--backend-store-uri", uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            with urllib.request.urlopen(base + "/health", timeout=1):
                return proc, base
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"mlflow server exited with {proc.returncode}")
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("mlflow server did not answer /health within 2 minutes")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python experiments/run_mlflow_ui.py")
    ap.add_argument("--out-dir", default=str(HERE))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found (apt-get install chromium)")
    out = Path(args.out_dir)
    (out / "results").mkdir(parents=True, exist_ok=True)
    prov = provenance()
    with tempfile.TemporaryDirectory(prefix="xfer-ui-") as tmp:
        store = Path(tmp)
        uri = f"sqlite:///{store / 'mlflow.db'}"
        job = ["+experiment=hotel_transfer", *args.overrides]
        code = subprocess.call([sys.executable, "-m", "xfer.run", *job, f"tracking.uri={uri}",
                                f"tracking.artifact_location={store / 'artifacts'}", "trainer.progress=false",
                                "base.trainer.progress=false"], cwd=store, stdout=subprocess.DEVNULL)
        if code:
            raise SystemExit(f"the job failed with exit code {code}")
        runs = [r for r in store_runs(uri) if r.data.tags.get("method")]
        api = {}
        for r in runs:
            api.setdefault(r.data.tags["method"], []).append(r.data.metrics["test_roc_auc"])
        from xfer.tracking import COMPARISON_VIEW

        view = f"#/experiments/{runs[0].info.experiment_id}/runs?viewStateShareKey={COMPARISON_VIEW}"
        proc, base = mlflow_server(uri, store)
        try:
            browse = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={store / 'chrome'}"]
            dom = subprocess.run([*browse, "--dump-dom", f"{base}/{view}"], capture_output=True, text=True,
                                 timeout=300).stdout
            subprocess.run([*browse, f"--screenshot={out / 'mlflow_ui_compare.png'}", f"{base}/{view}"],
                           capture_output=True, timeout=300)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    shown = [float(x) for x in re.findall(r"\d\.\d{6,}", dom)]
    methods = {}
    for method, aucs in sorted(api.items()):
        mean = sum(aucs) / len(aucs)
        on_page = next((x for x in shown if abs(x - mean) < 1e-9), None)
        methods[method] = {"runs": len(aucs), "test_roc_auc": mean, "test_roc_auc_on_page": on_page,
                           "group_on_page": f"Group: {method}" in dom}
    record = {**prov, "job_command": "python -m xfer.run " + " ".join(job), "view": view, "methods": methods}
    (out / "results" / "mlflow_ui.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(methods, indent=2))
    if not all(m["group_on_page"] and m["test_roc_auc_on_page"] is not None for m in methods.values()):
        raise SystemExit("the page does not show every method's group and mean (see results/mlflow_ui.json)")


if __name__ == "__main__":
    main(sys.argv[1:])
