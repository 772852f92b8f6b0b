"""A trained model as one directory: network, architecture, preprocessing, labels, metadata.

Layout::

    net.params          Gluon parameters (save_parameters)
    model.json          architecture config + vocabulary size + sequence settings
    preprocessor.joblib fitted sklearn Pipeline / ColumnTransformer
    labels.json         label mapping, e.g. {"0": "neg", "1": "pos"}
    meta.json           xfer version, config fingerprint, data checksum, metrics,
                        and the sha256 of every other file

``preprocessor.joblib`` is a pickle: load bundles only from sources you trust.
Saving writes into a temporary sibling directory and renames it, so a bundle is
either complete or absent.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import joblib
import numpy as np
import pandas as pd

from . import __version__
from .errors import BundleError
from .data import atomic_dir, sha256_file

FILES = ("net.params", "model.json", "preprocessor.joblib", "labels.json")


def fingerprint(obj: Any) -> str:
    """A stable sha256 of a JSON-able config (key order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Bundle:
    net: Any
    preprocessor: Any
    model_cfg: dict
    labels: dict = field(default_factory=lambda: {"0": "negative", "1": "positive"})
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def in_hand(cls, path: str | Path, net, preprocessor) -> "Bundle":
        """The bundle just saved at ``path`` from ``net`` and ``preprocessor``, without reloading
        them (only its small JSON files are read)."""
        path = Path(path)
        read = lambda name: json.loads((path / name).read_text())  # noqa: E731
        return cls(net=net, preprocessor=preprocessor, model_cfg=read("model.json"), labels=read("labels.json"),
                   meta=read("meta.json"), path=path)

    @property
    def vocab_size(self) -> int:
        return int(self.model_cfg["vocab_size"])

    def sequences(self, frame: pd.DataFrame) -> list[np.ndarray]:
        """Raw frame (``text`` + categorical columns) -> model-ready id arrays."""
        from .encode import encode_frame

        return encode_frame(self.preprocessor, frame, self.model_cfg["architecture"], self.model_cfg.get("max_len"),
                            self.model_cfg.get("truncate", "head"))

    def predict_proba(self, frame: pd.DataFrame | Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Positive-class probabilities for a model frame (``text`` + categorical columns)."""
        from .encode import predict_proba

        if not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame({"text": list(frame)})
        return predict_proba(self.net, self.sequences(frame), batch_size=batch_size)

    @property
    def inputs(self) -> dict:
        """The raw columns this model reads (saved at training time; older bundles read ``text``)."""
        spec = self.meta.get("inputs")
        if spec:
            return spec
        from .transforms import categorical_columns

        return {"text_columns": ["text"], "categorical": {c: {} for c in categorical_columns(self.preprocessor)},
                "max_category_len": 0}

    @property
    def input_columns(self) -> list[str]:
        return [*self.inputs["text_columns"], *self.inputs.get("categorical", {})]

    def predict_frame(self, raw: pd.DataFrame, source: str = "input", batch_size: int = 256,
                      max_text_chars: int | None = None) -> pd.DataFrame:
        """A raw table in the training data's schema -> ``probability`` and ``label`` columns
        (same index). Raises DataError for a missing column, a non-text value, an empty
        table or a text longer than ``max_text_chars``."""
        from .data import _index_ref, model_frame
        from .errors import DataError

        if len(raw) == 0:
            raise DataError(f"{source}: no rows to predict")
        frame = model_frame(raw, self.inputs, source)
        if max_text_chars:
            lengths = frame["text"].map(lambda t: len(t) if isinstance(t, str) else 0).to_numpy()
            if lengths.max() > max_text_chars:
                pos = int(np.argmax(lengths > max_text_chars))
                raise DataError(f"{source}: {_index_ref(raw, pos)}: text has {lengths[pos]} characters "
                                f"(limit {max_text_chars})")
        p = self.predict_proba(frame, batch_size=batch_size)
        names = np.array([self.labels.get("0", "0"), self.labels.get("1", "1")], dtype=object)
        return pd.DataFrame({"probability": p, "label": names[(p >= 0.5).astype(int)]}, index=raw.index)


def save_bundle(path: str | Path, net, preprocessor, architecture: Mapping, vocab_size: int,
                labels: Mapping[str, str], max_len: int | None = None, truncate: str = "head",
                meta: Mapping[str, Any] | None = None) -> Path:
    """Write a bundle directory atomically and return its path."""
    with atomic_dir(path) as tmp:
        net.save_parameters(str(tmp / "net.params"))
        model = {"architecture": dict(architecture), "vocab_size": int(vocab_size), "max_len": max_len,
                 "truncate": truncate}
        (tmp / "model.json").write_text(json.dumps(model, indent=2, sort_keys=True))
        joblib.dump(preprocessor, tmp / "preprocessor.joblib")
        (tmp / "labels.json").write_text(json.dumps(dict(labels), indent=2))
        full_meta = {"xfer_version": __version__, **dict(meta or {}),
                     "files": {f: sha256_file(tmp / f) for f in FILES}}
        (tmp / "meta.json").write_text(json.dumps(full_meta, indent=2, sort_keys=True, default=str))
    return Path(path)


def load_bundle(path: str | Path, ctx=None) -> Bundle:
    """Rebuild the network and preprocessing from a bundle directory, checking every file."""
    from .models import build_model
    from .transforms import token_vocab

    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: bundle directory not found")
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise BundleError(f"{meta_file}: missing file (not an xfer bundle?)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{meta_file}: not valid JSON ({e.msg})") from None
    for name in FILES:
        f = path / name
        if not f.is_file():
            raise BundleError(f"{f}: missing file")
        want = meta.get("files", {}).get(name)
        if want and sha256_file(f) != want:
            raise BundleError(f"{f}: checksum mismatch (file changed or corrupt)")
    model_cfg = json.loads((path / "model.json").read_text())
    labels = json.loads((path / "labels.json").read_text())
    try:
        pre = joblib.load(path / "preprocessor.joblib")
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad bundle
        raise BundleError(f"{path / 'preprocessor.joblib'}: cannot load ({type(e).__name__}: {e})") from None
    vocab = token_vocab(pre).vocabulary_size
    if vocab != int(model_cfg["vocab_size"]):
        raise BundleError(f"{path}: vocabulary mismatch: preprocessor has {vocab} tokens, "
                          f"model.json says {model_cfg['vocab_size']}")
    net = build_model(model_cfg["architecture"], int(model_cfg["vocab_size"]))
    try:
        import mxnet as mx

        net.load_parameters(str(path / "net.params"), ctx=ctx or mx.cpu())
    except Exception as e:  # noqa: BLE001 - MXNet raises bare MXNetError/AssertionError
        msg = " ".join(str(e).split())[:300]
        raise BundleError(f"{path / 'net.params'}: does not match the architecture in model.json ({msg})") from None
    net.hybridize(static_alloc=True)
    return Bundle(net=net, preprocessor=pre, model_cfg=model_cfg, labels=labels, meta=meta, path=path)


def bundle_dir_of(path: str | Path) -> Path:
    """A bundle directory, or the bundle inside a pyfunc model directory (``artifacts/bundle``)."""
    path = Path(path)
    if (path / "meta.json").is_file() or not (path / "MLmodel").is_file():
        return path
    return path / "artifacts" / "bundle"
