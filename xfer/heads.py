"""Comparison heads (``conf/head/*.yaml``): classic models that the transfer must beat.

- ``tfidf_lr``: TF-IDF of word 1-2 grams + logistic regression on the raw text (optionally with
  the dataset's categorical columns, one-hot encoded).
- ``catboost``: CatBoost on embeddings extracted from a named layer of a network, with the
  dataset's categorical columns (e.g. Browser_Used, Device_Used) as CatBoost categorical
  features.

Each returns the same ``test_*`` metrics as the neural runs plus ``train_seconds``.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import ConfigError
from .schema import section
from .encode import classification_metrics


def _prefixed(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def tfidf_lr(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, cfg: Mapping, seed: int = 0,
             categorical: Sequence[str] = ()) -> dict:
    """TF-IDF of the text + logistic regression; with ``cfg.categorical``, ``categorical``
    columns one-hot encoded beside it (a ColumnTransformer; unseen values are all zeros)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from .transforms import CategoryImputer

    cfg = section("heads", {"tfidf_lr": cfg})["tfidf_lr"]
    columns = list(categorical) if cfg["categorical"] else []
    t0 = time.perf_counter()
    tfidf = TfidfVectorizer(ngram_range=tuple(cfg["ngram_range"]), min_df=cfg["min_df"],
                            sublinear_tf=cfg["sublinear_tf"], strip_accents="unicode")
    model = make_pipeline(
        ColumnTransformer([("text", tfidf, "text"),
                           ("categorical", make_pipeline(CategoryImputer(), OneHotEncoder(handle_unknown="ignore")),
                            columns)]),
        LogisticRegression(C=cfg["C"], max_iter=2000, random_state=seed))

    def inputs(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[["text", *columns]].assign(text=frame["text"].fillna(""))

    model.fit(inputs(train), train["label"])
    seconds = time.perf_counter() - t0
    out = {"train_seconds": seconds}
    for name, frame in (("val", val), ("test", test)):
        p = model.predict_proba(inputs(frame))[:, 1]
        out.update(_prefixed(classification_metrics(frame["label"], p), name))
    return out


def catboost_embeddings(features: Mapping[str, np.ndarray], frames: Mapping[str, pd.DataFrame],
                        categorical: list[str], cfg: Mapping, seed: int = 0) -> dict:
    """CatBoost on ``features[split]`` (+ categorical columns of ``frames[split]``)."""
    from catboost import CatBoostClassifier, Pool

    def pool(split):
        X = pd.DataFrame(features[split], columns=[f"e{i}" for i in range(features[split].shape[1])])
        for c in categorical:
            X[c] = frames[split][c].astype(str).to_numpy()
        return Pool(X, frames[split]["label"].to_numpy(), cat_features=list(categorical) or None)

    if len(frames["train"]) < 2:
        raise ConfigError("head catboost: needs at least two training examples")
    t0 = time.perf_counter()
    cfg = section("heads", {"catboost": cfg})["catboost"]
    model = CatBoostClassifier(iterations=cfg["iterations"], depth=cfg["depth"], learning_rate=cfg["learning_rate"],
                               random_seed=seed, verbose=False, thread_count=cfg["thread_count"],
                               allow_writing_files=False, use_best_model=True, od_type="Iter", od_wait=cfg["od_wait"])
    model.fit(pool("train"), eval_set=pool("val"))
    out = {"train_seconds": time.perf_counter() - t0, "best_iteration": float(model.get_best_iteration() or 0)}
    for split in ("val", "test"):
        p = model.predict_proba(pool(split))[:, 1]
        out.update(_prefixed(classification_metrics(frames[split]["label"], p), split))
    return out
