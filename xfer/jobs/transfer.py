"""The transfer job (``task: transfer``, e.g. ``+experiment=hotel_transfer``):

1. validates the config and loads the target's seeded splits (before any run starts);
2. obtains the base stage: ``base.path``, ``base.run_id``, or the finished run whose fingerprint
   matches the composed ``base`` stage, training it (once, under a lock) if none exists;
3. per split runs the methods of ``transfer.methods`` (``methods.METHODS``) as child runs of one
   comparison run, reusing finished controls;
4. logs a comparison table, t-SNE maps of base vs transferred embeddings and the target's
   OOV rate under the base vocabulary on the comparison run.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .. import __version__
from ..bundle import Bundle, load_bundle
from ..data import Dataset, dataset_checksum, load_dataset, load_frame
from ..features import layer_embeddings, tsne_plot
from ..pretrain import require_word2vec
from ..encode import encode_frame
from ..plots import markdown_table
from ..schema import validate
from ..models import with_categorical
from ..surgery import target_architecture
from ..tracking import NullTracker, flatten, resolve_bundle, tracked_run
from ..train import release_memory, seed_everything
from ..transforms import token_vocab, tokens_of
from .methods import Split, methods_of, pretrain_setting, run_method
from .stages import reuse_or_run
from .train import base_fingerprint, train_task

log = logging.getLogger(__name__)


def base_config(cfg: Mapping) -> dict:
    """The whole train-job config of a transfer job's base stage."""
    base = cfg["base"]
    stage = {k: base[k] for k in ("seed", "data", "transforms", "pretrain", "self_train", "model", "optimizer",
                                  "trainer")}
    run_name = f"{base['data']['name']}-base-{base['model']['name']}"
    return validate({"task": "train", **stage, "tracking": {**cfg["tracking"], "run_name": run_name}})


def obtain_base(cfg: Mapping, out_dir: Path, tracker: NullTracker) -> tuple[Bundle, dict]:
    """Load the base named by ``base.path``/``base.run_id``, or reuse/train the base stage by
    fingerprint. A base kept in the job's MLflow store gets that run as its ``ref``, so the
    transferred networks are saved as deltas against it."""
    bundle, info = _obtain_base(cfg, out_dir, tracker)
    if tracker.persistent and info.get("run_id"):
        bundle.ref = str(info["run_id"])
    return bundle, info


def _obtain_base(cfg: Mapping, out_dir: Path, tracker: NullTracker) -> tuple[Bundle, dict]:
    base = cfg["base"]
    if base["path"]:
        return load_bundle(base["path"]), {"source": "path", "path": str(base["path"])}
    if base["run_id"]:
        bundle = resolve_bundle(base["run_id"], cfg["tracking"]["uri"])
        return bundle, {"source": "run_id", "run_id": base["run_id"]}
    bcfg = base_config(cfg)
    fp = base_fingerprint(bcfg)

    def train():
        result = train_task(bcfg, out_dir / "base", tracker.child())
        # loaded afresh, as a reused base is: the trained network in hand still refers to its
        # optimizer (Adam states of every weight), which would stay in memory for the whole job
        bundle = load_bundle(result["bundle"]) if result["bundle"] else tracker.load_bundle(result["run_id"])
        return bundle, {"source": "trained", "run_id": result["run_id"], "fingerprint": fp}

    def reuse(found):
        return tracker.load_bundle(found["run_id"]), {"source": "reused", "run_id": found["run_id"], "fingerprint": fp}

    return reuse_or_run(tracker, cfg["tracking"], fp, {"xfer.task": "train"}, "base", train, reuse)


SUMMARY_METRICS = ("test_roc_auc", "test_accuracy", "test_f1", "train_seconds")


def summarise(records: list[dict]) -> pd.DataFrame:
    """Mean (and std over seeds) of the test metrics per method and n_train."""
    frame = pd.DataFrame(records)
    agg = frame.groupby(["method", "n_train"], sort=False)[list(SUMMARY_METRICS)].agg(["mean", "std", "count"])
    rows = []
    for (method, n), row in agg.iterrows():
        r = {"method": method, "n_train": int(n), "repeats": int(row[("test_roc_auc", "count")])}
        for m in SUMMARY_METRICS:
            r[m] = float(row[(m, "mean")])
            std = row[(m, "std")]
            r[f"{m}_std"] = float(std) if pd.notna(std) else 0.0
        rows.append(r)
    return pd.DataFrame(rows).sort_values("test_roc_auc", ascending=False).reset_index(drop=True)


def _tsne(cfg: Mapping, base: Bundle, transferred, ds: Dataset, out_dir: Path, seed: int) -> list[Path]:
    tcfg, bdata = cfg["transfer"]["tsne"], cfg["base"]["data"]
    if not tcfg["enabled"]:
        return []
    n, rng = tcfg["n_per_domain"], np.random.RandomState(seed)
    domains = {}
    if bdata:  # the base's own test reviews (or its whole file)
        src = load_frame(bdata["files"].get("test") or bdata["files"]["all"], bdata)
        domains[bdata["name"]] = src.iloc[rng.choice(len(src), size=min(n, len(src)), replace=False)]
    domains[ds.name] = ds.test.iloc[rng.choice(len(ds.test), size=min(n, len(ds.test)), replace=False)]
    nets = [("base", base.net, base.preprocessor)] + ([("transferred", *transferred)] if transferred else [])
    arch, trainer = base.model_cfg["architecture"], cfg["trainer"]
    paths = []
    for tag, net, pre in nets:
        groups = {name: (layer_embeddings(net, encode_frame(pre, f, arch, trainer["max_len"], trainer["truncate"]),
                                          tcfg["layer"]), f["label"].to_numpy()) for name, f in domains.items()}
        paths.append(tsne_plot(groups, out_dir / f"tsne_{tag}.png",
                               f"t-SNE of '{tcfg['layer']}' outputs, {tag} network", seed=seed))
    return paths


def _report(cfg, records, splits, base_info, oov, out_dir: Path, parent: NullTracker) -> tuple[pd.DataFrame, str]:
    summary = summarise(records)
    table = markdown_table(summary.to_dict("records"), ["method", "n_train", "repeats", "test_roc_auc",
                                                        "test_roc_auc_std", "test_accuracy", "test_f1",
                                                        "train_seconds"])
    seed, repeats = cfg["seed"], len(splits)
    note = (f"{repeats} seeded split(s) of {splits[0].name} (seeds {seed}..{seed + repeats - 1}); "
            f"mean and std over them. Base: {base_info['source']} {base_info.get('run_id', '')}. "
            f"OOV rate of the target under the base vocabulary: {100 * oov:.2f}%.\n\n")
    (out_dir / "comparison.md").write_text(note + table)
    summary.to_csv(out_dir / "comparison.csv", index=False)
    (out_dir / "records.json").write_text(json.dumps(records, indent=2))
    for f in ("comparison.md", "comparison.csv", "records.json"):
        parent.log_artifact(out_dir / f)
    return summary, note + table


def _run_split(split: Split, parent: NullTracker, tags: Mapping[str, str], tsne: bool) -> list[dict]:
    """Every method on one split; with ``tsne`` the maps of the base and of this split's transferred
    network are drawn right away, so that network need not stay in memory for the other splits."""
    records, transferred, kept = [], None, None
    for name in methods_of(split.cfg, split.base):
        rec, kept = run_method(name, split, parent, tags)
        records.append(rec)
        transferred = transferred or kept
    if tsne:
        for png in _tsne(split.cfg, split.base, transferred, split.ds, split.out_dir, split.seed):
            parent.log_artifact(png)
    del transferred, kept
    release_memory()
    return records


def transfer_task(cfg: Mapping[str, Any], out_dir: str | Path, tracker: NullTracker | None = None) -> dict:
    cfg, tracker, out_dir = validate(cfg), tracker or NullTracker(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = cfg["seed"]
    seed_everything(seed)
    splits = [load_dataset(cfg["data"], seed=seed + r) for r in range(cfg["transfer"]["repeats"])]
    if cfg["base"]["data"]:
        dataset_checksum(cfg["base"]["data"])  # the base data must exist (t-SNE reads it) even when reused
    if cfg["transfer"]["adapt"] and not (cfg["base"]["path"] or cfg["base"]["run_id"]):
        require_word2vec(cfg["base"]["pretrain"]["method"])  # before a composed base is trained
    base, base_info = obtain_base(cfg, out_dir, tracker)
    if cfg["transfer"]["adapt"]:
        require_word2vec(pretrain_setting(base, "method"))
    if "scratch_pretrained" in cfg["transfer"]["methods"] and "scratch_pretrained" not in methods_of(cfg, base):
        log.debug("scratch_pretrained: left out, the base has no pretrain stage (base.pretrain.method=none)")
    arch = with_categorical(target_architecture(base.model_cfg["architecture"], cfg["model"]), splits[0].categorical)
    oov = token_vocab(base.preprocessor).oov_rate(tokens_of(base.preprocessor, splits[0].train["text"]))
    log.info("target %s: OOV rate under the base vocabulary %.2f%%", splits[0].name, 100 * oov)
    tags = {"xfer.task": "transfer", "xfer.data": splits[0].name, "xfer.version": __version__,
            "xfer.base_run": str(base_info.get("run_id", "")), "xfer.base_source": base_info["source"]}
    started = time.perf_counter()
    with tracked_run(tracker, cfg["tracking"]["run_name"] or f"{splits[0].name}-transfer",
                     {**tags, "xfer.method": "comparison"}) as parent:
        parent.log_params(flatten(cfg))
        parent.log_metrics({"oov_rate": oov})
        records = []
        for r, ds in enumerate(splits):
            records += _run_split(Split(cfg, ds, base, arch, seed + r, out_dir), parent, tags, tsne=r == 0)
        summary, text = _report(cfg, records, splits, base_info, oov, out_dir, parent)
        parent.log_metrics({"best_test_roc_auc": float(summary.iloc[0]["test_roc_auc"]),
                            "wall_seconds": time.perf_counter() - started})
        parent.set_tags({"xfer.best_method": str(summary.iloc[0]["method"])})
    print(f"\n{text}")
    if tracker.comparison_view:
        log.info("in the MLflow UI (mlflow ui --backend-store-uri %s) the runs grouped by method: %s",
                 tracker.uri, tracker.comparison_view)
    transfer_rows = [r for r in records if r["method"].startswith("transfer")]
    objective = float(np.mean([r["best_val_roc_auc"] for r in transfer_rows])) if transfer_rows else None
    return {"records": records, "summary": summary, "run_id": tracker.run_id, "objective": objective,
            "comparison": str(out_dir / "comparison.md"), "base": base_info}
