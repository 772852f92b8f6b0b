"""Self-training (``self_train`` config group): pseudo-labels for unlabelled reviews.

A teacher network trained on the labelled reviews scores unlabelled ones; the reviews it is sure
of (``p >= threshold`` or ``p <= 1 - threshold``) become training rows labelled with its decision,
and the network is trained again on the labelled and the pseudo-labelled rows together. This
module only selects the rows; ``xfer.jobs.train`` runs teacher and student. No MLflow here.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import pretrain
from .data import sha256_file
from .errors import DataError


def enabled(scfg: Mapping) -> bool:
    return bool(scfg.get("files"))


def unlabelled_texts(scfg: Mapping) -> list[str]:
    """The non-empty texts of ``self_train.files``, in file order."""
    texts = [t for t in pretrain.unlabelled_texts(scfg, ()) if t.strip()]  # same keys: files, text_column
    if not texts:
        raise DataError(f"self_train.files: no text in column {scfg['text_column']!r} of {', '.join(map(str, scfg['files']))}")
    return texts


def pseudo_labelled(texts: Sequence[str], proba: np.ndarray, threshold: float,
                    max_rows: int | None = None, positive_share: float | None = None,
                    fill: bool = False) -> pd.DataFrame:
    """The reviews the teacher is sure of: ``text``, ``label`` (1 if p >= 0.5) and ``confidence``
    (max(p, 1 - p)); with ``positive_share`` the class the teacher over-represents against that
    share is cut to its surest reviews, or with ``fill`` the other class is filled up to the share
    with its surest reviews below the threshold (as far as the teacher predicts that class, as
    class-balanced self-training does); with ``max_rows`` the surest ones (ties in input order);
    rows in input order."""
    proba = np.asarray(proba, dtype=np.float64)
    if len(proba) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(proba)} probabilities")
    confidence = np.maximum(proba, 1.0 - proba)
    surest = lambda idx, n: idx[np.argsort(-confidence[idx], kind="stable")[:n]]  # noqa: E731
    keep = np.flatnonzero(confidence >= threshold)
    if positive_share is not None:
        if not 0.0 < positive_share < 1.0:
            raise ValueError(f"positive_share must be strictly between 0 and 1, not {positive_share}")
        pos, neg = keep[proba[keep] >= 0.5], keep[proba[keep] < 0.5]
        ratio = positive_share / (1.0 - positive_share)  # positives per negative
        if fill:  # the under-represented class from all the reviews the teacher gives it
            if len(pos) > len(neg) * ratio:
                neg = surest(np.flatnonzero(proba < 0.5), max(len(neg), int(round(len(pos) / ratio))))
            else:
                pos = surest(np.flatnonzero(proba >= 0.5), max(len(pos), int(round(len(neg) * ratio))))
        elif len(pos) > len(neg) * ratio:
            pos = surest(pos, int(round(len(neg) * ratio)))
        else:
            neg = surest(neg, int(round(len(pos) / ratio)))
        keep = np.sort(np.concatenate([pos, neg]))
    if max_rows is not None and len(keep) > max_rows:
        keep = np.sort(surest(keep, max_rows))
    return pd.DataFrame({"text": [texts[i] for i in keep], "label": (proba[keep] >= 0.5).astype(int),
                         "confidence": confidence[keep]})


def withheld_agreement(pseudo: pd.DataFrame, texts: Sequence[str], labels: Sequence[int]) -> dict[str, float]:
    """A diagnostic of ``pseudo_labelled``'s rows against labels nobody trained on (those
    ``data.n_train`` withheld from the training pool): ``pseudo_label_checked``, the pseudo-labelled
    reviews whose label is known (a text labelled both ways is not), and ``pseudo_label_accuracy``,
    the share of them the teacher labelled right; {} when none is known."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    known: dict[str, int | None] = {}
    for text, label in zip(texts, labels):
        known[text] = int(label) if known.get(text, label) == label else None
    pairs = [(known[t], int(y)) for t, y in zip(pseudo["text"], pseudo["label"]) if known.get(t) is not None]
    if not pairs:
        return {}
    return {"pseudo_label_checked": float(len(pairs)),
            "pseudo_label_accuracy": sum(a == b for a, b in pairs) / len(pairs)}


def fingerprint_part(scfg: Mapping) -> dict:
    """What self-training adds to a network's fingerprint (nothing when off, so other networks
    keep theirs): its settings and the unlabelled files by content."""
    if not enabled(scfg):
        return {}
    part = {"files": [sha256_file(f) for f in scfg["files"]], "text_column": scfg["text_column"],
            "threshold": scfg["threshold"], "max_rows": scfg["max_rows"]}
    if scfg.get("student", "scratch") != "scratch":  # later keys count only when set: older runs keep theirs
        part.update(student=scfg["student"], student_epochs=scfg["student_epochs"])
        if scfg.get("student_lr") is not None:
            part["student_lr"] = scfg["student_lr"]
    return {"self_train": part}
