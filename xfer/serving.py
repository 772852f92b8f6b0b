"""A trained bundle as a standard MLflow pyfunc model that reads raw review text.

Input: a DataFrame with the training data's own columns (IMDB: ``text``; hotel:
``Description``, ``Browser_Used``, ``Device_Used``). Output: a DataFrame with
``probability`` (of the positive class) and ``label`` (its name, e.g. ``pos``).

The model directory holds the bundle under ``artifacts/bundle`` and xfer's own code
(``code/xfer``), so ``mlflow.pyfunc.load_model`` and ``mlflow models serve
--env-manager local`` need only xfer's dependencies, not an xfer install.
Bad input (missing column, non-text value, empty batch, a text over
``max_text_chars``) raises MlflowException(INVALID_PARAMETER_VALUE): HTTP 400 from
the scoring server, which keeps serving.
"""
from __future__ import annotations

import importlib.metadata as md
from pathlib import Path
from typing import Any

import pandas as pd

try:  # the pyfunc base class when MLflow is present; xfer works without it otherwise
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is a dependency
    PythonModel = object

#: a review longer than this many characters is refused (1 MB of text is not a review)
MAX_TEXT_CHARS = 100_000
#: requests of at most this many reviews run MXNet's operators on one thread (quicker for one
#: review on 2 cores: experiments/bench_serving.py measures both); larger ones use every core
SMALL_REQUEST_ROWS = 8
#: packages the model needs at load time, pinned to the versions that trained it
REQUIREMENTS = ("mxnet", "gluonnlp", "numpy", "scipy", "scikit-learn", "pandas", "pyarrow", "joblib", "mlflow")
PACKAGE_DIR = Path(__file__).resolve().parent


def pip_requirements() -> list[str]:
    out = []
    for name in REQUIREMENTS:
        try:
            out.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            out.append(name)
    return out


class XferModel(PythonModel):
    """pyfunc wrapper around :class:`xfer.bundle.Bundle`."""

    def load_context(self, context) -> None:
        from .bundle import load_bundle
        from .locate import resolve_bundle

        # a transfer child's bundle is a delta: its base comes from the MLflow store
        # (MLFLOW_TRACKING_URI) the model was logged to
        self.bundle = load_bundle(context.artifacts["bundle"], fetch=resolve_bundle)
        cfg = dict(getattr(context, "model_config", None) or {})
        self.max_text_chars = int(cfg.get("max_text_chars", MAX_TEXT_CHARS))
        self.batch_size = int(cfg.get("batch_size", 0)) or None  # 0: batches of about 32,768 tokens
        self.small_request_rows = int(cfg.get("small_request_rows", SMALL_REQUEST_ROWS))
        self.bundle.warm_up()

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Raw reviews in the training data's columns -> ``probability`` and ``label``. (The
        DataFrame type hint tells MLflow the input is a table: its own signature, logged with
        the model, still describes the columns; the checks are the bundle's own.)"""
        from mlflow.exceptions import MlflowException

        from .errors import XferError

        if not isinstance(model_input, pd.DataFrame):
            try:
                model_input = pd.DataFrame(model_input)
            except (TypeError, ValueError) as e:
                raise MlflowException.invalid_parameter_value(f"input: not a table ({e})") from None
        from .encode import operator_threads

        try:
            with operator_threads(1 if len(model_input) <= self.small_request_rows else None):
                return self.bundle.predict_frame(model_input.reset_index(drop=True), "input", self.batch_size,
                                                 self.max_text_chars)
        except XferError as e:
            raise MlflowException.invalid_parameter_value(str(e)) from None


def signature(bundle):
    """Input: one string column per raw column the bundle reads; output: probability + label."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", c) for c in bundle.input_columns]),
                          outputs=Schema([ColSpec("double", "probability"), ColSpec("string", "label")]))


def input_example(bundle, frame: pd.DataFrame | None = None, n: int = 2) -> pd.DataFrame:
    """``n`` rows of real input in the raw schema, from a model frame (``text`` + categorical)."""
    spec = bundle.inputs
    texts = list(frame["text"].iloc[:n]) if frame is not None and len(frame) else ["A fine stay.", "Awful."]
    texts = [t[:2000] if isinstance(t, str) else "" for t in texts]
    ex = {spec["text_columns"][0]: texts}
    for c in spec["text_columns"][1:]:
        ex[c] = [""] * len(texts)
    for c in spec.get("categorical", {}):
        ex[c] = list(frame[c].iloc[:n]) if frame is not None and c in frame else ["<missing>"] * len(texts)
    return pd.DataFrame(ex)


def model_kwargs(bundle, example: pd.DataFrame | None = None, max_text_chars: int = MAX_TEXT_CHARS,
                 config: dict | None = None) -> dict[str, Any]:
    """Arguments for ``mlflow.pyfunc.save_model``/``log_model`` for a saved bundle (``config``:
    model_config entries over the defaults)."""
    return {"python_model": str(PACKAGE_DIR / "_pyfunc_model.py"), "artifacts": {"bundle": str(bundle.path)},
            "code_paths": [str(PACKAGE_DIR)], "pip_requirements": pip_requirements(),
            "signature": signature(bundle), "input_example": input_example(bundle, example),
            "model_config": {"max_text_chars": int(max_text_chars), "batch_size": 0,
                             "small_request_rows": SMALL_REQUEST_ROWS, **(config or {})},
            "metadata": {"xfer_fingerprint": str(bundle.meta.get("fingerprint", "")),
                         "xfer_data": str(bundle.meta.get("data", "")),
                         "xfer_version": str(bundle.meta.get("xfer_version", ""))}}
