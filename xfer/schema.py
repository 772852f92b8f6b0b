"""One typed schema for every config key: type, default, allowed values and a one-line help.

The YAML groups in ``xfer/conf`` choose values; this module holds the only defaults and the
rules. ``validate(cfg)`` runs right after Hydra composes a job (and at the top of every job
function, so a hand-made dict gets the same treatment): it returns a plain dict with every key
present and typed, or raises :class:`~xfer.errors.ConfigError` as one line,
``<key>: <value> is not <what is allowed>``, before any data is read or any run is created.

Sections with alternatives (``model.encoder`` by ``type``, ``optimizer`` by ``name``,
``optimizer.lr_schedule`` by ``type``, ``schedule`` by ``name``) are tagged unions: the tag
picks the dataclass whose keys are allowed. ``python -m xfer.schema`` prints every key.
"""
from __future__ import annotations

import dataclasses
import re
import sys
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, Mapping, Optional, Union

from .errors import ConfigError

REQUIRED = MISSING


def key(default: Any = REQUIRED, help: str = "", *, choices: tuple | None = None, ge: float | None = None,
        gt: float | None = None, le: float | None = None, lt: float | None = None, pattern: str | None = None,
        variants: Mapping[str, type] | None = None, tag: str | None = None) -> Any:
    """A schema field: its default (``REQUIRED`` for none), help line and constraints.
    ``variants`` + ``tag``: the value is a mapping whose ``tag`` key selects the dataclass."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "pattern": pattern,
            "variants": variants, "tag": tag}
    if default is REQUIRED:
        return field(metadata=meta)
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda d=default: _copy(d), metadata=meta)
    return field(default=default, metadata=meta)


def _copy(d: Any) -> Any:
    if dataclasses.is_dataclass(d):
        return dataclasses.replace(d)
    return [_copy(x) for x in d] if isinstance(d, list) else {k: _copy(v) for k, v in d.items()} \
        if isinstance(d, dict) else d


# --------------------------------------------------------------------------- sections
@dataclass(kw_only=True)
class Trainer:
    max_epochs: int = key(4, "epochs at most; early stopping may end sooner", ge=1)
    batch_size: int = key(64, "reviews per training batch", ge=1)
    num_buckets: int = key(10, "gluonnlp FixedBucketSampler length buckets", ge=1)
    round_to: int = key(16, "pad each training batch to a multiple of this many tokens: a bounded set of batch "
                            "shapes, so oneDNN's per-shape kernel cache (and the memory it holds) stops growing",
                        ge=1)
    max_len: Optional[int] = key(1000, "tokens kept per review (null: all)", ge=1)
    truncate: str = key("head", "which end of a long review to keep", choices=("head", "tail"))
    patience: int = key(2, "epochs without a better validation ROC-AUC before stopping", ge=1)
    select_tolerance: float = key(0.0, "epoch selection: an epoch within this many standard errors of the best "
                                       "validation ROC-AUC so far counts as good as the best - early stopping "
                                       "waits for it and the later epoch is kept (0: only a strictly better one; "
                                       "on 50 validation reviews one standard error is ~0.03)", ge=0)
    ctx: str = key("cpu", "device", pattern=r"cpu|gpu(:\d+)?")
    progress: bool = key(True, "tqdm progress bar with loss and examples/s")
    hybridize: bool = key(True, "compile the network (Gluon hybridize)")
    checkpoint: bool = key(True, "save a checkpoint after every epoch (resume=<run id>)")


@dataclass(kw_only=True)
class LrConstant:
    type: str = key("constant", "no schedule")
    warmup_frac: float = key(0.0, "fraction of updates spent warming up", ge=0, lt=1)


@dataclass(kw_only=True)
class LrCosine:
    type: str = key("cosine", "cosine decay to final_lr_frac * lr")
    warmup_frac: float = key(0.0, "fraction of updates spent warming up", ge=0, lt=1)
    final_lr_frac: float = key(0.05, "final learning rate as a fraction of lr", ge=0, le=1)


@dataclass(kw_only=True)
class LrStep:
    type: str = key("step", "multiply by factor every step_updates updates")
    step_updates: int = key(2000, "updates between steps", ge=1)
    factor: float = key(0.5, "multiplier per step", gt=0, le=1)
    warmup_frac: float = key(0.0, "fraction of updates spent warming up", ge=0, lt=1)


LR_SCHEDULES = {"constant": LrConstant, "cosine": LrCosine, "step": LrStep}


def _lr_schedule(default: str = "cosine", **over):
    return key(dataclasses.replace(LR_SCHEDULES[default](), **over), "learning-rate schedule",
               variants=LR_SCHEDULES, tag="type")


@dataclass(kw_only=True)
class Adam:
    name: str = key("adam", "Adam")
    lr: float = key(0.002, "learning rate", gt=0)
    wd: float = key(0.0, "L2 weight decay", ge=0)
    lazy_update: bool = key(True, "update only the embedding rows seen in a batch")
    clip_gradient_norm: float = key(5.0, "clip the global gradient L2 norm to this (0: off)", ge=0)
    lr_schedule: Any = _lr_schedule()


@dataclass(kw_only=True)
class AdamW:
    name: str = key("adamw", "Adam with decoupled weight decay (GluonNLP BERTAdam)")
    lr: float = key(0.002, "learning rate", gt=0)
    wd: float = key(0.01, "decoupled weight decay", ge=0)
    clip_gradient_norm: float = key(5.0, "clip the global gradient L2 norm to this (0: off)", ge=0)
    lr_schedule: Any = _lr_schedule(warmup_frac=0.05)


@dataclass(kw_only=True)
class Sgd:
    name: str = key("sgd", "SGD with momentum")
    lr: float = key(0.1, "learning rate", gt=0)
    momentum: float = key(0.9, "momentum", ge=0, lt=1)
    wd: float = key(0.0, "L2 weight decay", ge=0)
    lazy_update: bool = key(True, "update only the embedding rows seen in a batch")
    clip_gradient_norm: float = key(5.0, "clip the global gradient L2 norm to this (0: off)", ge=0)
    lr_schedule: Any = _lr_schedule("step")


OPTIMIZERS = {"adam": Adam, "adamw": AdamW, "sgd": Sgd}


@dataclass(kw_only=True)
class Embedding:
    size: int = key(64, "embedding dimension", ge=1)
    dropout: float = key(0.0, "dropout on embeddings", ge=0, lt=1)
    sparse_grad: bool = key(True, "sparse (row) gradients for the embedding matrix")
    init_scale: Optional[float] = key(None, "uniform init range (null: the layer's default)", gt=0)


@dataclass(kw_only=True)
class PoolEncoder:
    type: str = key("pool", "fastText-style: mean/max of token (+ hashed n-gram) embeddings")
    pooling: list = key(["mean"], "pooling over valid tokens: mean and/or max", choices=("mean", "max"))
    bigram_buckets: int = key(0, "hashed n-gram buckets added to the embedding (0: none)", ge=0)
    ngrams: int = key(2, "longest hashed n-gram", ge=2)
    unique: bool = key(False, "count each n-gram once per review")


@dataclass(kw_only=True)
class CnnEncoder:
    type: str = key("cnn", "Kim (2014) CNN: convolutions, ReLU, max over time")
    widths: list = key([3, 4, 5], "convolution widths in tokens", ge=1)
    filters: int = key(96, "filters per width", ge=1)


@dataclass(kw_only=True)
class RnnEncoder:
    type: str = key("bilstm", "recurrent encoder, masked mean+max over time")
    hidden_size: int = key(96, "units per direction", ge=1)
    num_layers: int = key(1, "stacked layers", ge=1)
    bidirectional: bool = key(True, "read both directions")
    dropout: float = key(0.0, "dropout between stacked layers", ge=0, lt=1)


@dataclass(kw_only=True)
class LstmEncoder(RnnEncoder):
    type: str = key("lstm", "one-directional LSTM unless bidirectional")
    bidirectional: bool = key(False, "read both directions")


ENCODERS = {"pool": PoolEncoder, "cnn": CnnEncoder, "bilstm": RnnEncoder, "lstm": LstmEncoder,
            "gru": RnnEncoder, "bigru": RnnEncoder}


@dataclass(kw_only=True)
class Hidden:
    size: int = key(64, "units of the hidden dense layer", ge=1)
    dropout: float = key(0.2, "dropout before the hidden layer", ge=0, lt=1)
    activation: str = key("relu", "activation", choices=("relu", "tanh", "sigmoid", "softrelu"))


@dataclass(kw_only=True)
class Output:
    size: int = key(1, "output units (1: binary logit)", ge=1)


@dataclass(kw_only=True)
class Ngrams:
    buckets: int = key(4194304, "hashed 1..n-gram buckets of the NBSVM branch (0: no branch)", ge=0)
    n: int = key(3, "longest n-gram", ge=1)
    lr_mult: float = key(2.5, "learning-rate multiplier of the branch", gt=0)
    categorical: Optional[list] = key(None, "categorical columns whose values join the bag as column=value "
                                            "features (null: all of the data's; []: none)")


@dataclass(kw_only=True)
class Model:
    name: str = key("pool", "name used in run names and tags")
    embedding: Embedding = key(Embedding(), "layer `embedding`")
    encoder: Any = key(PoolEncoder(bigram_buckets=400000), "layer `encoder`", variants=ENCODERS, tag="type")
    hidden: Hidden = key(Hidden(), "layer `hidden`")
    output: Output = key(Output(), "layer `output`")
    ngrams: Optional[Ngrams] = key(None, "optional layer `ngrams`: NB-weighted bag of hashed n-grams")


@dataclass(kw_only=True)
class Transforms:
    name: str = key("default", "name of the preprocessing config")
    fill_value: str = key("null", "what missing text becomes")
    lowercase: bool = key(True, "lower-case the text")
    split_pattern: Optional[str] = key(None, "token regex (null: punctuation split off, then whitespace)")
    strip_html: bool = key(True, "drop <br /> tags before tokenizing")
    min_freq: int = key(2, "rarer tokens map to <unk>", ge=1)
    max_size: Optional[int] = key(60000, "most frequent tokens kept (null: all)", ge=1)


@dataclass(kw_only=True)
class Split:
    policy: str = key("stratified", "official: files.train/files.test; stratified: seeded split of files.all",
                      choices=("official", "stratified"))
    test_frac: float = key(0.2, "test fraction (stratified policy)", gt=0, lt=1)
    val_frac: float = key(0.1, "validation fraction of the whole", gt=0, lt=1)


@dataclass(kw_only=True)
class Data:
    name: str = key(REQUIRED, "dataset name (tags, run names)")
    files: dict = key(REQUIRED, "CSV files: train+test (official policy) or all (stratified)")
    text_column: Any = key(REQUIRED, "text column (or a list, joined)")
    label_column: Optional[str] = key(None, "label column (or use label_rule)")
    positive: Any = key(None, "label value(s) meaning positive")
    negative: Any = key(None, "label value(s) meaning negative (null: everything else is an error)")
    label_rule: Optional[str] = key(None, "derive the label from a numeric column, e.g. 'Rating >= 7'")
    id_column: Any = key(None, "id column(s) (null: file:row)")
    categorical: Any = key(None, "categorical columns: a list, or a mapping column -> {normalize: {...}} (null: none)")
    max_category_len: int = key(0, "a longer categorical value is text that spilled over (0: off)", ge=0)
    missing_text: str = key("impute", "rows without text", choices=("impute", "error"))
    split: Split = key(Split(), "how train/validation/test are made")
    limit: Optional[int] = key(None, "keep at most this many rows per split (seeded, stratified)", ge=1)
    n_train: Optional[int] = key(None, "train on a seeded stratified subset of this size", ge=1)


@dataclass(kw_only=True)
class Frozen:
    name: str = key("frozen", "only the new head trains")


@dataclass(kw_only=True)
class Full:
    name: str = key("full", "every layer trains from the base weights")


@dataclass(kw_only=True)
class Scratch:
    name: str = key("scratch", "the architecture from random init (the control)")


@dataclass(kw_only=True)
class Gradual:
    name: str = key("gradual", "ULMFiT gradual unfreezing from the top")
    unfreeze_every: int = key(1, "epochs per newly unfrozen layer", ge=1)


@dataclass(kw_only=True)
class Discriminative:
    name: str = key("discriminative", "every layer trains, lr x decay per layer below the output")
    decay: float = key(0.385, "learning-rate factor per layer", gt=0, le=1)


SCHEDULES = {"frozen": Frozen, "full": Full, "scratch": Scratch, "gradual": Gradual,
             "discriminative": Discriminative}


@dataclass(kw_only=True)
class CatBoostHead:
    layer: str = key("encoder", "named layer whose outputs are the features",
                     choices=("embedding", "encoder", "hidden", "output"))
    iterations: int = key(500, "boosting iterations", ge=1)
    depth: int = key(6, "tree depth", ge=1, le=16)
    learning_rate: Optional[float] = key(None, "null: CatBoost picks one", gt=0)
    od_wait: int = key(50, "early-stopping patience on the validation split", ge=1)
    thread_count: int = key(2, "CatBoost threads", ge=1)
    categorical: bool = key(True, "also the data's categorical columns (CatBoost's own encoding); false: the "
                                  "embeddings alone, the inputs the networks and TF-IDF + LR see")


@dataclass(kw_only=True)
class TfidfLrHead:
    ngram_range: list = key([1, 2], "word n-gram range [min, max]", ge=1)
    min_df: int = key(1, "minimum document frequency", ge=1)
    sublinear_tf: bool = key(True, "1 + log(tf)")
    C: float = key(10.0, "inverse regularisation strength", gt=0)
    categorical: bool = key(False, "also the data's categorical columns, one-hot encoded; false: the text alone")


@dataclass(kw_only=True)
class Heads:
    catboost: CatBoostHead = key(CatBoostHead(), "CatBoost on embeddings")
    tfidf_lr: TfidfLrHead = key(TfidfLrHead(), "TF-IDF + logistic regression")


@dataclass(kw_only=True)
class Tracking:
    enabled: bool = key(True, "false: run without MLflow")
    lock_dir: Optional[str] = key(None, "where stage locks live (default: beside the sqlite store)")
    uri: Optional[str] = key(None, "MLflow tracking URI (null: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    experiment: str = key("xfer", "MLflow experiment")
    artifact_location: Optional[str] = key(None, "artifact root of a new experiment (null: MLflow's)")
    run_name: Optional[str] = key(None, "run name (null: <data>-<model>)")
    log_model: bool = key(True, "log every trained network as an mlflow.pyfunc model (which then holds its bundle)")
    keep_outputs: bool = key(False, "keep local copies of logged bundles and checkpoints in the job's output "
                                    "directory after it finishes (tracking disabled: always kept)")


@dataclass(kw_only=True)
class Register:
    name: Optional[str] = key(None, "register the model under this name")
    alias: Optional[str] = key("champion", "alias moved to the new version if its metric is at least the holder's")
    metric: str = key("test_roc_auc", "metric that picks the best run and decides the alias")
    force_alias: bool = key(False, "move the alias whatever the metric")


@dataclass(kw_only=True)
class Sweep:
    """Hydra multiruns (``-m``): one MLflow parent run per sweep, each job a child run."""
    resume: Optional[str] = key(None, "the id of an interrupted sweep (its parent run's xfer.sweep_id, printed at "
                                      "its start): the same -m command then skips every job that finished, "
                                      "continues interrupted training jobs from their last checkpoint and runs "
                                      "the rest, all under the original parent run")


PRETRAIN_METHODS = ("none", "skipgram", "cbow", "fasttext", "file")


@dataclass(kw_only=True)
class Pretrain:
    """Word vectors that initialise the `embedding` layer before supervised training."""
    method: str = key("none", "none; skipgram, cbow (word2vec) or fasttext: trained with gensim on unlabelled "
                              "text; file: read from pretrain.vectors", choices=PRETRAIN_METHODS)
    vectors: Optional[str] = key(None, "method=file: a word2vec/GloVe/fastText text file (token then numbers)")
    files: list = key([], "CSV files of unlabelled text added to the stage's own training texts (never its "
                          "validation or test texts)")
    text_column: str = key("text", "text column of pretrain.files")
    epochs: int = key(5, "passes over the corpus", ge=1)
    window: int = key(5, "context window (tokens each side)", ge=1)
    negative: int = key(5, "negative samples per positive", ge=1)
    min_count: int = key(5, "rarer tokens get no vector", ge=1)
    sample: float = key(1e-3, "downsampling threshold of frequent tokens", ge=0)
    workers: int = key(1, "gensim threads; more than 1 is faster but not bit-reproducible", ge=1)
    oov: str = key("random", "embedding rows of tokens without a vector: random (the layer's init) or zero",
                   choices=("random", "zero"))
    rescale: bool = key(True, "scale the vectors so their spread equals the layer's initialisation")


@dataclass(kw_only=True)
class SelfTrain:
    """Self-training on unlabelled reviews: a teacher network trained on the labelled reviews scores
    them, the ones it is sure of join the training split with its labels (pseudo-labels), and the
    network is trained again on both, from its initialisation or from the teacher. Validation and
    test stay labelled."""
    files: list = key([], "CSV files of unlabelled reviews to pseudo-label (empty: no self-training)")
    text_column: str = key("text", "text column of self_train.files")
    threshold: float = key(0.9, "keep reviews the teacher scores p >= threshold or p <= 1 - threshold", gt=0.5, lt=1)
    max_rows: Optional[int] = key(None, "keep at most this many of them, the surest first (null: all)", ge=1)
    student: str = key("scratch", "scratch: the student trains from the network's initialisation, preprocessing "
                                  "fitted again on all its reviews; teacher: it starts from the teacher's trained "
                                  "network and preprocessing (the n-gram ratios fitted again on all its reviews) "
                                  "and trains for self_train.student_epochs", choices=("scratch", "teacher"))
    student_epochs: Optional[int] = key(None, "student=teacher: the student's epochs at most (null: "
                                              "trainer.max_epochs)", ge=1)
    student_lr: Optional[float] = key(None, "student=teacher: the student's learning rate, its schedule the "
                                            "optimizer's (null: optimizer.lr)", gt=0)


@dataclass(kw_only=True)
class Stage:
    """What trains a network: data, preprocessing, architecture, optimizer, trainer, seed."""
    seed: int = key(0, "fixes splits, initialisation, batch order and dropout", ge=0)
    data: Optional[Data] = key(None, "dataset")
    transforms: Transforms = key(Transforms(), "preprocessing")
    pretrain: Pretrain = key(Pretrain(), "word vectors for the embedding layer (its own stage, reused by fingerprint)")
    self_train: SelfTrain = key(SelfTrain(), "task=train: pseudo-labelled unlabelled reviews added to the training split")
    model: Model = key(Model(), "architecture")
    optimizer: Any = key(Adam(), "optimizer", variants=OPTIMIZERS, tag="name")
    trainer: Trainer = key(Trainer(), "training loop")


@dataclass(kw_only=True)
class Base(Stage):
    """The base stage of a transfer job (a composed ``stage/*.yaml``), or a given base."""
    run_id: Optional[str] = key(None, "use this MLflow run's bundle as the base")
    path: Optional[str] = key(None, "use this bundle directory as the base")


@dataclass(kw_only=True)
class Tsne:
    enabled: bool = key(True, "log t-SNE maps of base and transferred embeddings")
    n_per_domain: int = key(300, "reviews per domain in the maps", ge=2)
    layer: str = key("hidden", "named layer mapped", choices=("embedding", "encoder", "hidden", "output"))


METHODS = ("transfer", "scratch", "scratch_pretrained", "catboost_embeddings", "tfidf_lr")


@dataclass(kw_only=True)
class Transfer:
    vocab: str = key("keep", "keep the base vocabulary or extend it with target tokens", choices=("keep", "extend"))
    extend_min_freq: int = key(2, "min count of a target token added by vocab=extend", ge=1)
    hidden: str = key("keep", "keep the base hidden layer or replace it", choices=("keep", "replace"))
    unfreeze_every: Optional[int] = key(None, "gradual schedule pace (null: schedule.unfreeze_every)", ge=1)
    head_init: str = key("probe", "fresh output layer: linear probe (LP-FT) or random", choices=("probe", "random"))
    ngrams: str = key("keep", "n-gram branch: keep the base's naive-Bayes ratios, or extend them with the target's "
                              "for the n-grams the base never saw (their weight set to 1)", choices=("keep", "extend"))
    repeats: int = key(1, "seeded splits; the table reports mean and std", ge=1)
    adapt: bool = key(False, "continue the base's word2vec pretraining on the target's unlabelled text (its "
                             "training pool, never its test split) and add transfer_<schedule>_adapted")
    adapt_epochs: int = key(5, "passes of the adaptation over the target text", ge=1)
    adapt_files: list = key([], "CSV files of extra unlabelled target text for the adaptation")
    adapt_text_column: str = key("text", "text column of transfer.adapt_files")
    self_train: bool = key(False, "after the transfer, its network pseudo-labels the target's unlabelled text (the "
                                  "training pool beyond the labelled rows, and transfer.adapt_files) and the base "
                                  "is transferred again on both: adds transfer_<schedule>_selftrained (with "
                                  "nothing pseudo-labelled, the first transfer's network and results)")
    self_train_threshold: float = key(0.9, "pseudo-label a review when the teacher's p >= this or <= 1 - this",
                                      gt=0.5, lt=1)
    self_train_balance: bool = key(False, "keep the pseudo-labels' share of positives at the labelled rows' "
                                          "(how: transfer.self_train_balance_by)")
    self_train_balance_by: str = key("cut", "cut: the class the teacher over-represents is cut to its surest "
                                            "reviews; fill: the other class is filled up with its surest reviews "
                                            "below the threshold", choices=("cut", "fill"))
    self_train_rounds: int = key(1, "rounds of self-training: each student but the last pseudo-labels the "
                                    "unlabelled text again for the next (transfer_<schedule>_selftrained is "
                                    "the last; a student sure of no review ends them)", ge=1)
    methods: list = key(list(METHODS), "methods compared (scratch_pretrained: scratch with the base's pretrained "
                                       "vectors; skipped when the base has none)", choices=METHODS)
    save_bundle: bool = key(True, "save (and log) the transferred network's bundle")
    tsne: Tsne = key(Tsne(), "t-SNE maps")


@dataclass(kw_only=True)
class Config(Stage):
    task: str = key("train", "train: fit a network on data; transfer: carry base to data",
                    choices=("train", "transfer"))
    data: Data = key(REQUIRED, "dataset")
    resume: Optional[str] = key(None, "task=train: MLflow run id of an interrupted run to continue")
    schedule: Any = key(Gradual(), "how layers are frozen/unfrozen when transferring", variants=SCHEDULES, tag="name")
    heads: Heads = key(Heads(), "the classic comparison heads")
    tracking: Tracking = key(Tracking(), "MLflow")
    register: Register = key(Register(), "MLflow Model Registry")
    sweep: Sweep = key(Sweep(), "-m sweeps")
    base: Optional[Base] = key(None, "task=transfer: the base stage")
    transfer: Transfer = key(Transfer(), "task=transfer: how the base is carried over")


# --------------------------------------------------------------------------- validation
def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


def _bounds(meta: Mapping) -> str:
    parts = [f"{op} {meta[k]:g}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
             if meta.get(k) is not None]
    return " and ".join(parts)


def _fail(path: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{path}: {_fmt(value)} is not {allowed}")


def _number(path: str, v: Any, kind: type, meta: Mapping) -> Any:
    what = {int: "an integer", float: "a number"}[kind]
    b = _bounds(meta)
    desc = f"{what} {b}".strip()
    if isinstance(v, bool):
        raise _fail(path, v, desc)
    if isinstance(v, str):
        try:
            v = kind(v.strip())
        except ValueError:
            raise _fail(path, v, desc) from None
    if kind is int:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int):
            raise _fail(path, v, desc)
    elif not isinstance(v, (int, float)):
        raise _fail(path, v, desc)
    else:
        v = float(v)
    checks = (("ge", lambda x, t: x >= t), ("gt", lambda x, t: x > t), ("le", lambda x, t: x <= t),
              ("lt", lambda x, t: x < t))
    if any(meta.get(k) is not None and not ok(v, meta[k]) for k, ok in checks):
        raise _fail(path, v, desc)
    return v


def _scalar(path: str, v: Any, kind: Any, meta: Mapping) -> Any:
    if kind in (int, float):
        return _number(path, v, kind, meta)
    if kind is bool:
        if not isinstance(v, bool):
            raise _fail(path, v, "true or false")
        return v
    if kind is str:
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise _fail(path, v, "a string")
        v = str(v)
        if meta.get("choices") and v not in meta["choices"]:
            raise _fail(path, v, f"one of {', '.join(meta['choices'])}")
        if meta.get("pattern") and not re.fullmatch(meta["pattern"], v):
            raise _fail(path, v, f"of the form {meta['pattern']}")
        return v
    if kind is list:
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
            raise _fail(path, v, "a list")
        out = []
        for i, x in enumerate(v):
            if meta.get("choices"):
                x = _scalar(f"{path}[{i}]", x, str, meta)
            elif any(meta.get(k) is not None for k in ("ge", "gt", "le", "lt")):
                x = _number(f"{path}[{i}]", x, int, meta)
            out.append(x)
        return out
    if kind is dict:
        if not isinstance(v, Mapping):
            raise _fail(path, v, "a mapping")
        return dict(v)
    return v  # Any: checked by the section's own rules


def _field_kind(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) of an annotation."""
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _section(path: str, value: Any, cls: type) -> dict:
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if not isinstance(value, Mapping):
        raise _fail(path or "config", value, "a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in value if k not in fields]
    if unknown:
        raise ConfigError(f"{_join(path, unknown[0])}: unknown key (allowed: {', '.join(fields)})")
    out = {}
    for name, f in fields.items():
        here = _join(path, name)
        if name in value and value[name] != "???":  # Hydra's mark of a mandatory value not given
            out[name] = _value(here, value[name], hints[name], f.metadata)
        elif f.default is not MISSING:
            out[name] = _value(here, f.default, hints[name], f.metadata)
        elif f.default_factory is not MISSING:
            out[name] = _value(here, f.default_factory(), hints[name], f.metadata)
        else:
            raise ConfigError(f"{here}: missing required key")
    return out


def _value(path: str, v: Any, tp: Any, meta: Mapping) -> Any:
    kind, optional = _field_kind(tp)
    if v is None:
        if optional or kind is Any:
            return None
        raise _fail(path, v, "allowed to be null")
    if meta.get("variants"):
        return _variant(path, v, meta["variants"], meta["tag"])
    if dataclasses.is_dataclass(kind):
        return _section(path, v, kind)
    return _scalar(path, v, kind, meta)


def _variant(path: str, v: Any, variants: Mapping[str, type], tag: str) -> dict:
    if dataclasses.is_dataclass(v):
        v = dataclasses.asdict(v)
    if isinstance(v, str):  # a bare tag: that variant's defaults
        v = {tag: v}
    if not isinstance(v, Mapping):
        raise _fail(path, v, "a mapping")
    name = v.get(tag)
    if name not in variants:
        raise _fail(_join(path, tag), name, f"one of {', '.join(variants)}")
    return _section(path, v, variants[name])


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


SECTIONS = {"trainer": Trainer, "transforms": Transforms, "model": Model, "data": Data, "heads": Heads,
            "tracking": Tracking, "register": Register, "transfer": Transfer, "base": Base,
            "sweep": Sweep, "self_train": SelfTrain}
TAGGED = {"optimizer": (OPTIMIZERS, "name"), "schedule": (SCHEDULES, "name"),
          "lr_schedule": (LR_SCHEDULES, "type"), "encoder": (ENCODERS, "type")}


def _field_default(cls: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default if f.default is not MISSING else f.default_factory()


#: the variant a tagged section takes when none is given: the schema's own default for that field
TAGGED_DEFAULTS = {"optimizer": _field_default(Stage, "optimizer"), "schedule": _field_default(Config, "schedule"),
                   "lr_schedule": _field_default(Adam, "lr_schedule"), "encoder": _field_default(Model, "encoder")}


def section(name: str, value: Mapping | None) -> dict:
    """One section (``trainer``, ``model``, ``optimizer``...) validated with its defaults filled;
    idempotent, so library functions call it on whatever mapping they are given."""
    path = name.split(".")[-1]
    if path in TAGGED:
        variants, tag = TAGGED[path]
        return _variant(name, TAGGED_DEFAULTS[path] if value is None else value, variants, tag)
    return _section(name, value or {}, SECTIONS[path])


def validate(cfg: Mapping) -> dict:
    """The whole job config, validated and complete (see the module docstring)."""
    cfg = dict(cfg)
    cfg.pop("hydra", None)
    out = _section("", cfg, Config)
    if out["task"] == "transfer":
        base = out["base"]
        if base is None or (base["data"] is None and not base["run_id"] and not base["path"]):
            raise ConfigError("base: a transfer job needs a base stage (base.data...) or base.run_id / base.path")
        if out["self_train"]["files"]:
            raise ConfigError("self_train.files: a transfer job does not self-train its target networks; "
                              "self-train the base with base.self_train (self_train@base.self_train=...)")
    for path, st in (("self_train", out["self_train"]), ("base.self_train", (out.get("base") or {}).get("self_train"))):
        for k in ("student_epochs", "student_lr"):
            if st and st[k] is not None and st["student"] != "teacher":
                raise ConfigError(f"{path}.{k}: only read with {path}.student=teacher")
    _check_data(out["data"], "data")
    if out["task"] == "transfer" and out["base"]["data"] and not (out["base"]["run_id"] or out["base"]["path"]):
        _check_data(out["base"]["data"], "base.data")
        where = weight_mismatch(out["model"], out["base"]["model"])
        if where:
            raise ConfigError(f"model.{where}: differs from base.model.{where}; the transferred network keeps the "
                              f"base's weights (change the base with base.model.* or model@base.model=...)")
    return out


def _check_data(d: Mapping, path: str) -> None:
    """Rules across keys of a data config (the CSV itself is checked when it is read)."""
    if not d["label_rule"] and not d["label_column"]:
        raise ConfigError(f"{path}.label_column: missing required key (or give {path}.label_rule)")
    if d["label_column"] and not d["label_rule"] and d["positive"] is None:
        raise ConfigError(f"{path}.positive: missing required key (the label value meaning positive)")
    if d["label_rule"] and not re.fullmatch(r"\s*(\w+)\s*(>=|<=|==|!=|>|<)\s*(-?[\d.]+)\s*", d["label_rule"]):
        raise _fail(f"{path}.label_rule", d["label_rule"], "a rule like 'Rating >= 7'")
    need = ("train", "test") if d["split"]["policy"] == "official" else ("all",)
    for k in need:
        if d["files"].get(k) in (None, "", "???"):
            raise ConfigError(f"{path}.files.{k}: missing required key (needed by split.policy={d['split']['policy']})")
    if d["split"]["policy"] == "stratified" and d["split"]["test_frac"] + d["split"]["val_frac"] >= 1:
        raise _fail(f"{path}.split.val_frac", d["split"]["val_frac"], f"< 1 - test_frac ({1 - d['split']['test_frac']:g})")


#: model keys that hold no weights: a transfer job's model may set them differently from its base
WEIGHTLESS = (("name",), ("embedding", "dropout"), ("embedding", "sparse_grad"), ("embedding", "init_scale"),
              ("hidden", "dropout"), ("encoder", "dropout"), ("ngrams", "lr_mult"),
              ("ngrams", "categorical"))


def _strip(model: Mapping) -> dict:
    out = section("model", model)
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in out.items()}
    for path in WEIGHTLESS:
        node = out
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return out


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The first key path at which two nested configs differ (None if equal)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in list(a) + [k for k in b if k not in a]:
            d = first_difference(a.get(k), b.get(k), _join(path, str(k)))
            if d:
                return d
        return None
    return None if a == b else path


def weight_mismatch(target_model: Mapping, base_model: Mapping) -> str | None:
    """Where the target's model config changes a weight shape of the base's (None if it does not)."""
    return first_difference(_strip(target_model), _strip(base_model))


# --------------------------------------------------------------------------- docs
def describe(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) for every key, tagged unions expanded per variant."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = _join(prefix, f.name)
        kind, optional = _field_kind(hints[f.name])
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else "(required)")
        if f.metadata.get("variants"):
            seen = set()
            for tagv, vcls in f.metadata["variants"].items():
                if vcls in seen:
                    continue
                seen.add(vcls)
                rows += describe(vcls, f"{path}[{f.metadata['tag']}={tagv}]")
            continue
        if dataclasses.is_dataclass(kind):
            rows += describe(kind, path)
            continue
        rule = ", ".join(filter(None, [f"one of {'|'.join(map(str, f.metadata['choices']))}"
                                       if f.metadata.get("choices") else "", _bounds(f.metadata),
                                       "or null" if optional else ""]))
        rows.append((path, getattr(kind, "__name__", str(kind)) + (f" ({rule})" if rule else ""),
                     _fmt(default), f.metadata.get("help", "")))
    return rows


def main() -> int:
    print("| key | type | default | meaning |\n|---|---|---|---|")
    for row in describe():
        print("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
