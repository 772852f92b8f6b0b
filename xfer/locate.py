"""Where bundles live in an MLflow store, and fetching them: a bundle or pyfunc model directory,
a run id, ``runs:/`` or ``models:/`` URIs. Used by the tracker, the CLIs and the pyfunc model
(whose transfer bundles are deltas against a base run in the same store)."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from functools import partial
from pathlib import Path
from typing import Mapping

from .errors import BundleError, XferError

DEFAULT_URI = "sqlite:///mlflow.db"
#: the tag naming a run's logged pyfunc model (which holds the run's bundle)
MODEL_TAG = "xfer.model_uri"


def tracking_uri(cfg_uri: str | None = None) -> str:
    return cfg_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def download_artifacts(artifact_uri: str, uri: str | None = None, dst: str | None = None) -> str:
    """Fetch ``runs:/<id>/<path>`` or ``models:/<name>/<version>`` to a local directory (``dst``, or
    a new temporary one)."""
    import mlflow
    mlflow.set_tracking_uri(tracking_uri(uri))
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=dst)
    except Exception as e:  # noqa: BLE001 - MLflow raises several types for a missing run
        raise XferError(f"{artifact_uri}: cannot fetch from MLflow ({' '.join(str(e).split())[:200]})") from None


def resolve_bundle(ref: str, tracking_uri: str | None = None, ctx=None):
    """A bundle from a bundle or pyfunc model directory, a bare MLflow run id,
    ``runs:/<id>/bundle``, ``runs:/<id>/model`` or ``models:/<name>@<alias>`` / ``models:/<name>/<version>``."""
    from .bundle import bundle_dir_of, load_bundle

    fetch = partial(resolve_bundle, tracking_uri=tracking_uri, ctx=ctx)  # a delta bundle's base
    p = Path(ref)
    if p.exists():
        return load_bundle(bundle_dir_of(p), ctx, fetch)
    m = re.fullmatch(r"(?:runs:/)?([0-9a-f]{32})(?:/(bundle|model))?/?", ref)
    if m:  # a run's bundle: inside its logged pyfunc model, or its own artifact
        ref = _run_bundle_uri(m.group(1), tracking_uri)
    elif not ref.startswith(("runs:/", "models:/")):
        raise BundleError(f"{ref}: no such bundle directory, model directory or MLflow run/model URI")
    return load_downloaded(ref, tracking_uri, ctx, fetch)


def load_downloaded(uri: str, tracking_uri: str | None = None, ctx=None, fetch=None):
    """The bundle at an MLflow URI, downloaded into a temporary directory that is removed when the
    bundle is garbage-collected or the process ends (MLflow's own downloads are never removed)."""
    from .bundle import bundle_dir_of, load_bundle

    tmp = tempfile.mkdtemp(prefix="xfer-bundle-")
    try:
        bundle = load_bundle(bundle_dir_of(download_artifacts(uri, tracking_uri, tmp)), ctx, fetch)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    weakref.finalize(bundle, shutil.rmtree, tmp, True)
    return bundle


def run_bundle_uri(run_id: str, tags: Mapping[str, str]) -> str:
    """Where a run keeps its bundle: inside its logged pyfunc model (tag ``xfer.model_uri``), or
    as its ``bundle`` artifact (runs logged with ``tracking.log_model=false``)."""
    return tags.get(MODEL_TAG) or f"runs:/{run_id}/bundle"


def _run_bundle_uri(run_id: str, uri: str | None) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        tags = mlflow.MlflowClient(tracking_uri(uri)).get_run(run_id).data.tags
    except MlflowException:
        raise BundleError(f"{run_id}: no such MLflow run in {tracking_uri(uri)}") from None
    return run_bundle_uri(run_id, tags)
