"""Transfer a trained base network to a target dataset and compare it with the controls.

``transfer_task`` (``task: transfer``, e.g. ``+experiment=hotel_transfer``):

1. loads and validates the target data (before any run starts);
2. gets the base: ``base.path``, ``base.run_id``, or the finished MLflow run whose
   fingerprint matches the base config, training it (once, under a lock) if none exists;
3. per repeat (seeded split) trains the configured schedule on the target
   (``transfer``), the same architecture from random init (``scratch``), CatBoost on
   base-network embeddings and TF-IDF + logistic regression, each as a child run;
4. logs a comparison table, t-SNE maps of base vs transferred embeddings and the
   target's OOV rate under the base vocabulary on the parent run.
"""
from __future__ import annotations

import copy
import fcntl
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from . import __version__
from .bundle import Bundle, load_bundle, resolve_bundle, save_bundle
from .data import Dataset, dataset_checksum, input_spec, load_dataset, load_frame
from .embed import layer_embeddings, tsne_plot
from .errors import ConfigError
from .freeze import make_schedule, set_lr_mult, trainable_report
from .heads import catboost_embeddings, tfidf_lr
from .models import bigram_buckets, build_model, initialize, set_param
from .report import markdown_table
from .tracking import NullTracker, flatten, tracked_run
from .train import context, encode_frame, seed_everything
from .transforms import build_preprocessor, count_tokens, fit_preprocessor, token_vocab, tokens_of

log = logging.getLogger(__name__)

METHODS = ("transfer", "scratch", "catboost_embeddings", "tfidf_lr")


# --------------------------------------------------------------------------- base
def base_config(cfg: Mapping) -> dict:
    """The config that trains (and identifies) the base network of a transfer job."""
    base = cfg.get("base") or {}
    if not base.get("data"):
        raise ConfigError("base.data: a transfer job needs the base dataset config (e.g. /data@base.data: imdb)")
    return {"task": "train", "seed": int(base.get("seed", 0)), "data": base["data"],
            "transforms": cfg["transforms"], "model": cfg["model"], "optimizer": cfg["optimizer"],
            "trainer": cfg["trainer"],
            "tracking": {**cfg.get("tracking", {}), "run_name": f"{base['data'].get('name', 'base')}-base-"
                                                               f"{cfg['model'].get('name', '')}"}}


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (fcntl) held for the block; other processes wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _lock_dir(cfg: Mapping) -> Path:
    tracking = cfg.get("tracking") or {}
    if tracking.get("lock_dir"):
        return Path(tracking["lock_dir"])
    uri = str(tracking.get("uri") or "")
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent / ".xfer-locks"
    return Path(".xfer-locks").resolve()


def find_base_run(tracker: NullTracker, fp: str) -> dict | None:
    runs = tracker.find_runs(f"tags.`xfer.fingerprint` = '{fp}' and attributes.status = 'FINISHED' "
                             f"and tags.`xfer.task` = 'train'")
    return runs[0] if runs else None


def obtain_base(cfg: Mapping, out_dir: Path, tracker: NullTracker) -> tuple[Bundle, dict]:
    """Load the base named by ``base.path``/``base.run_id``, or reuse/train it by fingerprint."""
    from .tasks import base_fingerprint, train_task

    base = cfg.get("base") or {}
    if base.get("path"):
        return load_bundle(base["path"]), {"source": "path", "path": str(base["path"])}
    if base.get("run_id"):
        return resolve_bundle(str(base["run_id"]), (cfg.get("tracking") or {}).get("uri")), \
            {"source": "run_id", "run_id": str(base["run_id"])}
    bcfg = base_config(cfg)
    fp = base_fingerprint(bcfg)
    with file_lock(_lock_dir(cfg) / f"base-{fp[:20]}.lock"):
        found = find_base_run(tracker, fp)
        if found:
            log.info("base: reusing finished run %s (fingerprint %s)", found["run_id"], fp[:12])
            local = tracker.download_artifacts(found["run_id"], "bundle")
            return load_bundle(local), {"source": "reused", "run_id": found["run_id"], "fingerprint": fp}
        log.info("base: no finished run with fingerprint %s; training it", fp[:12])
        result = train_task(bcfg, out_dir / "base", tracker.child())
    return load_bundle(result["bundle"]), {"source": "trained", "run_id": result["run_id"], "fingerprint": fp}


# --------------------------------------------------------------------------- vocabulary / surgery
def extend_preprocessor(base_pre, train_frame: pd.DataFrame, min_freq: int = 2):
    """Copy of the base preprocessor whose vocabulary gains the target's tokens seen at
    least ``min_freq`` times (appended after the base ids, by frequency then spelling)."""
    pre = copy.deepcopy(base_pre)
    t2i = token_vocab(pre)
    itos = list(t2i.vocab_.idx_to_token)
    known = set(itos)
    counts = count_tokens(tokens_of(pre, train_frame["text"]))
    new = sorted((t for t, c in counts.items() if c >= min_freq and t not in known), key=lambda t: (-counts[t], t))
    t2i.with_vocabulary(itos + new)
    return pre, len(new)


def transplant(base: Bundle, vocab_size: int, hidden: str = "keep", seed: int = 0, ctx=None,
               arch: Mapping | None = None):
    """A network of the base's architecture (or ``arch``: the same layers, other dropout) for
    ``vocab_size`` tokens, carrying the base's weights: every layer but the (fresh) output, and
    the hidden layer unless ``replace``. Embedding rows of new tokens start at the mean base
    embedding; bigram rows move with the vocabulary offset."""
    arch = arch or base.model_cfg["architecture"]
    old_v, buckets = base.vocab_size, bigram_buckets(arch)
    net = initialize(build_model(arch, vocab_size), seed, ctx=ctx)
    src = base.net.collect_params()
    for name, p in net.collect_params().items():
        layer = name.split("_")[0]
        if layer == "output" or (layer == "hidden" and hidden == "replace"):
            continue
        w = src[name].data().asnumpy()
        if name == "embedding_weight" and vocab_size != old_v:
            new = np.empty((vocab_size + buckets, w.shape[1]), dtype=w.dtype)
            new[:old_v] = w[:old_v]
            new[old_v:vocab_size] = w[2:old_v].mean(axis=0)
            new[vocab_size:] = w[old_v:]
            w = new
        set_param(p, w)
    return net


def with_dropout(arch: Mapping, dropout: Mapping | None) -> dict:
    """The base architecture with the target's dropout rates (``transfer.dropout.<layer>``;
    null keeps the base's). Dropout has no weights, so the transplant is unchanged."""
    arch = copy.deepcopy(dict(arch))
    for layer, rate in (dropout or {}).items():
        if rate is None:
            continue
        if layer not in ("embedding", "hidden") or not isinstance(arch.get(layer), Mapping):
            raise ConfigError(f"transfer.dropout.{layer}: only embedding and hidden have dropout")
        if not 0 <= float(rate) < 1:
            raise ConfigError(f"transfer.dropout.{layer}: {rate} must be in [0, 1)")
        arch[layer] = {**arch[layer], "dropout": float(rate)}
    return arch


def probe_init(net, seqs, labels, C: float = 1.0, seed: int = 0) -> float:
    """Initialise the fresh output layer by logistic regression on the hidden layer's
    outputs over the training reviews (a linear probe, as in LP-FT: Kumar et al., 2022).

    A randomly initialised head on strong transferred features starts with a random sign;
    with a few hundred examples the first epochs cannot fix that, and early stopping may
    even keep it. Returns the probe's training accuracy."""
    from sklearn.linear_model import LogisticRegression

    feats = layer_embeddings(net, seqs, "hidden")
    if len(np.unique(labels)) < 2:
        return float("nan")
    probe = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(feats, labels)
    set_param(net.output.weight, probe.coef_.astype(np.float32))
    set_param(net.output.bias, probe.intercept_.astype(np.float32))
    return float(probe.score(feats, labels))


# --------------------------------------------------------------------------- one repeat
def _train_net(net, pre, ds: Dataset, arch, trainer_cfg, opt_cfg, schedule, seed, tracker, head_init="random"):
    from .tasks import encode_splits, fit_and_test

    splits = encode_splits(pre, ds, arch, trainer_cfg)
    if head_init == "probe":
        tracker.log_metrics({"probe_train_accuracy": probe_init(net, *splits["train"], seed=seed)})
    elif head_init != "random":
        raise ConfigError(f"transfer.head_init: {head_init!r} must be probe or random")
    set_lr_mult(net, schedule.lr_mults(net))
    history_trainable = []

    def before(epoch):
        on = schedule.apply(net, epoch)
        history_trainable.append(on)
        log.info("epoch %d trains: %s", epoch + 1, ", ".join(on))

    metrics, res = fit_and_test(net, splits, trainer_cfg, opt_cfg, seed, tracker, before_epoch=before)
    return metrics, res, history_trainable


def run_repeat(cfg: Mapping, ds: Dataset, base: Bundle, seed: int, out_dir: Path, tracker: NullTracker,
               parent_id: str | None, common_tags: Mapping[str, str]) -> tuple[list[dict], tuple | None]:
    """All methods on one seeded split; returns one record per method and the transferred
    (net, preprocessor), if a transfer ran."""
    from .tasks import label_names

    tcfg = cfg.get("transfer") or {}
    methods = list(tcfg.get("methods") or METHODS)
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ConfigError(f"transfer.methods: unknown method(s) {sorted(unknown)} ({' | '.join(METHODS)})")
    trainer_cfg = {**cfg["trainer"], **(tcfg.get("trainer") or {})}
    opt_cfg = {**cfg["optimizer"], **(tcfg.get("optimizer") or {})}
    arch = with_dropout(base.model_cfg["architecture"], tcfg.get("dropout"))
    sched_cfg = dict(cfg.get("schedule") or {"name": "gradual"})
    if tcfg.get("unfreeze_every") is not None:  # the gradual schedule's pace, settable per sweep/trial
        sched_cfg["unfreeze_every"] = int(tcfg["unfreeze_every"])
    hidden = str(tcfg.get("hidden", "keep"))
    if hidden not in ("keep", "replace"):
        raise ConfigError(f"transfer.hidden: {hidden!r} must be keep or replace")
    n_train = len(ds.train)
    records = []

    def child(method: str, name: str):
        tags = {**common_tags, "xfer.method": method, "xfer.n_train": str(n_train), "xfer.seed": str(seed)}
        return tracked_run(tracker.child(), name, tags, parent_id)

    def record(method, metrics, run):
        rec = {"method": method, "n_train": n_train, "seed": seed, **metrics, "run_id": run.run_id}
        records.append(rec)
        log.info("%-22s n_train=%d seed=%d test_roc_auc %.4f test_accuracy %.4f", method, n_train, seed,
                 metrics["test_roc_auc"], metrics["test_accuracy"])

    sched_name = sched_cfg.get("name", "gradual")
    if "transfer" in methods and sched_name != "scratch":
        method = f"transfer_{sched_name}"
        with child(method, f"{ds.name}-{method}-n{n_train}-s{seed}") as run:
            vocab_policy = str(tcfg.get("vocab", "keep"))
            if vocab_policy == "keep":
                pre, n_new = base.preprocessor, 0
            elif vocab_policy == "extend":
                pre, n_new = extend_preprocessor(base.preprocessor, ds.train, int(tcfg.get("extend_min_freq", 2)))
            else:
                raise ConfigError(f"transfer.vocab: {vocab_policy!r} must be keep or extend")
            vocab = token_vocab(pre).vocabulary_size
            net = transplant(base, vocab, hidden, seed, ctx=context(trainer_cfg.get("ctx")), arch=arch)
            schedule = make_schedule(sched_cfg, hidden_replaced=hidden == "replace")
            run.log_params({**flatten({"schedule": sched_cfg, "transfer": tcfg}), "vocab_size": vocab,
                            "vocab_new_tokens": n_new, "n_train": n_train, "seed": seed})
            metrics, res, trained = _train_net(net, pre, ds, arch, trainer_cfg, opt_cfg, schedule, seed, run,
                                               head_init=str(tcfg.get("head_init", "probe")))
            run.log_metrics(metrics)
            run.log_text(json.dumps({"trainable_per_epoch": trained, "params": trainable_report(net)}, indent=2),
                         "schedule.json")
            if tcfg.get("save_bundle", True):
                b = save_bundle(out_dir / f"{method}-s{seed}" / "bundle", net, pre, arch, vocab,
                                label_names(cfg["data"]),
                                max_len=trainer_cfg.get("max_len"), truncate=trainer_cfg.get("truncate", "head"),
                                meta={"base": base.meta.get("fingerprint"), "metrics": metrics, "seed": seed,
                                      "schedule": sched_cfg, "data": ds.name, "inputs": input_spec(cfg["data"])})
                run.log_artifacts(b, "bundle")
                if (cfg.get("tracking") or {}).get("log_model", True):
                    run.log_model(b, ds.test)
            record(method, metrics, run)
            transferred = (net, pre)
    else:
        transferred = None

    if "scratch" in methods or sched_name == "scratch":
        with child("scratch", f"{ds.name}-scratch-n{n_train}-s{seed}") as run:
            pre = fit_preprocessor(build_preprocessor(cfg["transforms"], ds.categorical), ds.train)
            vocab = token_vocab(pre).vocabulary_size
            net = initialize(build_model(arch, vocab), seed, ctx=context(trainer_cfg.get("ctx")))
            run.log_params({"vocab_size": vocab, "n_train": n_train, "seed": seed})
            metrics, _, _ = _train_net(net, pre, ds, arch, trainer_cfg, opt_cfg, make_schedule({"name": "scratch"}),
                                       seed, run)
            run.log_metrics(metrics)
            record("scratch", metrics, run)

    if "catboost_embeddings" in methods:
        hcfg = (cfg.get("heads") or {}).get("catboost") or {}
        layer = str(hcfg.get("layer", "encoder"))
        with child("catboost_embeddings", f"{ds.name}-catboost-{layer}-n{n_train}-s{seed}") as run:
            feats = {k: layer_embeddings(base.net, base.sequences(f), layer) for k, f in ds.splits().items()}
            run.log_params({**flatten({"head": hcfg}), "n_train": n_train, "seed": seed,
                            "categorical": ",".join(ds.categorical)})
            metrics = catboost_embeddings(feats, ds.splits(), ds.categorical, hcfg, seed)
            run.log_metrics(metrics)
            record("catboost_embeddings", metrics, run)

    if "tfidf_lr" in methods:
        hcfg = (cfg.get("heads") or {}).get("tfidf_lr") or {}
        with child("tfidf_lr", f"{ds.name}-tfidf_lr-n{n_train}-s{seed}") as run:
            run.log_params({**flatten({"head": hcfg}), "n_train": n_train, "seed": seed})
            metrics = tfidf_lr(ds.train, ds.val, ds.test, hcfg, seed)
            run.log_metrics(metrics)
            record("tfidf_lr", metrics, run)
    return records, transferred


# --------------------------------------------------------------------------- summary
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
    tcfg = (cfg.get("transfer") or {}).get("tsne") or {}
    if not tcfg.get("enabled", True):
        return []
    n = int(tcfg.get("n_per_domain", 300))
    layer = str(tcfg.get("layer", "hidden"))
    bdata = cfg["base"]["data"]
    src_file = bdata["files"].get("test") or bdata["files"].get("all")
    src = load_frame(src_file, bdata)
    rng = np.random.RandomState(seed)
    src = src.iloc[rng.choice(len(src), size=min(n, len(src)), replace=False)]
    tgt = ds.test.iloc[rng.choice(len(ds.test), size=min(n, len(ds.test)), replace=False)]
    names = (bdata.get("name", "base"), ds.name)
    paths = []
    nets = [("base", base.net, base.preprocessor, base.model_cfg["architecture"])]
    if transferred is not None:
        nets.append(("transferred", transferred[0], transferred[1], base.model_cfg["architecture"]))
    trainer_cfg = cfg["trainer"]
    for tag, net, pre, arch in nets:
        groups = {name: (layer_embeddings(net, encode_frame(pre, f, arch, trainer_cfg.get("max_len"),
                                                            trainer_cfg.get("truncate", "head")), layer),
                         f["label"].to_numpy()) for name, f in zip(names, (src, tgt))}
        paths.append(tsne_plot(groups, out_dir / f"tsne_{tag}.png",
                               f"t-SNE of '{layer}' outputs, {tag} network", seed=seed))
    return paths


def transfer_task(cfg: Mapping[str, Any], out_dir: str | Path, tracker: NullTracker | None = None) -> dict:
    tracker = tracker or NullTracker()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg["seed"])
    tcfg = cfg.get("transfer") or {}
    repeats = int(tcfg.get("repeats", 1))
    if repeats < 1:
        raise ConfigError("transfer.repeats must be >= 1")
    seed_everything(seed)
    splits = [load_dataset(cfg["data"], seed=seed + r) for r in range(repeats)]  # validate before any run
    dataset_checksum(base_config(cfg)["data"])  # the base data must exist (t-SNE reads it) even when reused
    base, base_info = obtain_base(cfg, out_dir, tracker)
    oov = token_vocab(base.preprocessor).oov_rate(tokens_of(base.preprocessor, splits[0].train["text"]))
    log.info("target %s: OOV rate under the base vocabulary %.2f%%", splits[0].name, 100 * oov)
    tags = {"xfer.task": "transfer", "xfer.data": splits[0].name, "xfer.version": __version__,
            "xfer.base_run": str(base_info.get("run_id", "")), "xfer.base_source": base_info["source"]}
    started = time.perf_counter()
    with tracked_run(tracker, (cfg.get("tracking") or {}).get("run_name") or f"{splits[0].name}-transfer",
                     {**tags, "xfer.method": "comparison"}) as parent:
        parent.log_params(flatten({k: v for k, v in cfg.items() if k != "hydra"}))
        parent.log_metrics({"oov_rate": oov})
        records, transferred = [], None
        for r, ds in enumerate(splits):
            recs, tr = run_repeat(cfg, ds, base, seed + r, out_dir, parent, parent.run_id, tags)
            records += recs
            transferred = transferred or tr
        summary = summarise(records)
        table = markdown_table(summary.to_dict("records"), ["method", "n_train", "repeats", "test_roc_auc",
                                                            "test_roc_auc_std", "test_accuracy", "test_f1",
                                                            "train_seconds"])
        note = (f"{len(splits)} seeded split(s) of {splits[0].name} (seeds {seed}..{seed + repeats - 1}); "
                f"mean and std over them. Base: {base_info['source']} {base_info.get('run_id', '')}. "
                f"OOV rate of the target under the base vocabulary: {100 * oov:.2f}%.\n\n")
        (out_dir / "comparison.md").write_text(note + table)
        summary.to_csv(out_dir / "comparison.csv", index=False)
        (out_dir / "records.json").write_text(json.dumps(records, indent=2))
        for f in ("comparison.md", "comparison.csv", "records.json"):
            parent.log_artifact(out_dir / f)
        for png in _tsne(cfg, base, transferred, splits[0], out_dir, seed):
            parent.log_artifact(png)
        best = summary.iloc[0]
        parent.log_metrics({"best_test_roc_auc": float(best["test_roc_auc"]),
                            "wall_seconds": time.perf_counter() - started})
        parent.set_tags({"xfer.best_method": str(best["method"])})
    print(f"\n{note}{table}")
    transfer_rows = [r for r in records if r["method"].startswith("transfer")]
    objective = float(np.mean([r["best_val_roc_auc"] for r in transfer_rows])) if transfer_rows else None
    return {"records": records, "summary": summary, "run_id": tracker.run_id, "objective": objective,
            "comparison": str(out_dir / "comparison.md"), "base": base_info}
