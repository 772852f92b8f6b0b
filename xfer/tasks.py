"""Jobs that ``xfer.run`` dispatches to. Each takes a plain-dict config, an output
directory and a tracker, so they run the same under Hydra, in tests or in a notebook."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import yaml

from . import __version__
from .bundle import fingerprint, save_bundle
from .data import Dataset, dataset_checksum, input_spec, load_dataset
from .errors import ConfigError
from .models import ARCHITECTURE_REVISION, build_model, initialize, layer_param_counts
from .report import training_curve
from .tracking import NullTracker, flatten, tracked_run
from .train import classification_metrics, context, encode_frame, fit, predict_logits, seed_everything, sigmoid
from .transforms import build_preprocessor, fit_preprocessor, token_vocab

log = logging.getLogger(__name__)

#: trainer keys that do not change what is learned
_RUNTIME_KEYS = ("progress", "ctx", "checkpoint")


def base_fingerprint(cfg: Mapping, data_checksum: str | None = None) -> str:
    """Identity of a trained base: data (by content) + transforms + model + optimizer + trainer + seed.

    Paths and runtime-only settings (progress bar, device) do not count."""
    data = {k: v for k, v in cfg["data"].items() if k != "files"}
    trainer = {k: v for k, v in cfg["trainer"].items() if k not in _RUNTIME_KEYS}
    checksum = data_checksum or dataset_checksum(cfg["data"])
    return fingerprint({"data": data, "data_checksum": checksum, "transforms": cfg["transforms"],
                        "model": cfg["model"], "optimizer": cfg["optimizer"], "trainer": trainer,
                        "seed": cfg["seed"], "architecture": ARCHITECTURE_REVISION})


def encode_splits(pre, ds: Dataset, model_cfg: Mapping, trainer_cfg: Mapping) -> dict[str, tuple]:
    """Every split -> (model-ready sequences, labels)."""
    return {name: (encode_frame(pre, frame, model_cfg, trainer_cfg.get("max_len"), trainer_cfg.get("truncate", "head")),
                   frame["label"].to_numpy()) for name, frame in ds.splits().items()}


def fit_and_test(net, splits: Mapping[str, tuple], trainer_cfg: Mapping, opt_cfg: Mapping, seed: int,
                 tracker: NullTracker, before_epoch=None, checkpoint: Mapping | None = None) -> tuple[dict, Any]:
    """Train on ``splits["train"]`` with early stopping on ``splits["val"]``, logging each epoch,
    then score ``splits["test"]``. Returns (test_* metrics + train_seconds, FitResult).
    ``checkpoint``: fit()'s checkpoint_dir / on_checkpoint / resume_from."""
    res = fit(net, splits["train"], splits["val"], trainer_cfg, opt_cfg, seed=seed,
              on_epoch=lambda e, m: tracker.log_metrics(m, step=e), before_epoch=before_epoch,
              **dict(checkpoint or {}))
    logits = predict_logits(net, splits["test"][0], ctx=context(trainer_cfg.get("ctx")))
    metrics = {f"test_{k}": v for k, v in classification_metrics(splits["test"][1], sigmoid(logits[:, 0])).items()}
    if getattr(net, "ngrams", None) is not None:  # how each branch does alone (models.TextClassifier)
        for col, branch in ((1, "encoder"), (2, "ngrams")):
            m = classification_metrics(splits["test"][1], sigmoid(logits[:, col]))
            metrics.update({f"test_{branch}_branch_{k}": m[k] for k in ("accuracy", "roc_auc")})
    metrics.update({"train_seconds": res.train_seconds, "best_epoch": res.best_epoch + 1,
                    "best_val_roc_auc": res.best_val_roc_auc})
    return metrics, res


#: a checkpoint is logged into one of two artifact slots, alternating by epoch: a kill while
#: one slot is being copied leaves the other, complete, one
CHECKPOINT_SLOTS = ("checkpoint/a", "checkpoint/b")


def log_checkpoint(tracker: NullTracker, path: Path) -> None:
    """Log a checkpoint directory into the run's artifacts, state.json (with the other files'
    checksums) last, so a partly copied checkpoint is recognisably incomplete."""
    epoch = json.loads((path / "state.json").read_text())["epoch"]  # checksummed when written
    slot = CHECKPOINT_SLOTS[int(epoch) % 2]
    for f in sorted(path.iterdir(), key=lambda f: f.name == "state.json"):
        tracker.log_artifact(f, slot)


def find_checkpoint(tracker: NullTracker, run_id: str, fingerprint: str) -> Path:
    """The newest complete checkpoint of ``run_id``, after checking it trained this config."""
    from .train import read_checkpoint_state

    tags = tracker.get_tags(run_id)
    if not tags:
        raise ConfigError(f"resume: run {run_id} not found (or tracking is disabled)")
    if tags.get("xfer.fingerprint") != fingerprint:
        raise ConfigError(f"resume: run {run_id} trained another configuration (fingerprint "
                          f"{tags.get('xfer.fingerprint', '?')[:12]}, this job {fingerprint[:12]})")
    best: tuple[int, Path] | None = None
    for slot in CHECKPOINT_SLOTS:
        try:
            path = Path(tracker.download_artifacts(run_id, slot))
        except Exception:  # noqa: BLE001 - a slot that was never written
            continue
        state = read_checkpoint_state(path)
        if state is not None and (best is None or state["epoch"] > best[0]):
            best = (int(state["epoch"]), path)
    if best is None:
        raise ConfigError(f"resume: run {run_id} has no complete checkpoint (it stopped before its first epoch ended)")
    log.info("resume: run %s from its checkpoint after epoch %d", run_id, best[0] + 1)
    return best[1]


def train_task(cfg: Mapping[str, Any], out_dir: str | Path, tracker: NullTracker | None = None) -> dict:
    """Fit preprocessing and a network on ``cfg.data``, evaluate on its test split,
    save a bundle and track the run. Returns the test metrics and where things went."""
    tracker = tracker or NullTracker()
    out_dir = Path(out_dir)
    seed = int(cfg["seed"])
    seed_everything(seed)
    # everything that can fail on bad input happens before the run starts
    ds = load_dataset(cfg["data"], seed=seed)
    log.info("data %s: %d train / %d val / %d test reviews", ds.name, len(ds.train), len(ds.val), len(ds.test))
    t0 = time.perf_counter()
    pre = fit_preprocessor(build_preprocessor(cfg["transforms"], ds.categorical), ds.train)
    splits = encode_splits(pre, ds, cfg["model"], cfg["trainer"])
    prep_seconds = time.perf_counter() - t0
    vocab = token_vocab(pre).vocabulary_size
    log.info("vocabulary: %d tokens; preprocessing took %.1f s", vocab, prep_seconds)
    net = initialize(build_model(cfg["model"], vocab), seed, ctx=context(cfg["trainer"].get("ctx")))
    fp = base_fingerprint(cfg, ds.checksum)
    labels = label_names(cfg["data"])

    tags = {"xfer.task": "train", "xfer.data": ds.name, "xfer.model": cfg["model"].get("name", ""),
            "xfer.fingerprint": fp, "xfer.version": __version__}
    resume_id = str(cfg["resume"]) if cfg.get("resume") else None
    resume_from = find_checkpoint(tracker, resume_id, fp) if resume_id else None
    with tracked_run(tracker, cfg.get("tracking", {}).get("run_name") or ds.name, tags, resume_run_id=resume_id):
        if not resume_id:
            tracker.log_params(flatten(cfg))
            tracker.log_text(yaml.safe_dump(dict(cfg), sort_keys=False), "config.yaml")
            tracker.log_params({"vocab_size": vocab, **{f"rows.{k}": len(v[0]) for k, v in splits.items()},
                                **{f"params.{k}": v for k, v in layer_param_counts(net).items()}})
        if tracker.run_id and tracker.run_id != "local":
            log.info("MLflow run %s (if interrupted: resume=%s)", tracker.run_id, tracker.run_id)
        checkpoint = {"resume_from": resume_from}
        if cfg["trainer"].get("checkpoint", True):
            checkpoint.update(checkpoint_dir=out_dir / "checkpoint",
                              on_checkpoint=lambda path: log_checkpoint(tracker, path))
        final, res = fit_and_test(net, splits, cfg["trainer"], cfg["optimizer"], seed, tracker, checkpoint=checkpoint)
        final["preprocess_seconds"] = prep_seconds
        test = {k: v for k, v in final.items() if k.startswith("test_")}
        tracker.log_metrics(final)
        out_dir.mkdir(parents=True, exist_ok=True)
        bundle = save_bundle(out_dir / "bundle", net, pre, cfg["model"], vocab, labels,
                             max_len=cfg["trainer"].get("max_len"), truncate=cfg["trainer"].get("truncate", "head"),
                             meta={"fingerprint": fp, "data_checksum": ds.checksum, "data": ds.name,
                                   "metrics": final, "seed": seed,
                                   "inputs": input_spec(cfg["data"])})
        curve = training_curve(res.history, out_dir / "training_curve.png",
                               f"{ds.name} / {cfg['model'].get('name', '')}")
        (out_dir / "metrics.json").write_text(json.dumps(final, indent=2))
        tracker.log_artifacts(bundle, "bundle")
        if cfg.get("tracking", {}).get("log_model", True):
            tracker.log_model(bundle, ds.test)
        tracker.log_artifact(curve)
        tracker.log_artifact(out_dir / "metrics.json")
    log.info("test: " + " ".join(f"{k} {v:.4f}" for k, v in test.items()))
    return {"metrics": final, "bundle": str(bundle), "run_id": tracker.run_id,
            "objective": res.best_val_roc_auc, "history": res.history}


def label_names(data_cfg: Mapping) -> dict[str, str]:
    if data_cfg.get("label_rule"):
        return {"0": f"not ({data_cfg['label_rule']})", "1": str(data_cfg["label_rule"])}
    neg = data_cfg.get("negative")
    neg = neg if isinstance(neg, str) or neg is None else "/".join(map(str, neg))
    pos = data_cfg.get("positive")
    pos = pos if isinstance(pos, str) else "/".join(map(str, pos))
    return {"0": str(neg), "1": str(pos)}


TASKS = ("train", "transfer")


def run_task(cfg: Mapping[str, Any], out_dir: str | Path, tracker: NullTracker | None = None) -> dict:
    name = cfg.get("task", "train")
    if name not in TASKS:
        raise ConfigError(f"task: unknown task {name!r} ({' | '.join(TASKS)})")
    if name == "transfer":
        from .transfer import transfer_task

        return transfer_task(cfg, out_dir, tracker)
    return train_task(cfg, out_dir, tracker)
