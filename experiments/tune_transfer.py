"""How the base is carried to a target, tuned the way a user tunes it: the Optuna search of
`hparams_search=transfer_optuna` (learning rate, dropouts, schedule, unfreezing pace, vocabulary
policy) run into an empty MLflow store, its objective the transferred network's validation
ROC-AUC; the test split plays no part in the choice.

    python experiments/tune_transfer.py [--n-train 500] [--trials 30] [--seed 0] [--name NAME]
        [-- overrides ...]
    python experiments/tune_transfer.py --name NAME --report   # the page again from the JSON

Writes experiments/results/<name>.json (provenance; the sweep's command, exit code and wall time;
one record per trial with its parameters, validation objective and - for the reader, never for
the choice - test ROC-AUC; the best trial's parameters as overrides) and experiments/<name>.md.
Whether the chosen parameters carry over to other label counts and seeds is a learning-curve
study of its own (`run_learning_curve.py ... -- <the best overrides>`).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from xfer.plots import markdown_table

from studylib import recorded_study, run_sweep, store_runs, sweep_page_source

HERE = Path(__file__).resolve().parent
#: the search space of conf/hparams_search/transfer_optuna.yaml, as the trials' overrides name it
SEARCHED = ("optimizer.lr", "model.embedding.dropout", "model.hidden.dropout", "schedule",
            "transfer.unfreeze_every", "transfer.vocab")


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python experiments/tune_transfer.py")
    ap.add_argument("--experiment", default="hotel_delhi_transfer", help="the search's +experiment=")
    ap.add_argument("--n-train", type=int, default=500, help="labelled target reviews of every trial")
    ap.add_argument("--trials", type=int, default=30, help="Optuna trials (2 run at a time)")
    ap.add_argument("--seed", type=int, default=0, help="the split's and the sampler's seed")
    ap.add_argument("--name", default="tune_transfer", help="file name of the results")
    ap.add_argument("--out-dir", default=str(HERE), help="where results/<name>.json and <name>.md go")
    ap.add_argument("--report", action="store_true", help="only regenerate the page from the JSON")
    ap.add_argument("overrides", nargs="*", help="extra overrides of every trial")
    return ap.parse_args(argv)


def trial_params(overrides: str) -> dict[str, str]:
    """The searched parameters out of a job's override string (tag ``xfer.overrides``)."""
    pairs = (o.split("=", 1) for o in shlex.split(overrides) if "=" in o)
    return {k: v for k, v in pairs if k in SEARCHED}


def search(store: Path, args: argparse.Namespace) -> dict:
    """Run the search in ``store`` (its working directory, so optuna.db lands there) and read back
    every trial's transferred network."""
    uri, ran = run_sweep(store, ["-m", f"+experiment={args.experiment}", "hparams_search=transfer_optuna",
                                 f"data.n_train={args.n_train}", f"seed={args.seed}",
                                 f"hydra.sweeper.n_trials={args.trials}", *args.overrides],
                         "transfer.save_bundle=false")
    runs = store_runs(uri)
    jobs = {r.info.run_id: r for r in runs if r.data.tags.get("xfer.task") == "transfer"
            and "objective" in r.data.metrics}
    trials = []
    for r in runs:
        tags, metrics = r.data.tags, r.data.metrics
        job = jobs.get(tags.get("mlflow.parentRunId", ""))
        if job is None or not tags.get("xfer.method", "").startswith("transfer") or "test_roc_auc" not in metrics:
            continue
        trials.append({"job": int(tags["xfer.job_num"]), "method": tags["xfer.method"],
                       "params": trial_params(tags.get("xfer.overrides", "")),
                       "val_roc_auc": float(job.data.metrics["objective"]),
                       "test_roc_auc": float(metrics["test_roc_auc"]),
                       "test_accuracy": float(metrics.get("test_accuracy", float("nan")))})
    trials.sort(key=lambda t: t["job"])
    base = next((r for r in runs if r.data.tags.get("xfer.task") == "train"), None)
    return {**ran, "n_train": args.n_train, "seed": args.seed,
            "base_test_accuracy": base.data.metrics.get("test_accuracy") if base else None, "trials": trials}


def shown(value: str) -> str:
    """A searched value for the page: numbers to 4 significant digits (the JSON keeps them whole)."""
    try:
        return f"{float(value):.4g}"
    except ValueError:
        return value


def best_trial(trials: list[dict]) -> dict:
    """The trial with the highest validation objective (the first of a tie, as Optuna keeps it)."""
    return max(trials, key=lambda t: t["val_roc_auc"])


def render(record: dict, name: str) -> str:
    """The markdown page of a record (generated, never edited by hand)."""
    trials = record["trials"]
    best = record["best"]
    rows = [{"job": t["job"], **{k: shown(t["params"].get(k, "")) for k in SEARCHED}, "val_roc_auc": t["val_roc_auc"],
             "test_roc_auc": t["test_roc_auc"]} for t in sorted(trials, key=lambda t: -t["val_roc_auc"])]
    return (f"# {name}: the transfer's settings searched on validation ROC-AUC\n\n"
            f"{sweep_page_source(record, name)} {len(trials)} trials at n_train {record['n_train']}, seed "
            f"{record['seed']}, in {record['wall_seconds'] / 60:.0f} min (exit code {record['exit_code']}).\n\n"
            f"Best on validation: job {best['job']}, `{best['overrides']}` (validation ROC-AUC "
            f"{best['val_roc_auc']:.4f}, test {best['test_roc_auc']:.4f}). The test column is shown, never used "
            f"to choose.\n\nTrials, best validation first:\n\n"
            f"{markdown_table(rows, ['job', *SEARCHED, 'val_roc_auc', 'test_roc_auc'])}\n")


def main(argv: list[str]) -> None:
    args = parse(argv)
    out = Path(args.out_dir)

    def finish(record: dict) -> None:
        if not record["trials"]:
            raise SystemExit(f"the search recorded no finished trials (exit code {record['exit_code']})")
        best = best_trial(record["trials"])
        record["best"] = {**best, "overrides": " ".join(f"{k}={v}" for k, v in sorted(best["params"].items()))}

    record = recorded_study(out, args.name, args.report, "xfer-tune-", lambda tmp: (search(tmp, args), tmp), finish)
    page = render(record, args.name)
    (out / f"{args.name}.md").write_text(page)
    print(page)


if __name__ == "__main__":
    main(sys.argv[1:])
