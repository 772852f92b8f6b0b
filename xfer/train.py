"""Training a Gluon text classifier, without any tracking server.

``fit`` is an epoch loop plus event handlers, in the manner of GluonNLP's Estimator: the loop
draws length-bucketed batches (``encode.iter_batches``), steps the optimizer and scores the
validation split; handlers do everything else at ``train_begin`` / ``epoch_begin`` /
``epoch_end`` / ``train_end``: the n-gram branch's naive-Bayes ratios and stacking
(``BranchStacking``), validation metrics and history (``Validation``), early stopping and
restoring the best epoch (``EarlyStopping``), the per-epoch log line (``EpochLogger``),
handing metrics to tracking (``MetricsCallback``) and checkpoints/resume (``Checkpoint``).
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from tqdm.auto import tqdm

from .encode import (auc_standard_error, bags_of, classification_metrics, context, iter_batches, predict_logits,
                     sigmoid)
from .errors import ConfigError
from .models import set_param
from .schema import section

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- fitting
@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val_roc_auc: float = float("-inf")
    train_seconds: float = 0.0
    stopped_early: bool = False


def _params(net) -> dict[str, gluon.Parameter]:
    return {k: p for k, p in net.collect_params().items()}


def snapshot(net) -> dict[str, mx.nd.NDArray]:
    return {k: p.data().copy() for k, p in _params(net).items()}


def restore(net, state: Mapping[str, mx.nd.NDArray]) -> None:
    for k, p in _params(net).items():
        set_param(p, state[k])


def lr_scheduler(opt: Mapping, total_updates: int):
    """The optimizer's ``lr_schedule`` as an MXNet scheduler (None for constant)."""
    sched, base = opt["lr_schedule"], opt["lr"]
    warmup = int(sched["warmup_frac"] * total_updates)
    if sched["type"] == "cosine":
        return mx.lr_scheduler.CosineScheduler(max_update=max(total_updates, warmup + 1), base_lr=base,
                                               final_lr=base * sched["final_lr_frac"], warmup_steps=warmup)
    if sched["type"] == "step":
        return mx.lr_scheduler.FactorScheduler(step=sched["step_updates"], factor=sched["factor"], base_lr=base,
                                               warmup_steps=warmup)
    return None


_LAZY_NOTICE_SEEN = False


def consume_lazy_update_notice() -> None:
    """MXNet prints a one-time C++ notice (``LogOnce``, no switch) the first time an optimizer
    updates a row-sparse gradient lazily: that lazy updates differ from dense ones. xfer chooses
    them on purpose (``optimizer.lazy_update``, documented in the schema; untouched rows stay
    bit-identical, which delta bundles rely on), so the notice is set off once here, on a 2x2
    array, with this thread's stderr captured, and anything else printed meanwhile is passed on.
    (MXNet keeps the "already said" record per thread; the storage-type check that prints it runs
    in the thread that calls the update, so later updates in this thread stay quiet.)"""
    global _LAZY_NOTICE_SEEN
    if _LAZY_NOTICE_SEEN:
        return
    import os
    import sys
    import tempfile

    w, m, v = (mx.nd.zeros((2, 2)) for _ in range(3))
    g = mx.nd.zeros((2, 2)).tostype("row_sparse")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            mx.nd.adam_update(w, g, m, v, lr=0.1, lazy_update=True, out=w)
            mx.nd.waitall()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        other = [line for line in tmp.read().decode(errors="replace").splitlines() if "lazy_update" not in line]
    if other:
        print("\n".join(other), file=sys.stderr)
    _LAZY_NOTICE_SEEN = True


def make_trainer(net, opt_cfg: Mapping, total_updates: int) -> gluon.Trainer:
    """A gluon.Trainer for a (validated) ``optimizer`` config."""
    opt = section("optimizer", opt_cfg)
    name = opt["name"]
    kwargs: dict[str, Any] = {"learning_rate": opt["lr"], "wd": opt["wd"]}
    if name == "sgd":
        kwargs["momentum"] = opt["momentum"]
    if "lazy_update" in opt:
        kwargs["lazy_update"] = opt["lazy_update"]
        if opt["lazy_update"]:
            consume_lazy_update_notice()
    if name == "adamw":
        # MXNet 1.9 registers no AdamW; GluonNLP's BERTAdam is Adam with decoupled weight decay
        # (AdamW). It updates sparse embedding gradients densely (correct, slower).
        import gluonnlp  # noqa: F401 - registers "bertadam"

        name = "bertadam"
    sched = lr_scheduler(opt, total_updates)
    if sched is not None:
        kwargs["lr_scheduler"] = sched
    return gluon.Trainer(net.collect_params(), name, kwargs, kvstore=None, update_on_kvstore=False)


def clip_gradients(trainer: gluon.Trainer, max_norm: float) -> float:
    """Scale all gradients so their global L2 norm is at most ``max_norm``; returns the norm."""
    grads = [p.list_grad()[0] for p in trainer._params if p.grad_req != "null"]
    if not grads:
        return 0.0
    # one synchronisation for the whole norm (a per-array asscalar() would wait once per parameter)
    total = float(mx.nd.sqrt(mx.nd.add_n(*[mx.nd.square(g.norm()) for g in grads])).asscalar())
    if max_norm and total > max_norm:
        scale = max_norm / (total + 1e-8)
        for g in grads:
            if g.stype == "default":
                g *= scale
            else:
                g[:] = mx.nd.sparse.retain(g * scale, g.indices)
    return total


# --------------------------------------------------------------------------- checkpoints
CHECKPOINT_FILES = ("net.params", "trainer.states", "state.json")


def save_checkpoint(path: str | Path, net, trainer: gluon.Trainer, best_state, result: "FitResult",
                    epoch: int, bad_epochs: int) -> Path:
    """Everything fit() needs to continue after ``epoch``, written atomically to ``path``:
    parameters, optimizer state (Adam moments, update count, LR schedule), the best epoch's
    parameters (when they differ) and the early-stopping state. Random state needs no saving:
    every epoch reseeds from (seed, epoch)."""
    from .data import atomic_dir, sha256_file

    with atomic_dir(path) as tmp:
        mx.nd.save(str(tmp / "net.params"), snapshot(net))
        trainer.save_states(str(tmp / "trainer.states"))
        best_is_current = result.best_epoch == epoch
        if not best_is_current:
            mx.nd.save(str(tmp / "best.params"), best_state)
        files = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
        state = {"epoch": epoch, "bad_epochs": bad_epochs, "best_is_current": best_is_current, "files": files,
                 "history": result.history, "best_epoch": result.best_epoch,
                 "best_val_roc_auc": result.best_val_roc_auc, "train_seconds": result.train_seconds,
                 "stopped_early": result.stopped_early}
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
    return Path(path)


def read_checkpoint_state(path: str | Path) -> dict | None:
    """The checkpoint's state.json if every file it lists is present with its checksum, else None."""
    from .data import sha256_file

    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError):
        return None
    for name, digest in (state.get("files") or {}).items():
        if not (path / name).is_file() or sha256_file(path / name) != digest:
            return None
    return state


def load_checkpoint(path: str | Path, net, trainer: gluon.Trainer) -> tuple[dict, "FitResult", int, int]:
    """Restore ``net`` and ``trainer`` from a checkpoint; returns (best_state, result, next epoch, bad_epochs)."""
    path = Path(path)
    for name in CHECKPOINT_FILES:
        if not (path / name).is_file():
            raise ConfigError(f"resume: {path / name}: missing checkpoint file")
    state = read_checkpoint_state(path)
    if state is None:
        raise ConfigError(f"resume: {path}: checkpoint is incomplete or corrupt")
    params = mx.nd.load(str(path / "net.params"))
    mine = _params(net)
    if set(params) != set(mine):
        raise ConfigError(f"resume: {path}: checkpoint parameters do not match the network "
                          f"(different model config?)")
    for k, p in mine.items():
        if p.shape != params[k].shape:
            raise ConfigError(f"resume: {path}: parameter {k} has shape {params[k].shape}, the network {p.shape}")
        set_param(p, params[k])
    trainer.load_states(str(path / "trainer.states"))
    best = snapshot(net) if state["best_is_current"] else mx.nd.load(str(path / "best.params"))
    result = FitResult(history=list(state["history"]), best_epoch=int(state["best_epoch"]),
                       best_val_roc_auc=float(state["best_val_roc_auc"]),
                       train_seconds=float(state["train_seconds"]), stopped_early=bool(state["stopped_early"]))
    next_epoch = int(state["epoch"]) + 1
    return best, result, next_epoch, int(state["bad_epochs"])


def release_memory() -> None:
    """Give the memory of networks that are no longer used back to the system. A trained network,
    its optimizer (parameters refer to their trainer) and its best-epoch snapshot form reference
    cycles, so their native arrays (hundreds of MB with the n-gram branch) are freed only when the
    cyclic collector runs; and glibc keeps freed heap pages of a multi-threaded process in its arenas
    unless asked to trim them."""
    import gc

    from . import glibc

    gc.collect()
    mx.nd.waitall()  # arrays are freed by MXNet's engine: let it finish before trimming the heap
    libc = glibc()
    if libc is not None:
        libc.malloc_trim(0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


# --------------------------------------------------------------------------- the loop
@dataclass
class FitState:
    """What the loop and its handlers share."""
    net: Any
    trainer: gluon.Trainer
    train: tuple
    val: tuple
    cfg: dict
    seed: int
    ctx: Any
    result: FitResult = field(default_factory=FitResult)
    epoch: int = 0
    start_epoch: int = 0
    best_state: dict | None = None
    bad_epochs: int = 0
    resumed: bool = False
    metrics: dict = field(default_factory=dict)
    val_logits: np.ndarray | None = None
    improved: bool = False
    stop: bool = False


class Handler:
    """Event handler of ``fit`` (every hook optional)."""

    def train_begin(self, state: FitState) -> None: ...

    def epoch_begin(self, state: FitState) -> None: ...

    def epoch_end(self, state: FitState) -> None: ...

    def train_end(self, state: FitState) -> None: ...


class BeforeEpoch(Handler):
    """Calls ``fn(epoch)`` before every epoch (e.g. a freezing schedule)."""

    def __init__(self, fn: Callable[[int], None]):
        self.fn = fn

    def epoch_begin(self, state):
        self.fn(state.epoch)


class BranchStacking(Handler):
    """A network with an n-gram branch: naive-Bayes ratios from the training set before the first
    epoch (a transferred or resumed net keeps its own), then after every epoch the two branch
    logits' combination fitted on the validation reviews (stacking)."""

    def train_begin(self, state):
        ngrams = state.net.ngrams
        if not state.resumed and not ngrams.fitted():
            ngrams.fit_ratios(bags_of(state.train[0]), state.train[1])

    def epoch_end(self, state):
        if state.net.ngrams.fit_mix(state.val_logits[:, 1:3], state.val[1]) is not None:
            state.val_logits[:, 0] = state.net.ngrams.combine(state.val_logits[:, 1:3])


class Validation(Handler):
    """Validation metrics of the epoch into ``state.metrics`` and the history."""

    def epoch_end(self, state):
        val_m = classification_metrics(state.val[1], sigmoid(state.val_logits[:, 0]))
        state.metrics.update({"lr": float(state.trainer.learning_rate), **{f"val_{k}": v for k, v in val_m.items()}})
        state.result.history.append(dict(state.metrics))


class EarlyStopping(Handler):
    """Keeps the best epoch by validation ROC-AUC, stops after ``patience`` epochs without a
    good-enough one and restores the kept parameters at the end.

    ``tolerance`` (in standard errors of the validation AUC, ``encode.auc_standard_error``):
    an epoch whose AUC is within that many standard errors of the best so far counts as good as
    the best, so early stopping waits for it and it is kept instead of the earlier best. On a
    validation set of 50 reviews one standard error is ~0.03, more than epochs usually differ:
    a strictly-best rule then keeps whichever epoch the noise favoured, often the first.
    0: only a strictly better epoch counts (``result.best_epoch`` is then the argmax)."""

    def __init__(self, patience: int, tolerance: float = 0.0):
        self.patience, self.tolerance = patience, tolerance

    def epoch_end(self, state):
        auc, res = state.metrics["val_roc_auc"], state.result
        better = auc > res.best_val_roc_auc
        state.improved = better or (self.tolerance > 0 and auc >= res.best_val_roc_auc - self.margin(state))
        res.best_val_roc_auc = max(res.best_val_roc_auc, auc)  # the reference: the best AUC seen
        if state.improved or state.best_state is None:
            res.best_epoch = state.epoch
            state.best_state, state.bad_epochs = snapshot(state.net), 0
        else:
            state.bad_epochs += 1
        res.stopped_early = state.stop = state.bad_epochs >= self.patience

    def margin(self, state) -> float:
        y = np.asarray(state.val[1]).astype(int)
        se = auc_standard_error(state.result.best_val_roc_auc, int(y.sum()), int(len(y) - y.sum()))
        return self.tolerance * se if math.isfinite(se) else 0.0

    def train_end(self, state):
        restore(state.net, state.best_state)


def replay_early_stopping(val_aucs: Sequence[float], val_labels, patience: int,
                          tolerance: float = 0.0) -> tuple[int, int]:
    """(kept epoch, last epoch run), 0-based: what ``EarlyStopping`` makes of a recorded
    validation ROC-AUC curve, replayed without a network (to compare selection rules)."""
    class _NoNet:
        def collect_params(self):
            return {}

    stopper = EarlyStopping(patience, tolerance)
    state = FitState(net=_NoNet(), trainer=None, train=((), None), val=((), np.asarray(val_labels)), cfg={}, seed=0,
                     ctx=None)
    for state.epoch, auc in enumerate(val_aucs):
        state.metrics = {"val_roc_auc": float(auc)}
        stopper.epoch_end(state)
        if state.stop:
            break
    return state.result.best_epoch, state.epoch


class EpochLogger(Handler):
    def epoch_end(self, state):
        m = state.metrics
        log.info("epoch %d: train_loss %.4f val_roc_auc %.4f val_accuracy %.4f (%.1f s, %.0f ex/s)%s",
                 state.epoch + 1, m["train_loss"], m["val_roc_auc"], m["val_accuracy"], m["epoch_seconds"],
                 m["examples_per_second"], " *" if state.improved else "")


class MetricsCallback(Handler):
    """Hands every epoch's metrics to ``fn(epoch, metrics)`` (where tracking hooks in)."""

    def __init__(self, fn: Callable[[int, dict], None]):
        self.fn = fn

    def epoch_end(self, state):
        self.fn(state.epoch, dict(state.metrics))


class Checkpoint(Handler):
    """Resumes from ``resume_from`` and saves the state after every epoch to ``directory``
    (then hands the directory to ``on_saved``)."""

    def __init__(self, directory=None, on_saved: Callable[[Path], None] | None = None, resume_from=None):
        self.directory, self.on_saved, self.resume_from = directory, on_saved, resume_from

    def train_begin(self, state):
        if self.resume_from is not None:
            state.best_state, state.result, state.start_epoch, state.bad_epochs = load_checkpoint(
                self.resume_from, state.net, state.trainer)
            state.resumed = True
            state.stop = state.result.stopped_early
            log.info("resumed after epoch %d of %d", state.start_epoch, state.cfg["max_epochs"])

    def epoch_end(self, state):
        if self.directory is not None:
            ckpt = save_checkpoint(self.directory, state.net, state.trainer, state.best_state, state.result,
                                   state.epoch, state.bad_epochs)
            if self.on_saved is not None:
                self.on_saved(ckpt)


def train_epoch(state: FitState, loss_fn, clip: float) -> dict[str, float]:
    """One pass over the training reviews; returns loss and speed of the epoch."""
    net, cfg, (x, y_all) = state.net, state.cfg, state.train
    columns = tuple(getattr(net, "loss_columns", (0,)))
    mx.random.seed(state.seed * 100_003 + state.epoch)  # dropout stream per (seed, epoch): a resumed run matches
    t0, total, seen = time.perf_counter(), 0.0, 0
    bar = tqdm(total=len(x), desc=f"epoch {state.epoch + 1}/{cfg['max_epochs']}", unit="ex",
               disable=not cfg["progress"], leave=False, mininterval=1.0)
    for inputs, y, _ in iter_batches(x, y_all, cfg["batch_size"], cfg["num_buckets"], shuffle=True,
                                     seed=state.seed * 1000 + state.epoch, ctx=state.ctx, round_to=cfg["round_to"]):
        with autograd.record():
            out = net(*inputs)
            loss = loss_fn(out[:, columns[0]], y)
            for c in columns[1:]:  # a network with branches: each fits the labels on its own
                loss = loss + loss_fn(out[:, c], y)
        loss.backward()
        if clip:
            clip_gradients(state.trainer, clip)
        n = inputs[0].shape[0]
        state.trainer.step(n)
        batch_loss = float(loss.mean().asscalar())
        if not math.isfinite(batch_loss):
            raise FloatingPointError(f"training loss became {batch_loss} in epoch {state.epoch + 1}; "
                                     "lower optimizer.lr or set optimizer.clip_gradient_norm")
        total, seen = total + batch_loss * n, seen + n
        bar.update(n)
        bar.set_postfix(loss=f"{total / seen:.4f}", ex_s=f"{seen / max(time.perf_counter() - t0, 1e-9):.0f}",
                        refresh=False)
    bar.close()
    seconds = time.perf_counter() - t0
    return {"train_loss": total / max(seen, 1), "epoch_seconds": seconds,
            "examples_per_second": seen / max(seconds, 1e-9)}


def default_handlers(net, cfg: Mapping) -> list[Handler]:
    stacking = [BranchStacking()] if getattr(net, "ngrams", None) is not None else []
    return [*stacking, Validation(), EarlyStopping(cfg["patience"], cfg["select_tolerance"]), EpochLogger()]


def fit(net: gluon.HybridBlock, train: tuple[Sequence, np.ndarray], val: tuple[Sequence, np.ndarray],
        trainer_cfg: Mapping, opt_cfg: Mapping, seed: int = 0, handlers: Sequence[Handler] = (),
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        before_epoch: Callable[[int], None] | None = None, checkpoint_dir: str | Path | None = None,
        on_checkpoint: Callable[[Path], None] | None = None, resume_from: str | Path | None = None) -> FitResult:
    """Train ``net`` (already initialised) and restore its best epoch by validation ROC-AUC.

    ``handlers`` run after the default ones (stacking, validation, early stopping, log line);
    ``before_epoch``/``on_epoch``/``checkpoint_dir``+``on_checkpoint``/``resume_from`` are
    shorthands for ``BeforeEpoch``/``MetricsCallback``/``Checkpoint``. A resumed run reaches
    the same result as an uninterrupted one with the same seed."""
    cfg, opt = section("trainer", trainer_cfg), section("optimizer", opt_cfg)
    if len(train[0]) == 0:
        raise ConfigError("no training examples")
    steps_per_epoch = math.ceil(len(train[0]) / cfg["batch_size"]) + cfg["num_buckets"]
    state = FitState(net, make_trainer(net, opt, steps_per_epoch * cfg["max_epochs"]), train, val, cfg, seed,
                     context(cfg["ctx"]))
    if cfg["hybridize"]:
        net.hybridize(static_alloc=True, static_shape=False)
    extra = [BeforeEpoch(before_epoch)] if before_epoch else []
    extra += [MetricsCallback(on_epoch)] if on_epoch else []
    ckpt = [Checkpoint(checkpoint_dir, on_checkpoint, resume_from)]
    # resume first (it sets the state the others read); checkpoints last (they save what the others set)
    order = ckpt[:1] + default_handlers(net, cfg) + extra + list(handlers)
    _run(state, order, ckpt[0], loss_fn=gluon.loss.SigmoidBinaryCrossEntropyLoss(), clip=opt["clip_gradient_norm"])
    return state.result


def _run(state: FitState, handlers: list[Handler], checkpoint: Checkpoint, loss_fn, clip: float) -> None:
    for h in handlers:
        h.train_begin(state)
    started = time.perf_counter() - state.result.train_seconds
    for epoch in range(state.start_epoch, state.cfg["max_epochs"]):
        if state.stop:
            break
        state.epoch = epoch
        for h in handlers:
            h.epoch_begin(state)
        state.metrics = train_epoch(state, loss_fn, clip)
        state.val_logits = predict_logits(state.net, state.val[0], ctx=state.ctx)
        for h in handlers:
            if h is not checkpoint:
                h.epoch_end(state)
        state.result.train_seconds = time.perf_counter() - started
        checkpoint.epoch_end(state)
    state.result.train_seconds = time.perf_counter() - started
    for h in handlers:
        h.train_end(state)
