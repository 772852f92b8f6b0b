"""Train the IMDB base network on the full data and record the results.

    python experiments/run_imdb_base.py                                   # the default model, seed 0
    python experiments/run_imdb_base.py --seeds 0 1 2                     # several seeds, one JSON
    python experiments/run_imdb_base.py --encoders pool cnn bilstm gru --out experiments/results/imdb_base_encoders.json
    python experiments/run_imdb_base.py --variant default --variant epochs_4 trainer.max_epochs=4   # one knob each

Each (encoder, seed) runs `+experiment=imdb_base model=<encoder> seed=<seed>` in-process with
tracking off (the figures come from the same code path as `python -m xfer.run`), on the official
25k/25k split. The JSON holds only this invocation's runs, each with its resolved config, and the
provenance (commit, date, machine, packages, command); metric names as in MLflow.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from xfer.config import compose_config
from xfer.jobs import run_task
from xfer.provenance import provenance
from xfer.schema import validate

from studylib import mb, portable

#: per-encoder settings that keep each inside the 10-minute budget on 2 cores
PER_ENCODER = {
    "pool": [],
    "cnn_ngrams": [],  # the imdb_base defaults
    "cnn": ["trainer.max_len=400", "trainer.max_epochs=3"],
    "bilstm": ["trainer.max_len=300", "trainer.max_epochs=2"],
    "gru": ["trainer.max_len=300", "trainer.max_epochs=2"],
}


def run_one(enc: str, seed: int, extra: list[str], variant: str | None = None) -> dict:
    overrides = ["+experiment=imdb_base", f"model={enc}", f"seed={seed}", "tracking.enabled=false",
                 "trainer.progress=false", *PER_ENCODER.get(enc, []), *extra]
    cfg = validate(compose_config(overrides))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_task(cfg, tmp)
        bundle_mb = mb(Path(result["bundle"])) if result["bundle"] else None
    m = result["metrics"]
    return {"encoder": enc, **({"variant": variant} if variant else {}), "seed": seed, "overrides": overrides[1:], "test_accuracy": m["test_accuracy"],
            "test_roc_auc": m["test_roc_auc"], "test_f1": m["test_f1"], "train_seconds": m["train_seconds"],
            "preprocess_seconds": m["preprocess_seconds"], "wall_seconds": time.perf_counter() - t0,
            "bundle_mb": bundle_mb, "best_epoch": m["best_epoch"], "epochs_run": len(result["history"]),
            # every epoch's validation scores: how close the kept epoch was to the others
            **{f"val_{k}_per_epoch": [h[f"val_{k}"] for h in result["history"]] for k in ("roc_auc", "accuracy")},
            **{k: v for k, v in m.items() if "_branch_" in k},
            "examples_per_second": max(h["examples_per_second"] for h in result["history"]),
            **{k: v for k, v in result["pretrain"].get("metrics", {}).items()},
            **({"pretrain_coverage": result["pretrain"]["coverage"]} if result["pretrain"] else {}),
            **self_training(result["loaded"].meta.get("self_train"), m), "config": cfg}


def self_training(meta: dict | None, metrics: dict) -> dict:
    """A self-trained network's teacher figures, and both networks' training time together."""
    if not meta:
        return {}
    teacher = meta["teacher"]
    return {"pseudo_labelled": meta["pseudo_labelled"], "unlabelled": meta["unlabelled"],
            "teacher_test_accuracy": teacher["test_accuracy"], "teacher_test_roc_auc": teacher["test_roc_auc"],
            "teacher_train_seconds": teacher["train_seconds"],
            "supervised_seconds": teacher["train_seconds"] + metrics["train_seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoders", nargs="+", default=["cnn_ngrams"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--variant", nargs="+", action="append", metavar=("NAME", "OVERRIDE"),
                    help="a named set of overrides on top of the common ones (repeatable; `--variant default` "
                         "adds none); each variant runs every encoder and seed, summarised under its name")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "imdb_base.json"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    prov = provenance()  # before this script writes into the tree
    variants = args.variant or [[None]]
    runs = []
    for name, *extra in variants:
        for enc in args.encoders:
            for seed in args.seeds:
                runs.append(run_one(enc, seed, [*args.overrides, *extra], name))
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "config"}), flush=True)
    summary = {}
    for name, *_ in variants:
        for enc in args.encoders:
            group = [r for r in runs if r["encoder"] == enc and r.get("variant") == name]
            key = enc if name is None else (name if len(args.encoders) == 1 else f"{name}/{enc}")
            acc = [r["test_accuracy"] for r in group]
            summary[key] = {"seeds": len(acc), "test_accuracy_mean": statistics.mean(acc),
                            "test_accuracy_min": min(acc), "test_accuracy_max": max(acc),
                            "train_seconds_max": max(r["train_seconds"] for r in group)}
            supervised = [r["supervised_seconds"] for r in group if "supervised_seconds" in r]
            if supervised:  # self-training: teacher + network
                summary[key]["supervised_seconds_max"] = max(supervised)
    record = {**prov, "data": "IMDB official split: 22,500 train / 2,500 validation (seeded) / 25,000 test",
              "summary": summary, "runs": runs}
    Path(args.out).write_text(json.dumps(portable(record), indent=2) + "\n")


if __name__ == "__main__":
    main()
