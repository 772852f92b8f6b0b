"""Training and evaluation of a Gluon text classifier, without any tracking server.

Reviews are id arrays; batches come from gluonnlp's ``FixedBucketSampler``
(reviews of similar length together, so little padding) and ``Pad`` batchify.
``fit`` runs seeded epochs with early stopping on validation ROC-AUC and
restores the best epoch. Progress goes to a tqdm bar; metrics go to the
``on_epoch`` callback, which is where tracking hooks in.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score
from tqdm.auto import tqdm

from .errors import ConfigError
from .models import bag_spec, featurize, ngram_bag, ngram_spec, set_param
from .transforms import UNK_ID

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data
def prepare_sequences(ids: Sequence[np.ndarray], max_len: int | None = None, vocab_size: int = 0,
                      bigram_buckets: int = 0, truncate: str = "head", ngrams: int = 2,
                      unique: bool = False, bag: Mapping | None = None) -> list:
    """Truncate to ``max_len`` tokens, give empty reviews one ``<unk>``, add hashed n-gram ids.

    With ``bag`` (``models.bag_spec``) every review becomes a pair (ids, n-gram bag); the
    bag is taken from the whole review, before truncation."""
    out = []
    for seq in ids:
        seq = full = np.asarray(seq, dtype=np.int32)
        if max_len and len(seq) > max_len:
            seq = seq[-max_len:] if truncate == "tail" else seq[:max_len]
        if len(seq) == 0:
            seq = full = np.array([UNK_ID], dtype=np.int32)
        seq = featurize(seq, vocab_size, bigram_buckets, ngrams, unique)
        out.append((seq, ngram_bag(full, bag["buckets"], bag["n"])) if bag else seq)
    return out


def encode_frame(pre, frame, arch: Mapping, max_len: int | None = None, truncate: str = "head") -> list:
    """Raw frame -> the inputs that the network ``arch`` reads, one per review: an id
    array, or (ids, n-gram bag) for a network with an ``ngrams`` branch."""
    from .transforms import apply_preprocessor, token_vocab

    ids, _ = apply_preprocessor(pre, frame)
    spec = ngram_spec(arch)
    return prepare_sequences(ids, max_len, token_vocab(pre).vocabulary_size, spec["buckets"], truncate,
                             spec["ngrams"], spec["unique"], bag=bag_spec(arch))


def bags_of(seqs: Sequence) -> list[np.ndarray] | None:
    """The n-gram bags of ``encode_frame``'s output, or None if it has none."""
    return [s[1] for s in seqs] if len(seqs) and isinstance(seqs[0], tuple) else None


def context(name: str | None) -> mx.Context:
    """``cpu``, ``gpu`` or ``gpu:1`` -> an MXNet context."""
    name = (name or "cpu").lower()
    if name == "cpu":
        return mx.cpu()
    if name.startswith("gpu"):
        idx = int(name.split(":")[1]) if ":" in name else 0
        return mx.gpu(idx)
    raise ConfigError(f"trainer.ctx: unknown device {name!r} (cpu | gpu | gpu:N)")


#: inference pads batches to a multiple of this many tokens: oneDNN compiles a kernel per input
#: shape, so single reviews of every length would each pay a compilation; padding never changes
#: a prediction (see models.py)
INFERENCE_ROUND_TO = 32


def iter_batches(seqs: Sequence, labels: np.ndarray | None, batch_size: int,
                 num_buckets: int = 10, shuffle: bool = False, seed: int = 0,
                 ctx: mx.Context | None = None, round_to: int | None = None) -> Iterator[tuple]:
    """Length-bucketed batches: (inputs, labels or None, indices), where ``inputs`` is what
    the network takes: (tokens, valid_length), plus the padded n-gram bags when the
    reviews are (ids, bag) pairs. With ``round_to`` the padded length is a multiple of it."""
    import gluonnlp as nlp

    if len(seqs) == 0:
        return
    bags = bags_of(seqs)
    if bags is not None:
        seqs = [s[0] for s in seqs]
    lengths = [len(s) for s in seqs]
    buckets = max(1, min(num_buckets, len(set(lengths))))
    with warnings.catch_warnings():  # "Some buckets are empty": expected for short inputs
        warnings.simplefilter("ignore", UserWarning)
        sampler = nlp.data.FixedBucketSampler(lengths, batch_size=batch_size, num_buckets=buckets,
                                              shuffle=shuffle)
    pad = nlp.data.batchify.Pad(axis=0, pad_val=0, ret_length=True, dtype="float32", round_to=round_to)
    pad_bag = nlp.data.batchify.Pad(axis=0, pad_val=0, dtype="float32")
    ctx = ctx or mx.cpu()
    if shuffle:
        np.random.seed(seed)  # FixedBucketSampler shuffles with numpy's global generator
    for idx in sampler:
        idx = np.asarray(idx)
        tokens, valid = pad([seqs[i] for i in idx])
        inputs = (tokens.as_in_context(ctx), valid.astype("float32").as_in_context(ctx))
        if bags is not None:
            inputs += (pad_bag([bags[i] for i in idx]).as_in_context(ctx),)
        y = mx.nd.array(labels[idx], ctx=ctx, dtype="float32") if labels is not None else None
        yield inputs, y, idx


# --------------------------------------------------------------------------- metrics
def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """ROC-AUC, accuracy, F1 and log loss of probabilities ``p`` for 0/1 labels ``y``."""
    y = np.asarray(y).astype(int)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
    }


def predict_logits(net: gluon.HybridBlock, seqs: Sequence, batch_size: int = 256,
                   ctx: mx.Context | None = None, num_buckets: int = 10) -> np.ndarray:
    """The network's output columns (N, k) for every review, in input order."""
    out: np.ndarray | None = None
    for inputs, _, idx in iter_batches(seqs, None, batch_size, num_buckets, ctx=ctx, round_to=INFERENCE_ROUND_TO):
        logits = net(*inputs).asnumpy()
        if out is None:
            out = np.zeros((len(seqs), logits.shape[1]), dtype=np.float64)
        out[idx] = logits
    return out if out is not None else np.zeros((0, 1))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def predict_proba(net: gluon.HybridBlock, seqs: Sequence, batch_size: int = 256,
                  ctx: mx.Context | None = None, num_buckets: int = 10) -> np.ndarray:
    """Positive-class probability for every review, in input order."""
    return sigmoid(predict_logits(net, seqs, batch_size, ctx, num_buckets)[:, 0])


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


def lr_scheduler(opt_cfg: Mapping, total_updates: int):
    sched = dict(opt_cfg.get("lr_schedule") or {})
    kind = sched.get("type", "constant")
    base = float(opt_cfg.get("lr", 1e-3))
    warmup = int(float(sched.get("warmup_frac", 0.0)) * total_updates)
    if kind == "constant":
        return None
    if kind == "cosine":
        return mx.lr_scheduler.CosineScheduler(max_update=max(total_updates, warmup + 1), base_lr=base,
                                               final_lr=base * float(sched.get("final_lr_frac", 0.0)),
                                               warmup_steps=warmup)
    if kind == "step":
        return mx.lr_scheduler.FactorScheduler(step=max(1, int(sched.get("step_updates", 1000))),
                                               factor=float(sched.get("factor", 0.5)), base_lr=base,
                                               warmup_steps=warmup)
    raise ConfigError(f"optimizer.lr_schedule.type: unknown schedule {kind!r} (constant | cosine | step)")


def make_trainer(net, opt_cfg: Mapping, total_updates: int) -> gluon.Trainer:
    name = str(opt_cfg.get("name", "adam")).lower()
    if name not in ("adam", "sgd", "adamw", "nag", "adagrad", "rmsprop"):
        raise ConfigError(f"optimizer.name: unknown optimizer {name!r} (adam | adamw | sgd)")
    kwargs: dict[str, Any] = {"learning_rate": float(opt_cfg.get("lr", 1e-3)),
                              "wd": float(opt_cfg.get("wd", 0.0))}
    if name == "sgd":
        kwargs["momentum"] = float(opt_cfg.get("momentum", 0.9))
    if name in ("adam", "sgd", "adamw"):
        kwargs["lazy_update"] = bool(opt_cfg.get("lazy_update", True))
    if name == "adamw":
        # MXNet 1.9 registers no AdamW; GluonNLP's BERTAdam is Adam with decoupled weight decay
        # (AdamW). It updates sparse embedding gradients densely (correct, slower).
        import gluonnlp  # noqa: F401 - registers "bertadam"

        name = "bertadam"
        kwargs.pop("lazy_update", None)
    sched = lr_scheduler(opt_cfg, total_updates)
    if sched is not None:
        kwargs["lr_scheduler"] = sched
    return gluon.Trainer(net.collect_params(), name, kwargs,
                         kvstore=None, update_on_kvstore=False)


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def fit(net: gluon.HybridBlock, train: tuple[Sequence[np.ndarray], np.ndarray],
        val: tuple[Sequence[np.ndarray], np.ndarray], trainer_cfg: Mapping, opt_cfg: Mapping,
        seed: int = 0, on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        before_epoch: Callable[[int], None] | None = None, checkpoint_dir: str | Path | None = None,
        on_checkpoint: Callable[[Path], None] | None = None, resume_from: str | Path | None = None) -> FitResult:
    """Train ``net`` (already initialised) and restore its best epoch by validation ROC-AUC.

    With ``checkpoint_dir`` the state after every epoch is saved there (and handed to
    ``on_checkpoint``); ``resume_from`` continues from such a checkpoint, reaching the
    same result as an uninterrupted run with the same seed."""
    x_train, y_train = train
    x_val, y_val = val
    batch_size = int(trainer_cfg.get("batch_size", 64))
    max_epochs = int(trainer_cfg.get("max_epochs", 5))
    patience = int(trainer_cfg.get("patience", 2))
    num_buckets = int(trainer_cfg.get("num_buckets", 10))
    ctx = context(trainer_cfg.get("ctx"))
    progress = bool(trainer_cfg.get("progress", True))
    clip = float(opt_cfg.get("clip_gradient_norm") or 0.0)
    if len(x_train) == 0:
        raise ConfigError("no training examples")
    steps_per_epoch = math.ceil(len(x_train) / batch_size) + num_buckets
    trainer = make_trainer(net, opt_cfg, steps_per_epoch * max_epochs)
    loss_fn = gluon.loss.SigmoidBinaryCrossEntropyLoss()
    if trainer_cfg.get("hybridize", True):
        net.hybridize(static_alloc=True, static_shape=False)

    columns = tuple(getattr(net, "loss_columns", (0,)))
    ngrams = getattr(net, "ngrams", None)
    if ngrams is not None and resume_from is None and not ngrams.fitted():
        ngrams.fit_ratios(bags_of(x_train), y_train)  # naive-Bayes weights of the training set (a transferred net keeps its base's)

    result = FitResult()
    best_state = None
    bad_epochs = 0
    start_epoch = 0
    if resume_from is not None:
        best_state, result, start_epoch, bad_epochs = load_checkpoint(resume_from, net, trainer)
        log.info("resumed after epoch %d of %d", start_epoch, max_epochs)
    started = time.perf_counter() - result.train_seconds
    for epoch in range(start_epoch, max_epochs):
        if result.stopped_early:
            break
        if before_epoch is not None:
            before_epoch(epoch)
        mx.random.seed(seed * 100_003 + epoch)  # dropout stream per (seed, epoch): a resumed run matches
        t0 = time.perf_counter()
        total_loss, seen = 0.0, 0
        bar = tqdm(total=len(x_train), desc=f"epoch {epoch + 1}/{max_epochs}", unit="ex",
                   disable=not progress, leave=False, mininterval=1.0)
        for inputs, y, _ in iter_batches(x_train, y_train, batch_size, num_buckets, shuffle=True,
                                         seed=seed * 1000 + epoch, ctx=ctx):
            with autograd.record():
                out = net(*inputs)
                loss = loss_fn(out[:, columns[0]], y)
                for c in columns[1:]:  # a network with branches: each fits the labels (models.TextClassifier)
                    loss = loss + loss_fn(out[:, c], y)
            loss.backward()
            if clip:
                clip_gradients(trainer, clip)
            n = inputs[0].shape[0]
            trainer.step(n)
            batch_loss = float(loss.mean().asscalar())
            if not math.isfinite(batch_loss):
                raise FloatingPointError(f"training loss became {batch_loss} in epoch {epoch + 1}; "
                                         "lower optimizer.lr or set optimizer.clip_gradient_norm")
            total_loss += batch_loss * n
            seen += n
            bar.update(n)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}",
                            ex_s=f"{seen / max(time.perf_counter() - t0, 1e-9):.0f}", refresh=False)
        bar.close()
        epoch_seconds = time.perf_counter() - t0
        val_logits = predict_logits(net, x_val, batch_size=max(256, batch_size), ctx=ctx, num_buckets=num_buckets)
        if ngrams is not None:  # stacking: how the two branches combine, fitted on held-out reviews
            if ngrams.fit_mix(val_logits[:, 1:3], y_val) is not None:
                val_logits[:, 0] = ngrams.combine(val_logits[:, 1:3])
        val_m = classification_metrics(y_val, sigmoid(val_logits[:, 0]))
        metrics = {"train_loss": total_loss / max(seen, 1), "epoch_seconds": epoch_seconds,
                   "examples_per_second": seen / max(epoch_seconds, 1e-9),
                   "lr": float(trainer.learning_rate),
                   **{f"val_{k}": v for k, v in val_m.items()}}
        result.history.append(metrics)
        improved = val_m["roc_auc"] > result.best_val_roc_auc
        if improved or best_state is None:
            result.best_val_roc_auc, result.best_epoch = val_m["roc_auc"], epoch
            best_state = snapshot(net)
            bad_epochs = 0
        else:
            bad_epochs += 1
        log.info("epoch %d: train_loss %.4f val_roc_auc %.4f val_accuracy %.4f (%.1f s, %.0f ex/s)%s",
                 epoch + 1, metrics["train_loss"], val_m["roc_auc"], val_m["accuracy"], epoch_seconds,
                 metrics["examples_per_second"], " *" if improved else "")
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        result.stopped_early = bad_epochs >= patience
        result.train_seconds = time.perf_counter() - started
        if checkpoint_dir is not None:
            ckpt = save_checkpoint(checkpoint_dir, net, trainer, best_state, result, epoch, bad_epochs)
            if on_checkpoint is not None:
                on_checkpoint(ckpt)
        if result.stopped_early:
            break
    result.train_seconds = time.perf_counter() - started
    restore(net, best_state)
    return result
