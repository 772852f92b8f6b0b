"""A learning curve run as a user runs it: `python -m xfer.run -m +experiment=<experiment>` into an
empty MLflow store (the sweep trains its IMDB base once, then every job reuses it), followed by
the report of what the store holds.

    python experiments/run_learning_curve.py [--experiment learning_curve] [--name NAME]
        [--store DIR] [--out-dir DIR] [-- overrides ...]
    python experiments/run_learning_curve.py --name NAME --report   # the page again from the JSON

Writes experiments/results/<name>.json (provenance; the sweep's command, exit code and wall time;
the first job's resolved config and every job's overrides; what the store and the output
directories hold on disk; one record per method, n_train and seed with its data set and base;
the summary per method and n_train and the verdicts) and experiments/<name>.md / .png,
generated from that JSON. `--store` keeps the store in an empty directory instead of a temporary
one (for `mlflow ui`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from xfer.config import compose_config
from xfer.report import (crossover, labels_to_match_text, learning_curve_plot, learning_curve_summary,
                         learning_curve_table, runs_to_records, self_training_table)
from xfer.schema import validate

from studylib import disk_use, mb, recorded_study, run_sweep, store_runs, sweep_page_source

HERE = Path(__file__).resolve().parent
TITLES = {"learning_curve": "hotel_delhi: transfer from the IMDB base against the controls",
          "learning_curve_hotel_sample": "hotel sample (499 rows): transfer against the controls",
          "hotel_delhi_pretrained": "hotel_delhi: transfer from an IMDB base with pretrained word vectors, with and "
                                    "without domain adaptation",
          "hotel_delhi_titles": "hotel_delhi with each review's title joined to its text",
          "hotel_delhi_ngrams_extend": "hotel_delhi: transfer with transfer.ngrams=extend"}


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python experiments/run_learning_curve.py")
    ap.add_argument("--experiment", default="learning_curve", help="the sweep's +experiment=")
    ap.add_argument("--name", default=None, help="file name of the results (default: the experiment's)")
    ap.add_argument("--store", default=None, help="an empty directory to keep the MLflow store in")
    ap.add_argument("--out-dir", default=str(HERE), help="where results/<name>.json and <name>.md go")
    ap.add_argument("--report", action="store_true", help="only regenerate the page from the JSON")
    ap.add_argument("overrides", nargs="*", help="extra overrides of the sweep")
    args = ap.parse_args(argv)
    args.name = args.name or args.experiment
    return args


def sweep(store: Path, experiment: str, overrides: list[str]) -> dict:
    """Run the sweep in ``store`` (its working directory) and read back what it recorded."""
    if store.exists() and any(store.iterdir()):
        raise SystemExit(f"{store}: not empty (the study starts from an empty store)")
    uri, ran = run_sweep(store, ["-m", f"+experiment={experiment}", *overrides])
    runs = store_runs(uri)
    parents = [r for r in runs if r.data.tags.get("xfer.task") == "sweep"]
    jobs = [r for r in runs if parents and r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    bases = {r.info.run_id: r for r in runs if r.data.tags.get("xfer.task") == "train"}
    finished = [{"run_id": r.info.run_id, "tags": r.data.tags, "metrics": r.data.metrics}
                for r in runs if r.info.status == "FINISHED" and r.data.tags.get("xfer.task") == "transfer"]
    tags_of = {r["run_id"]: r["tags"] for r in finished}
    records = []
    for rec in runs_to_records(finished):
        tags = tags_of[rec["run_id"]]
        base = bases.get(tags.get("xfer.base_run", ""))
        base_name = (f"{base.data.params.get('model.name', '?')}-{base.data.tags.get('xfer.fingerprint', '')[:8]}"
                     if base else tags.get("xfer.base_source", "?"))
        records.append({"data": tags.get("xfer.data"), "base": base_name,
                        **{k: v for k, v in rec.items() if k != "run_id"}})
    job_dirs = sorted((p.parent for p in store.glob("multirun/*/*/*/.hydra")), key=lambda d: int(d.name))
    job_overrides = [yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text()) for d in job_dirs]
    config = validate(compose_config(job_overrides[0])) if job_overrides else None
    base_metrics = {b.data.params.get("model.name", "?"): b.data.metrics.get("test_accuracy") for b in bases.values()}
    return {**ran, "jobs_started": len(jobs),
            "jobs_finished": sum(r.info.status == "FINISHED" for r in jobs),
            "jobs_failed": sum(r.info.status == "FAILED" for r in jobs), "bases_trained": len(bases),
            "base_test_accuracy": base_metrics,
            **disk_use(uri, store / "outputs", store / "multirun"),
            "store_mb": mb(store), "config": config, "job_overrides": [" ".join(o) for o in job_overrides], "records": records}


def render(record: dict, name: str) -> str:
    """The markdown page of a record (generated, never edited by hand)."""
    summary = learning_curve_summary(record["records"])
    verdicts = "\n".join(f"- {v}" for v in record["verdicts"].values())
    verdicts += f"\n- {labels_to_match_text(summary)}"
    bases = ", ".join(f"{k} (IMDB test accuracy {v:.4f})" for k, v in record["base_test_accuracy"].items() if v)
    selftrain = self_training_table(record["records"])
    if selftrain:
        selftrain = f"\nSelf-training on the target, means over seeds:\n\n{selftrain}"
    return (f"# {TITLES.get(name, name)}\n\n"
            f"{sweep_page_source(record, name)} {record['jobs_finished']} of {record['jobs_started']} jobs finished "
            f"in {record['wall_seconds'] / 60:.0f} min; {record['bases_trained']} base trained: {bases}. "
            f"Disk: {record['store_mb']:.0f} MB for the whole store ({record['artifact_mb_per_base_run']:.0f} MB for "
            f"the base run, at most {record['artifact_mb_per_transfer_run']:.1f} MB per transfer run), "
            f"{record['outputs_mb']:.1f} MB in the sweep's output directories.\n\n"
            f"{verdicts}\n\n{learning_curve_table(summary)}{selftrain}\n![learning curve]({name}.png)\n")


def main(argv: list[str]) -> None:
    args = parse(argv)
    out = Path(args.out_dir)

    def make(tmp: Path) -> tuple[dict, Path]:
        root = Path(args.store) if args.store else tmp
        return sweep(root, args.experiment, args.overrides), root

    def finish(record: dict) -> None:
        if not record["records"]:
            raise SystemExit(f"the sweep recorded no finished transfer runs (exit code {record['exit_code']})")
        summary = learning_curve_summary(record["records"])
        record["verdicts"] = crossover(summary)
        record["summary"] = [{"n_train": int(r.n_train), "method": r.method, "seeds": int(r["count"]),
                              "test_roc_auc": float(r["mean"]), "test_roc_auc_std": float(r["std"])}
                             for _, r in summary.iterrows()]

    record = recorded_study(out, args.name, args.report, "xfer-curve-", make, finish)
    learning_curve_plot(learning_curve_summary(record["records"]), out / f"{args.name}.png",
                        TITLES.get(args.name, args.name))
    page = render(record, args.name)
    (out / f"{args.name}.md").write_text(page)
    print(page)


if __name__ == "__main__":
    main(sys.argv[1:])
