"""The train job (``task: train``): fit preprocessing and a network on ``data``, score its test
split, save a bundle and track the run; resumable from its checkpoints."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import yaml

from .. import __version__
from ..bundle import Bundle, fingerprint, save_bundle
from ..data import Dataset, dataset_checksum, input_spec, load_dataset
from ..encode import classification_metrics, context, encode_frame, predict_logits, predict_proba, sigmoid
from ..errors import ConfigError
from ..models import ARCHITECTURE_REVISION, build_model, initialize, layer_param_counts, set_param, with_categorical
from ..plots import training_curve
from ..schema import validate
from ..tracking import CHECKPOINT_SLOTS, NullTracker, flatten, tracked_run
from ..train import fit, read_checkpoint_state, release_memory, seed_everything
from ..pretrain import apply_vectors
from .. import selftrain
from ..transforms import build_preprocessor, fit_preprocessor, token_vocab
from .pretrain import obtain_vectors, stage_fingerprint_part

log = logging.getLogger(__name__)

#: trainer keys that do not change what is learned
RUNTIME_KEYS = ("progress", "ctx", "checkpoint")


def data_settings(data_cfg: Mapping) -> dict:
    """A data config without its file paths (data counts by content, through its checksum)."""
    return {k: v for k, v in data_cfg.items() if k != "files"}


#: trainer keys added after stores had runs, with the value that learns what was learned before
#: them: at that value they stay out of fingerprints, so those runs are still found and reused
NEUTRAL_KEYS = {"select_tolerance": 0.0}


def learned_trainer(trainer_cfg: Mapping) -> dict:
    """A trainer config without the runtime-only switches (progress bar, device, checkpoints)
    and without later keys left at their neutral value (``NEUTRAL_KEYS``)."""
    return {k: v for k, v in trainer_cfg.items()
            if k not in RUNTIME_KEYS and not (k in NEUTRAL_KEYS and v == NEUTRAL_KEYS[k])}


def base_fingerprint(stage: Mapping, data_checksum: str | None = None) -> str:
    """Identity of a trained network: data (by content) + transforms + model + optimizer +
    trainer + seed. Paths and runtime-only settings (progress bar, device) do not count."""
    data, trainer = data_settings(stage["data"]), learned_trainer(stage["trainer"])
    checksum = data_checksum or dataset_checksum(stage["data"])
    return fingerprint({"data": data, "data_checksum": checksum, "transforms": stage["transforms"],
                        "model": stage["model"], "optimizer": stage["optimizer"], "trainer": trainer,
                        "seed": stage["seed"], "architecture": ARCHITECTURE_REVISION,
                        **stage_fingerprint_part(stage, checksum),
                        **selftrain.fingerprint_part(stage.get("self_train") or {})})


def encode_splits(pre, ds: Dataset, model_cfg: Mapping, trainer_cfg: Mapping) -> dict[str, tuple]:
    """Every split -> (model-ready sequences, labels)."""
    return {name: (encode_frame(pre, frame, model_cfg, trainer_cfg["max_len"], trainer_cfg["truncate"]),
                   frame["label"].to_numpy()) for name, frame in ds.splits().items()}


def test_metrics(net, test: tuple, ctx) -> dict[str, float]:
    """test_* metrics, and for a network with an n-gram branch each branch's alone."""
    logits = predict_logits(net, test[0], ctx=ctx)
    metrics = {f"test_{k}": v for k, v in classification_metrics(test[1], sigmoid(logits[:, 0])).items()}
    if getattr(net, "ngrams", None) is not None:  # columns 1, 2: the branches (models.TextClassifier)
        for col, branch in ((1, "encoder"), (2, "ngrams")):
            m = classification_metrics(test[1], sigmoid(logits[:, col]))
            metrics.update({f"test_{branch}_branch_{k}": m[k] for k in ("accuracy", "roc_auc")})
    return metrics


def fit_and_test(net, splits: Mapping[str, tuple], trainer_cfg: Mapping, opt_cfg: Mapping, seed: int,
                 tracker: NullTracker, handlers=(), checkpoint: Mapping | None = None) -> tuple[dict, Any]:
    """Train on ``splits["train"]`` with early stopping on ``splits["val"]``, logging each epoch,
    then score ``splits["test"]``. Returns (test_* metrics + train_seconds, FitResult).
    ``checkpoint``: fit()'s checkpoint_dir / on_checkpoint / resume_from."""
    res = fit(net, splits["train"], splits["val"], trainer_cfg, opt_cfg, seed=seed, handlers=handlers,
              on_epoch=lambda e, m: tracker.log_metrics(m, step=e), **dict(checkpoint or {}))
    metrics = test_metrics(net, splits["test"], context(trainer_cfg["ctx"]))
    metrics.update({"train_seconds": res.train_seconds, "best_epoch": res.best_epoch + 1,
                    "best_val_roc_auc": res.best_val_roc_auc})
    return metrics, res



def log_checkpoint(tracker: NullTracker, path: Path) -> None:
    """Log a checkpoint directory into the run's artifacts, state.json (with the other files'
    checksums) last, so a partly copied checkpoint is recognisably incomplete."""
    epoch = json.loads((path / "state.json").read_text())["epoch"]  # checksummed when written
    slot = CHECKPOINT_SLOTS[int(epoch) % 2]
    for f in sorted(path.iterdir(), key=lambda f: f.name == "state.json"):
        tracker.log_artifact(f, slot)


def find_checkpoint(tracker: NullTracker, run_id: str, fp: str) -> Path:
    """The newest complete checkpoint of ``run_id``, after checking it trained this config."""
    tags = tracker.get_tags(run_id)
    if not tags:
        raise ConfigError(f"resume: run {run_id} not found (or tracking is disabled)")
    if tags.get("xfer.fingerprint") != fp:
        raise ConfigError(f"resume: run {run_id} trained another configuration (fingerprint "
                          f"{tags.get('xfer.fingerprint', '?')[:12]}, this job {fp[:12]})")
    if tracker.run_status(run_id) == "FINISHED":
        raise ConfigError(f"resume: run {run_id} already finished")
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


def label_names(data_cfg: Mapping) -> dict[str, str]:
    if data_cfg["label_rule"]:
        return {"0": f"not ({data_cfg['label_rule']})", "1": str(data_cfg["label_rule"])}

    def name(v):
        return v if isinstance(v, str) or v is None else "/".join(map(str, v))

    return {"0": str(name(data_cfg["negative"])), "1": str(name(data_cfg["positive"]))}


def _prepare(cfg: Mapping, ds: Dataset | None = None) -> dict:
    """Everything that can fail on bad input, before the run starts: data (``cfg.data``, or ``ds``),
    self-training's unlabelled texts, preprocessing, network."""
    if ds is None:
        ds = load_dataset(cfg["data"], seed=cfg["seed"])
        log.info("data %s: %d train / %d val / %d test reviews", ds.name, len(ds.train), len(ds.val), len(ds.test))
    unlabelled = selftrain.unlabelled_texts(cfg["self_train"]) if selftrain.enabled(cfg["self_train"]) else None
    t0 = time.perf_counter()
    pre = fit_preprocessor(build_preprocessor(cfg["transforms"], ds.categorical), ds.train)
    arch = with_categorical(cfg["model"], ds.categorical)  # the network's own columns, saved with it
    splits = encode_splits(pre, ds, arch, cfg["trainer"])
    prep_seconds = time.perf_counter() - t0
    vocab = token_vocab(pre).vocabulary_size
    log.info("vocabulary: %d tokens; preprocessing took %.1f s", vocab, prep_seconds)
    net = initialize(build_model(arch, vocab), cfg["seed"], ctx=context(cfg["trainer"]["ctx"]))
    return {"ds": ds, "pre": pre, "arch": arch, "splits": splits, "prep_seconds": prep_seconds, "vocab": vocab, "net": net,
            "fp": base_fingerprint(cfg, ds.checksum), "unlabelled": unlabelled}


def init_embedding(cfg: Mapping, job: dict, tracker: NullTracker) -> None:
    """The pretrain stage: its vectors (trained, reused or read; or ``job["vectors"]`` when set)
    into the embedding layer."""
    vectors, info = job.get("vectors") or obtain_vectors(cfg, job["pre"], job["ds"], tracker)
    job["vectors"] = (vectors, info)
    if vectors is None:
        job["pretrain"] = {}
        return
    tokens = token_vocab(job["pre"]).vocab_.idx_to_token
    coverage = apply_vectors(job["net"], tokens, vectors, cfg["pretrain"]["oov"], cfg["pretrain"]["rescale"])
    log.info("pretrain: vectors for %.1f%% of the vocabulary (%s)", 100 * coverage, info["source"])
    job["pretrain"] = {**info, "coverage": coverage, "config": {k: v for k, v in cfg["pretrain"].items() if k != "files"}}


class _Prefixed:
    """A tracker whose metrics get a prefix (the teacher's epochs beside the network's own)."""

    def __init__(self, tracker: NullTracker, prefix: str):
        self.tracker, self.prefix = tracker, prefix

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.tracker.log_metrics({self.prefix + k: v for k, v in metrics.items()}, step=step)


#: unlabelled reviews encoded and scored at a time (bounds the teacher's inference memory)
PSEUDO_CHUNK = 5000


def self_train(cfg: Mapping, job: dict, tracker: NullTracker) -> dict:
    """Self-training: train ``job``'s network as the teacher (its metrics logged as ``teacher_*``),
    pseudo-label ``self_train.files`` with it and return the student's job: the labelled and the
    pseudo-labelled reviews as its training split (validation and test unchanged), and either
    (``student: scratch``) preprocessing fitted again and a freshly initialised network with the
    same pretrained vectors, or (``student: teacher``) the teacher's preprocessing and trained
    network, its n-gram ratios fitted again on all the reviews, trained for ``student_epochs`` at
    ``student_lr``."""
    scfg, trainer = cfg["self_train"], cfg["trainer"]
    log.info("self-training: the teacher trains on the %d labelled reviews", len(job["ds"].train))
    # only the metrics are kept: the fit result holds the teacher's best-epoch snapshot
    teacher = fit_and_test(job["net"], job["splits"], trainer, cfg["optimizer"], cfg["seed"],
                           _Prefixed(tracker, "teacher_"))[0]
    texts, ds = job["unlabelled"], job["ds"]
    proba = score_texts(job["net"], job["pre"], texts, ds.categorical, job["arch"], trainer)
    pseudo = selftrain.pseudo_labelled(texts, proba, scfg["threshold"], scfg["max_rows"])
    positive = float(pseudo["label"].mean()) if len(pseudo) else 0.0
    # what the run and the bundle keep of the teacher
    summary = {k: v for k, v in teacher.items() if k.startswith("test_") or k == "train_seconds"}
    log.info("self-training: the teacher (test_accuracy %.4f) labelled %d of %d unlabelled reviews "
             "(%.0f%% positive); the network trains again on %d reviews", teacher["test_accuracy"], len(pseudo),
             len(texts), 100 * positive, len(ds.train) + len(pseudo))
    tracker.log_metrics({**{f"teacher_{k}": v for k, v in summary.items()}, "pseudo_labelled": len(pseudo),
                         "pseudo_positive_share": positive})
    tracker.log_params({"rows.teacher_train": len(ds.train), "rows.unlabelled": len(texts)})
    extra = pseudo_frame(pseudo, ds.categorical)
    student_ds = dataclasses.replace(ds, train=pd.concat([ds.train, extra], ignore_index=True))
    counts = {"pseudo_labelled": len(pseudo), "unlabelled": len(texts)}
    if scfg["student"] == "teacher":
        student = _warm_student(cfg, job, student_ds, extra, {**counts, "teacher": summary})
        del texts, proba, extra, pseudo, ds, student_ds
        release_memory()  # the unlabelled texts and the teacher's frames: their pages back before the fit
        return student
    vectors = job["vectors"]
    job.clear()  # the teacher's network and encoded splits, and the unlabelled texts
    checksum = ds.checksum
    del texts, proba, extra, pseudo, ds
    release_memory()
    student = _prepare({**cfg, "self_train": {**scfg, "files": []}}, student_ds)
    student.update(vectors=vectors, fp=base_fingerprint(cfg, checksum),
                   self_train={**counts, "teacher": summary})
    init_embedding(cfg, student, tracker)
    return student


def _warm_student(cfg: Mapping, job: dict, student_ds: Dataset, extra: pd.DataFrame, info: dict) -> dict:
    """The student that starts from the teacher: ``job`` with the pseudo-labelled rows encoded by
    the teacher's preprocessing and added to its training split, the n-gram ratios cleared (the
    fit estimates them again from all its reviews), ``student_epochs`` as the trainer's epochs and
    ``student_lr`` as the optimizer's learning rate."""
    trainer = cfg["trainer"]
    encoded = encode_frame(job["pre"], extra, job["arch"], trainer["max_len"], trainer["truncate"])
    x, y = job["splits"]["train"]
    job["splits"]["train"] = (x + encoded, np.concatenate([y, extra["label"].to_numpy()]))
    if getattr(job["net"], "ngrams", None) is not None:
        ratio = job["net"].ngrams.ratio
        set_param(ratio, np.zeros(ratio.shape, dtype=np.float32))
    scfg = cfg["self_train"]
    job.update(ds=student_ds, unlabelled=None, self_train=info,
               trainer={**trainer, "max_epochs": scfg["student_epochs"] or trainer["max_epochs"]},
               optimizer={**cfg["optimizer"], "lr": scfg["student_lr"] or cfg["optimizer"]["lr"]})
    return job


def _text_frame(texts, categorical) -> pd.DataFrame:
    """A standard frame of ``texts`` (categorical columns missing: the imputer fills them)."""
    return pd.DataFrame({"text": list(texts), **{c: np.nan for c in categorical}})


def score_texts(net, pre, texts, categorical, model_cfg: Mapping, trainer_cfg: Mapping) -> np.ndarray:
    """P(positive) of each raw text, encoded and scored ``PSEUDO_CHUNK`` texts at a time."""
    return np.concatenate([np.zeros(0)] + [
        predict_proba(net, encode_frame(pre, _text_frame(texts[i:i + PSEUDO_CHUNK], categorical), model_cfg,
                                        trainer_cfg["max_len"], trainer_cfg["truncate"]),
                      ctx=context(trainer_cfg["ctx"]))
        for i in range(0, len(texts), PSEUDO_CHUNK)])


def pseudo_frame(pseudo: pd.DataFrame, categorical) -> pd.DataFrame:
    """Training rows of ``selftrain.pseudo_labelled``'s reviews: text, missing categories, label."""
    return _text_frame(pseudo["text"].tolist(), categorical).assign(label=pseudo["label"].to_numpy())


def _log_start(cfg: Mapping, tracker: NullTracker, job: Mapping) -> None:
    tracker.log_params(flatten(cfg))
    if job.get("pretrain"):
        tracker.log_metrics({"pretrain_coverage": job["pretrain"]["coverage"]})
        if job["pretrain"].get("run_id"):
            tracker.set_tags({"xfer.pretrain_run": str(job["pretrain"]["run_id"])})
    tracker.log_datasets(job["ds"])
    tracker.log_text(yaml.safe_dump(dict(cfg), sort_keys=False), "config.yaml")
    tracker.log_params({"vocab_size": job["vocab"], **{f"rows.{k}": len(v[0]) for k, v in job["splits"].items()},
                        **{f"params.{k}": v for k, v in layer_param_counts(job["net"]).items()}})


def log_bundle(cfg: Mapping, tracker: NullTracker, bundle: Bundle, example) -> None:
    """The run keeps one copy of its network: inside its pyfunc model, or (``tracking.log_model``
    off) as the ``bundle`` artifact."""
    if cfg["tracking"]["log_model"]:
        tracker.log_model(bundle, example)
    else:
        tracker.log_artifacts(bundle.path, "bundle")


def tidy_outputs(cfg: Mapping, tracker: NullTracker, *paths: Path) -> None:
    """After a tracked job finished: drop the local copies of what MLflow now holds (bundles,
    checkpoints) unless ``tracking.keep_outputs``; without tracking they are the only copy."""
    if tracker.persistent and not cfg["tracking"]["keep_outputs"]:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)


def _save_outputs(cfg: Mapping, out_dir: Path, tracker: NullTracker, job: Mapping, final: dict, res) -> Bundle:
    ds = job["ds"]
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = save_bundle(out_dir / "bundle", job["net"], job["pre"], job["arch"], job["vocab"],
                         label_names(cfg["data"]), max_len=cfg["trainer"]["max_len"],
                         truncate=cfg["trainer"]["truncate"],
                         meta={"fingerprint": job["fp"], "data_checksum": ds.checksum, "data": ds.name,
                               "metrics": final, "seed": cfg["seed"], "inputs": input_spec(cfg["data"]),
                               "self_train": job.get("self_train") or {},
                               "pretrain": {k: v for k, v in job.get("pretrain", {}).items()
                                            if k not in ("coverage", "metrics")}})
    curve = training_curve(res.history, out_dir / "training_curve.png", f"{ds.name} / {cfg['model']['name']}")
    (out_dir / "metrics.json").write_text(json.dumps(final, indent=2))
    in_hand = Bundle.in_hand(bundle, job["net"], job["pre"])
    log_bundle(cfg, tracker, in_hand, ds.test)
    tracker.log_artifact(curve)
    tracker.log_artifact(out_dir / "metrics.json")
    return in_hand


def train_task(cfg: Mapping[str, Any], out_dir: str | Path, tracker: NullTracker | None = None) -> dict:
    """Fit preprocessing and a network on ``cfg.data``, evaluate on its test split,
    save a bundle and track the run. Returns the test metrics and where things went."""
    cfg, tracker, out_dir = validate(cfg), tracker or NullTracker(), Path(out_dir)
    seed_everything(cfg["seed"])
    job = _prepare(cfg)
    init_embedding(cfg, job, tracker)
    release_memory()  # the raw frames and tokenizer temporaries are gone; give their pages back
    tags = {"xfer.task": "train", "xfer.data": job["ds"].name, "xfer.model": cfg["model"]["name"],
            "xfer.fingerprint": job["fp"], "xfer.version": __version__}
    resume_id = cfg["resume"]
    if resume_id and job["unlabelled"] is not None:
        raise ConfigError("resume: not available with self_train (the teacher keeps no checkpoints); run the job again")
    resume_from = find_checkpoint(tracker, resume_id, job["fp"]) if resume_id else None
    with tracked_run(tracker, cfg["tracking"]["run_name"] or job["ds"].name, tags, resume_run_id=resume_id):
        if tracker.run_id and tracker.run_id != "local":
            hint = "" if job["unlabelled"] is not None else f" (if interrupted: resume={tracker.run_id})"
            log.info("MLflow run %s%s", tracker.run_id, hint)
        if job["unlabelled"] is not None:
            job = self_train(cfg, job, tracker)
        if not resume_id:
            _log_start(cfg, tracker, job)
        checkpoint = {"resume_from": resume_from}
        if cfg["trainer"]["checkpoint"]:
            checkpoint.update(checkpoint_dir=out_dir / "checkpoint",
                              on_checkpoint=lambda path: log_checkpoint(tracker, path))
        final, res = fit_and_test(job["net"], job["splits"], job.get("trainer", cfg["trainer"]),
                                  job.get("optimizer", cfg["optimizer"]), cfg["seed"], tracker, checkpoint=checkpoint)
        final["preprocess_seconds"] = job["prep_seconds"]
        tracker.log_metrics(final)
        bundle = _save_outputs(cfg, out_dir, tracker, job, final, res)
        if cfg["trainer"]["checkpoint"]:  # kept while the run could be resumed; a finished run needs none
            tracker.delete_artifacts("checkpoint")
    tidy_outputs(cfg, tracker, out_dir / "bundle", out_dir / "checkpoint")
    log.info("test: " + " ".join(f"{k} {v:.4f}" for k, v in final.items() if k.startswith("test_")))
    return {"metrics": final, "bundle": str(bundle.path) if bundle.path.exists() else None, "loaded": bundle,
            "run_id": tracker.run_id, "model": tracker.model_uri, "objective": res.best_val_roc_auc,
            "history": res.history, "pretrain": job["pretrain"]}
