"""The comparison on the bundled hotel sample, run as a user runs it, from an empty store:
`python -m xfer.run +experiment=hotel_transfer` (the job trains its IMDB base first, then runs every
method on 5 seeded splits of the 499 reviews).

    python experiments/run_hotel_sample.py [--name NAME] [--out-dir DIR] [overrides ...]
    python experiments/run_hotel_sample.py --report      # the page again from the JSON


Writes experiments/results/hotel_transfer_sample.json (provenance, resolved config, per-split
records, summary; metric names as in MLflow), experiments/hotel_transfer_sample.md (generated
from that JSON) and the job's t-SNE maps. It also measures what the job left on disk: MLflow
artifacts per base run and per transfer child run (`artifact_mb_per_base_run`,
`artifact_mb_per_transfer_run`, logged models included) and the job's output directory
(`outputs_mb`). `--name` writes the files under another name (a trial run).
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from xfer.config import compose_config
from xfer.jobs import run_task
from xfer.plots import markdown_table
from xfer.provenance import provenance
from xfer.schema import validate
from xfer.tracking import make_tracker

from studylib import disk_use, portable

HERE = Path(__file__).resolve().parent
NAME = "hotel_transfer_sample"
COLUMNS = ["method", "n_train", "repeats", "test_roc_auc", "test_roc_auc_std", "test_accuracy", "test_f1",
           "train_seconds"]


def render(record: dict) -> str:
    """The markdown page of a record (generated, never edited by hand)."""
    m, prov = record["machine"], record
    return (f"# Hotel sample: transfer against the controls\n\n"
            f"Generated from [`results/{NAME}.json`](results/{NAME}.json) by `{record['command']}`.\n\n"
            f"Commit {prov['commit'][:12]}{' (dirty tree)' if prov['dirty'] else ''}, {prov['date']}, "
            f"{m['cpu']}, {m['cores']} cores. Wall time {record['wall_seconds']:.0f} s, base: "
            f"{record['base']['source']} (IMDB test accuracy {record['base_test_accuracy']:.4f}). Disk: "
            f"{record['artifact_mb_per_base_run']:.0f} MB for the base run, {record['artifact_mb_per_transfer_run']:.0f} "
            f"MB per transfer run, {record['artifact_mb_all_runs']:.0f} MB for all runs of the job, "
            f"{record['outputs_mb']:.1f} MB left in its output directory.\n\n"
            f"{record['note']}\n\n" + markdown_table(record["summary"], COLUMNS))


def main(argv: list[str]) -> None:
    global NAME
    out_dir, report_only = HERE, False
    while argv[:1] and argv[0] in ("--name", "--out-dir", "--report"):
        if argv[0] == "--report":
            report_only, argv = True, argv[1:]
            continue
        if argv[0] == "--name":
            NAME = argv[1]
        else:
            out_dir = Path(argv[1])
        argv = argv[2:]
    (out_dir / "results").mkdir(parents=True, exist_ok=True)
    if report_only:  # the page again, from the recorded JSON
        (out_dir / f"{NAME}.md").write_text(render(json.loads((out_dir / "results" / f"{NAME}.json").read_text())))
        return
    prov = provenance()  # before this script writes into the tree
    with tempfile.TemporaryDirectory(prefix="xfer-hotel-") as tmp:
        cfg = validate(compose_config(["+experiment=hotel_transfer", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                                       f"tracking.artifact_location={tmp}/artifacts",
                                       "trainer.progress=false", "base.trainer.progress=false", *argv]))
        t0 = time.perf_counter()
        result = run_task(cfg, Path(tmp) / "out", make_tracker(cfg["tracking"]))
        wall = time.perf_counter() - t0
        for tag in ("base", "transferred"):
            png = Path(tmp) / "out" / f"tsne_{tag}.png"
            if png.exists():
                shutil.copy(png, out_dir / f"{NAME}_tsne_{tag}.png")
        base_metrics = json.loads(next((Path(tmp) / "out" / "base").glob("metrics.json")).read_text()) \
            if (Path(tmp) / "out" / "base" / "metrics.json").exists() else {}
        record = {**prov, "wall_seconds": wall, "config": cfg, **disk_use(f"sqlite:///{tmp}/mlflow.db", Path(tmp) / "out"),
                  "base": {k: v for k, v in result["base"].items() if k != "run_id"},
                  "base_test_accuracy": base_metrics.get("test_accuracy", float("nan")),
                  "note": f"{cfg['transfer']['repeats']} seeded stratified splits of the 499-row sample; mean and std "
                          "over them.",
                  "summary": result["summary"].to_dict("records"),
                  "records": [{k: v for k, v in r.items() if k != "run_id"} for r in result["records"]]}
        record = portable(record, tmp)
    (out_dir / "results" / f"{NAME}.json").write_text(json.dumps(record, indent=2) + "\n")
    (out_dir / f"{NAME}.md").write_text(render(record))
    print(render(record))


if __name__ == "__main__":
    main(sys.argv[1:])
