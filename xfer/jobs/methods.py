"""The methods a transfer job compares, behind one registry: name -> ``Method``.

Every method runs through ``run_method``, which opens its child run, logs and records. The
controls (``scratch``, ``catboost_embeddings``, ``tfidf_lr``) do not depend on the transfer
schedule or its learning rate: each has a fingerprint over what it does depend on (data by
content, split seed, n_train, its own config) and a finished run with that fingerprint is
reused, so a sweep over schedules computes each control once per (data, seed, n_train).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import pandas as pd

from .. import selftrain
from ..bundle import DELTA, Bundle, fingerprint, save_bundle
from ..data import Dataset, input_spec
from ..features import layer_embeddings
from ..encode import context
from ..errors import ConfigError
from ..freeze import make_schedule, set_lr_mult, trainable_report
from ..heads import catboost_embeddings, tfidf_lr
from ..models import build_model, initialize
from ..pretrain import (WordVectors, adapt_vectors, apply_adaptation, apply_vectors, read_vectors,
                        unlabelled_texts)
from ..schema import Pretrain
from ..surgery import extend_preprocessor, fit_target_ngrams, probe_init, transplant
from ..tracking import NullTracker, flatten, tracked_run
from ..train import BeforeEpoch, release_memory
from ..transforms import build_preprocessor, fit_preprocessor, token_vocab
from .stages import reuse_or_run
from .train import (data_settings, encode_splits, fit_and_test, label_names, learned_trainer, log_bundle,
                    pseudo_frame, score_texts, tidy_outputs)

log = logging.getLogger(__name__)


class Teacher(NamedTuple):
    """transfer.self_train: what the transfer hands its self-trained student. ``metrics`` and
    ``kept`` are what a student with no pseudo-labelled rows would reproduce (the same rows, seed
    and initialisation)."""
    pseudo: pd.DataFrame    # the target reviews the transfer's network is sure of
    metrics: dict           # the transfer's results
    kept: tuple             # its (net, preprocessor)


@dataclass
class Split:
    """One seeded split of the target and what every method needs to run on it."""
    cfg: dict
    ds: Dataset
    base: Bundle
    arch: dict          # the target network's architecture (the base's, target dropout)
    seed: int
    out_dir: Path
    #: the base's vectors adapted to this split's target text (transfer.adapt), made once
    adapted: WordVectors | None = None
    adapt_metrics: dict = field(default_factory=dict)
    #: transfer.self_train: the transfer in its teacher role, until its student runs
    teacher: Teacher | None = None
    #: rows of ds.train that are pseudo-labelled (the self-trained transfer's split; None on
    #: every other split, so a student with no pseudo-labelled rows is still a student)
    pseudo_rows: int | None = None

    @property
    def n_train(self) -> int:
        """Labelled training rows."""
        return len(self.ds.train) - (self.pseudo_rows or 0)

    @functools.cached_property
    def extra_texts(self) -> list[str]:
        """The target's extra unlabelled text (``transfer.adapt_files``), read once per split."""
        tcfg = self.cfg["transfer"]
        return unlabelled_texts({"files": tcfg["adapt_files"], "text_column": tcfg["adapt_text_column"]}, [])

    def data_identity(self) -> dict:
        return {"data": data_settings(self.cfg["data"]), "checksum": self.ds.checksum, "seed": self.seed}

    def base_identity(self) -> dict:
        files = self.base.meta.get("files", {})
        return {"net": files.get("net.params") or files.get(DELTA), "preprocessor": files.get("preprocessor.joblib")}


@dataclass
class Method:
    run: Callable[[Split, NullTracker], tuple[dict, Any]]   # -> (metrics, anything else to keep)
    label: Callable[[Split], str]                           # the record's and run's method name
    depends_on: Callable[[Split], dict] | None = None       # None: never reused


def train_net(net, pre, split: Split, schedule, tracker: NullTracker, head_init: str = "random",
              ngrams: str = "keep"):
    """Relearn ``net`` on the split with a freezing schedule; returns (metrics, trainable layers per epoch)."""
    cfg = split.cfg
    splits = encode_splits(pre, split.ds, split.arch, cfg["trainer"])
    if getattr(net, "ngrams", None) is not None and net.ngrams.fitted():  # transferred: the base's ratios
        tracker.log_metrics(fit_target_ngrams(net, *splits["train"], split.ds.train, split.arch,
                                              extend=ngrams == "extend"))
    if head_init == "probe":
        tracker.log_metrics({"probe_train_accuracy": probe_init(net, *splits["train"], seed=split.seed)})
    set_lr_mult(net, schedule.lr_mults(net))
    trained = []

    def before(epoch):
        trained.append(schedule.apply(net, epoch))
        log.info("epoch %d trains: %s", epoch + 1, ", ".join(trained[-1]))

    metrics, _ = fit_and_test(net, splits, cfg["trainer"], cfg["optimizer"], split.seed, tracker,
                              handlers=[BeforeEpoch(before)])
    return metrics, trained


def schedule_config(cfg: Mapping) -> dict:
    sched = dict(cfg["schedule"])
    if cfg["transfer"]["unfreeze_every"] is not None and sched["name"] == "gradual":
        sched["unfreeze_every"] = cfg["transfer"]["unfreeze_every"]  # the pace, settable per sweep/trial
    return sched


def _transfer(split: Split, run: NullTracker, adapted: bool = False) -> tuple[dict, Any]:
    cfg, tcfg, base = split.cfg, split.cfg["transfer"], split.base
    if tcfg["vocab"] == "extend":
        pre, n_new = extend_preprocessor(base.preprocessor, split.ds.train, tcfg["extend_min_freq"])
    else:
        pre, n_new = base.preprocessor, 0
    vocab = token_vocab(pre).vocabulary_size
    net = transplant(base, vocab, tcfg["hidden"], split.seed, ctx=context(cfg["trainer"]["ctx"]), arch=split.arch)
    if adapted:
        before, after = _base_vectors(split, run), _adapted_vectors(split, run)
        run.log_metrics(apply_adaptation(net, token_vocab(pre).vocab_.idx_to_token, base.vocab_size, before, after,
                                         pretrain_setting(base, "rescale")))
    sched = schedule_config(cfg)
    run.log_params({**flatten({"schedule": sched, "transfer": tcfg}), "vocab_size": vocab,
                    "vocab_new_tokens": n_new, "n_train": split.n_train, "seed": split.seed, "adapted": adapted})
    metrics, trained = train_net(net, pre, split, make_schedule(sched, hidden_replaced=tcfg["hidden"] == "replace"),
                                 run, head_init=tcfg["head_init"], ngrams=tcfg["ngrams"])
    run.log_text(json.dumps({"trainable_per_epoch": trained, "params": trainable_report(net)}, indent=2),
                 "schedule.json")
    if tcfg["self_train"] and split.pseudo_rows is None and adapted == tcfg["adapt"]:
        split.teacher = Teacher(_pseudo_label(split, net, pre, run), metrics, (net, pre))
    if tcfg["save_bundle"]:
        _save(split, run, net, pre, vocab, metrics, sched, _transfer_name(split, sched, adapted))
    return metrics, (net, pre)


def _transfer_name(split: Split, sched: Mapping, adapted: bool) -> str:
    """The method's label (METHODS), so no two transfers of a split share a bundle directory."""
    role = "_selftrained" if split.pseudo_rows is not None else "_adapted" if adapted else ""
    return f"transfer_{sched['name']}{role}"


def _pseudo_label(split: Split, net, pre, run: NullTracker, prefix: str = "self_train_") -> pd.DataFrame:
    """The target's unlabelled reviews (its training pool beyond the labelled rows, and
    ``transfer.adapt_files``; never the validation or test split) that ``net`` is sure of; what
    it scored and how right it was go to ``run`` under ``prefix``."""
    tcfg, labelled = split.cfg["transfer"], set(split.ds.train["text"])
    pool = [t for t in split.ds.pool_text if t not in labelled]
    texts = [t for t in pool + split.extra_texts if t.strip()]
    proba = score_texts(net, pre, texts, split.ds.categorical, split.arch, split.cfg["trainer"])
    share = float(split.ds.train["label"].mean()) if tcfg["self_train_balance"] else None
    pseudo = selftrain.pseudo_labelled(texts, proba, tcfg["self_train_threshold"], positive_share=share,
                                       fill=tcfg["self_train_balance_by"] == "fill")
    log.info("self-training: the network labelled %d of %d unlabelled target reviews", len(pseudo), len(texts))
    # how right the pseudo-labels are, where n_train withheld the pool's labels (never trained on)
    check = selftrain.withheld_agreement(pseudo, split.ds.pool_text, split.ds.pool_label)
    run.log_metrics({f"{prefix}unlabelled": len(texts), f"{prefix}pseudo_labelled": len(pseudo),
                     **{f"{prefix}{k}": v for k, v in check.items()}})
    return pseudo


def _with_pseudo(split: Split, pseudo: pd.DataFrame) -> tuple[Split, pd.DataFrame]:
    """The split whose training rows are the labelled ones and ``pseudo``, and those pseudo rows."""
    extra = pseudo_frame(pseudo, split.ds.categorical)
    return dataclasses.replace(split, ds=dataclasses.replace(split.ds, train=pd.concat(
        [split.ds.train, extra], ignore_index=True)), pseudo_rows=len(extra)), extra


def _relabel(student: Split, split: Split, run: NullTracker, r: int) -> pd.DataFrame:
    """Round ``r``'s student, trained untracked and unsaved, pseudo-labels ``split``'s unlabelled
    reviews for round ``r + 1``; its results and pseudo-labels are logged on ``run``."""
    tcfg = split.cfg["transfer"]
    quiet = dataclasses.replace(student, cfg={**split.cfg, "transfer": {**tcfg, "save_bundle": False}})
    metrics, (net, pre) = _transfer(quiet, NullTracker(), adapted=tcfg["adapt"])
    run.log_metrics({f"round{r}_{k}": v for k, v in metrics.items() if k.startswith("test_")})
    return _pseudo_label(split, net, pre, run, prefix=f"self_train_round{r + 1}_")


def _selftrained(split: Split, run: NullTracker) -> tuple[dict, Any]:
    """The base transferred again, on the labelled and the pseudo-labelled target reviews
    (``transfer.self_train_rounds``: each student but the last labels them for the next)."""
    if split.teacher is None:
        raise ConfigError("transfer.self_train: transfer_selftrained needs the transfer method in transfer.methods")
    teacher, split.teacher = split.teacher, None
    student, extra = _with_pseudo(split, teacher.pseudo)
    for r in range(1, split.cfg["transfer"]["self_train_rounds"] if len(extra) else 1):
        following = _with_pseudo(split, _relabel(student, split, run, r))
        if not len(following[1]):  # round r's student is sure of no review: it is the one recorded
            log.info("self-training: round %d's student labelled no review; it is the student recorded", r)
            break
        student, extra = following
    # no pseudo-labelled rows: no share of positives (a share of nothing is not 0)
    run.log_metrics({"pseudo_labelled": len(extra),
                     **({"pseudo_positive_share": float(extra["label"].mean())} if len(extra) else {})})
    run.log_params({"rows.train": len(student.ds.train)})
    if len(extra):
        return _transfer(student, run, adapted=split.cfg["transfer"]["adapt"])
    # nothing pseudo-labelled (every training review labelled): training again on the same rows
    # from the same initialisation would repeat the teacher, so the teacher is the student
    log.info("self-training: no pseudo-labelled reviews; the student is the teacher (not trained again)")
    metrics, (net, pre) = teacher.metrics, teacher.kept
    run.log_params({"student_is_teacher": True})
    if split.cfg["transfer"]["save_bundle"]:
        sched = schedule_config(split.cfg)
        _save(student, run, net, pre, token_vocab(pre).vocabulary_size, metrics, sched,
              _transfer_name(student, sched, False))
    return dict(metrics), (net, pre)


def _save(split: Split, run: NullTracker, net, pre, vocab: int, metrics: dict, sched: dict, name: str) -> None:
    cfg = split.cfg
    path = save_bundle(split.out_dir / f"{name}-s{split.seed}" / "bundle", net, pre, split.arch,
                       vocab, label_names(cfg["data"]), max_len=cfg["trainer"]["max_len"],
                       truncate=cfg["trainer"]["truncate"],
                       meta={"base": split.base.meta.get("fingerprint"), "metrics": metrics, "seed": split.seed,
                             "schedule": sched, "data": split.ds.name, "inputs": input_spec(cfg["data"])},
                       base=split.base)
    log_bundle(cfg, run, Bundle.in_hand(path, net, pre), split.ds.test)
    tidy_outputs(cfg, run, path)


def _scratch(split: Split, run: NullTracker, pretrained: bool = False) -> tuple[dict, Any]:
    """The architecture from scratch on the target; ``pretrained``: its embedding started from the
    base's pretrained vectors (adapted to the target when ``transfer.adapt``), what unsupervised
    transfer alone gives (``scratch_pretrained``)."""
    pre = fit_preprocessor(build_preprocessor(split.cfg["transforms"], split.ds.categorical), split.ds.train)
    tokens = token_vocab(pre).vocab_.idx_to_token
    net = initialize(build_model(split.arch, len(tokens)), split.seed, ctx=context(split.cfg["trainer"]["ctx"]))
    if pretrained:
        vectors = _adapted_vectors(split, run) if split.cfg["transfer"]["adapt"] else _base_vectors(split, run)
        run.log_metrics({"pretrain_coverage": apply_vectors(net, tokens, vectors, pretrain_setting(split.base, "oov"),
                                                            pretrain_setting(split.base, "rescale"))})
    run.log_params({"vocab_size": len(tokens), "n_train": split.n_train, "seed": split.seed})
    metrics, _ = train_net(net, pre, split, make_schedule({"name": "scratch"}), run)
    return metrics, None


def base_label(base: Bundle) -> str:
    """The base as records name it: its model and the first 8 digits of its fingerprint."""
    name = base.model_cfg.get("architecture", {}).get("name", "?")
    return f"{name}-{str(base.meta.get('fingerprint') or '?')[:8]}"


def base_pretrain(base: Bundle) -> dict:
    """Where the base's embedding vectors came from (its pretrain stage), or {} if it had none."""
    return base.meta.get("pretrain") or {}


def pretrain_setting(base: Bundle, key: str) -> Any:
    """A setting of the base's pretrain stage (``pretrain.<key>``; the schema's default if the
    bundle does not record it, None for ``method`` without a pretrain stage)."""
    config = base_pretrain(base).get("config") or {}
    return config.get(key, None if key == "method" else getattr(Pretrain(), key))


def _base_vectors(split: Split, run: NullTracker) -> WordVectors:
    """The base's pretrained vectors, read once per job (kept on the base bundle)."""
    wv = getattr(split.base, "vectors", None)
    if wv is None:
        info = base_pretrain(split.base)
        if info.get("source") == "file":
            wv = read_vectors(info["path"])
        else:
            try:
                with tempfile.TemporaryDirectory(prefix="xfer-vectors-") as tmp:
                    wv = WordVectors.load(run.download_artifacts(info["run_id"], "vectors.npz", dst=tmp))
            except Exception as e:  # noqa: BLE001 - a store without that run, or tracking off
                raise ConfigError(f"base.pretrain: the base's vectors (pretrain run {info.get('run_id')}) "
                                  f"cannot be read from this job's store: {type(e).__name__}") from None
        split.base.vectors = wv
    return wv


def _adapted_vectors(split: Split, run: NullTracker) -> WordVectors:
    """The base's vectors after continuing their pretraining on this split's unlabelled target
    text (the training pool and ``transfer.adapt_files``, never the test split); once per split."""
    if split.adapted is None:
        tcfg = split.cfg["transfer"]
        texts = [*split.ds.pool_text, *split.extra_texts]
        pcfg = base_pretrain(split.base).get("config") or {"method": None}
        split.adapted, split.adapt_metrics = adapt_vectors(_base_vectors(split, run), pcfg, split.base.preprocessor,
                                                           texts, tcfg["adapt_epochs"], split.seed,
                                                           progress=split.cfg["trainer"]["progress"])
    run.log_metrics(split.adapt_metrics)
    return split.adapted


def _catboost(split: Split, run: NullTracker) -> tuple[dict, Any]:
    hcfg = split.cfg["heads"]["catboost"]
    feats = {k: layer_embeddings(split.base.net, split.base.sequences(f), hcfg["layer"])
             for k, f in split.ds.splits().items()}
    categorical = list(split.ds.categorical) if hcfg["categorical"] else []
    run.log_params({**flatten({"head": hcfg}), "n_train": split.n_train, "seed": split.seed,
                    "categorical": ",".join(categorical)})
    return catboost_embeddings(feats, split.ds.splits(), categorical, hcfg, split.seed), None


def _tfidf_lr(split: Split, run: NullTracker) -> tuple[dict, Any]:
    hcfg = split.cfg["heads"]["tfidf_lr"]
    run.log_params({**flatten({"head": hcfg}), "n_train": split.n_train, "seed": split.seed})
    return tfidf_lr(split.ds.train, split.ds.val, split.ds.test, hcfg, split.seed, split.ds.categorical), None


def _scratch_depends(split: Split) -> dict:
    cfg = split.cfg
    return {**split.data_identity(), "transforms": cfg["transforms"], "model": split.arch,
            "trainer": learned_trainer(cfg["trainer"]), "optimizer": cfg["optimizer"]}


METHODS: dict[str, Method] = {
    "transfer": Method(_transfer, lambda s: f"transfer_{s.cfg['schedule']['name']}"),
    "transfer_adapted": Method(lambda split, run: _transfer(split, run, adapted=True),
                               lambda s: f"transfer_{s.cfg['schedule']['name']}_adapted"),
    "transfer_selftrained": Method(_selftrained, lambda s: f"transfer_{s.cfg['schedule']['name']}_selftrained"),
    "scratch": Method(_scratch, lambda s: "scratch", _scratch_depends),
    "scratch_pretrained": Method(lambda split, run: _scratch(split, run, pretrained=True),
                                 lambda s: "scratch_pretrained",
                                 lambda s: {**_scratch_depends(s), "pretrain": base_pretrain(s.base)}),
    "catboost_embeddings": Method(_catboost, lambda s: "catboost_embeddings",
                                  lambda s: {**s.data_identity(), "base": s.base_identity(),
                                             "head": s.cfg["heads"]["catboost"]}),
    "tfidf_lr": Method(_tfidf_lr, lambda s: "tfidf_lr",
                       lambda s: {**s.data_identity(), "head": s.cfg["heads"]["tfidf_lr"]}),
}


def methods_of(cfg: Mapping, base: Bundle | None = None) -> list[str]:
    """The methods a job runs: ``transfer.methods``; the ``scratch`` schedule is the scratch
    control; ``scratch_pretrained`` only with a base that had a pretrain stage."""
    names = list(cfg["transfer"]["methods"])
    if cfg["schedule"]["name"] == "scratch":
        names = [n for n in names if n != "transfer"] + ([] if "scratch" in names else ["scratch"])
    if base is not None and not base_pretrain(base):
        names = [n for n in names if n != "scratch_pretrained"]
    if cfg["transfer"]["adapt"] and "transfer" in names:  # the ablation: transfer with and without it
        names.insert(names.index("transfer") + 1, "transfer_adapted")
    if cfg["transfer"]["self_train"] and "transfer" in names:  # after its teacher, the last transfer
        names.insert(max(i for i, n in enumerate(names) if n.startswith("transfer")) + 1, "transfer_selftrained")
    return names


def run_method(name: str, split: Split, parent: NullTracker, tags: Mapping[str, str]) -> tuple[dict, Any]:
    """Run (or reuse) one method on one split as a child run of ``parent``; returns its record
    (method, n_train, seed, metrics, run_id) and what the method kept (the transferred net)."""
    method, cfg = METHODS[name], split.cfg
    label = method.label(split)
    tags = {**tags, "xfer.method": label, "xfer.n_train": str(split.n_train), "xfer.seed": str(split.seed),
            # the same under plain names, for the MLflow UI's columns and Group by (xfer.* are for lookups)
            "method": label, "n_train": str(split.n_train), "seed": str(split.seed), "data": split.ds.name}
    fp = fingerprint({"method": name, **method.depends_on(split)}) if method.depends_on else None

    def record(metrics: Mapping, run_id: str | None, reused: bool = False) -> dict:
        log.info("%-22s n_train=%d seed=%d test_roc_auc %.4f test_accuracy %.4f%s", label, split.n_train,
                 split.seed, metrics["test_roc_auc"], metrics["test_accuracy"], " (reused)" if reused else "")
        return {"method": label, "n_train": split.n_train, "seed": split.seed, "data": split.ds.name,
                "base": base_label(split.base),
                **metrics, "run_id": run_id, "reused": reused}

    def run():
        run_tags = {**tags, **({"xfer.fingerprint": fp} if fp else {})}
        with tracked_run(parent.child(), f"{split.ds.name}-{label}-n{split.n_train}-s{split.seed}", run_tags,
                         parent.run_id) as child:
            child.log_datasets(split.ds)
            metrics, kept = method.run(split, child)
            child.log_metrics(metrics)
        release_memory()
        return record(metrics, child.run_id), kept

    if fp is None:
        return run()
    return reuse_or_run(parent, cfg["tracking"], fp, {"xfer.method": label}, f"control-{label}", run,
                        lambda found: (record(found["metrics"], found["run_id"], reused=True), None))
