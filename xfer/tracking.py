"""The only module that talks to MLflow.

Training code receives a tracker object (``MlflowTracker`` or the in-memory
``NullTracker``) and never imports mlflow, so it runs without a tracking server.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import ConfigError, Terminated
from .locate import (DEFAULT_URI, MODEL_TAG, download_artifacts, resolve_bundle,  # noqa: F401 - re-exported
                     run_bundle_uri, tracking_uri)
from .schema import METHODS, SCHEDULES

log = logging.getLogger(__name__)

#: MLflow draws a progress bar for every artifact download (logging a model validates its input
#: example by loading it): the job's console shows its own progress instead
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
MAX_PARAM_LEN = 6000
#: a Dataset's split -> MLflow's dataset context
DATASET_CONTEXT = {"train": "training", "val": "validation", "test": "test"}
#: A view of the runs table every experiment gets, as MLflow's "Share" button saves one (an
#: experiment tag, opened with ``?viewStateShareKey=``): the comparison children grouped by their
#: ``method`` tag, each group one row with the average of test ROC-AUC and accuracy (xfer's
#: methods start folded; a click on a group lists its runs).
COMPARISON_VIEW = "xfer-methods"
#: a training checkpoint is logged into one of two artifact slots, alternating by epoch: a kill
#: while one slot is being copied leaves the other, complete, one (state.json is copied last)
CHECKPOINT_SLOTS = ("checkpoint/a", "checkpoint/b")
COMPARISON_VIEW_TAG = f"mlflow.sharedViewState.{COMPARISON_VIEW}"
_METHOD_LABELS = [*(f"transfer_{s}{a}" for a in ("", "_adapted", "_selftrained") for s in SCHEDULES if s != "scratch"),
                  *(m for m in METHODS if m != "transfer")]
COMPARISON_VIEW_STATE = {
    "searchFilter": "tags.method LIKE '%'",
    "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "method"}]},
    "groupsExpanded": {f"tag.method.{m}": False for m in _METHOD_LABELS},
    "selectedColumns": ["metrics.`test_roc_auc`", "metrics.`test_accuracy`", "tags.`data`", "tags.`n_train`",
                        "tags.`seed`"],
    "runsHiddenMode": "SHOW_ALL",
}


def flatten(cfg: Mapping, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested mapping -> ``{"model.embedding.size": 64, ...}``; lists become strings."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            nested = flatten(v, key, sep)
            out.update(nested if nested else {key: "{}"})
        else:
            out[key] = v
    return out


class NullTracker:
    """Keeps everything in memory; used by tests and when ``tracking.enabled=false``."""

    #: whether what is logged outlives the process (an MLflow store does)
    persistent = False

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: dict[str, list[tuple[int | None, float]]] = {}
        self.artifacts: list[tuple[str, str | None]] = []
        self.tags: dict[str, str] = {}
        self.status: str | None = None
        self.run_id: str | None = None
        #: parent and tags every run started by this tracker gets (set for sweep jobs)
        self.default_parent: str | None = None
        self.default_tags: dict[str, str] = {}
        self.resumed = False
        #: the URI of the pyfunc model logged by this run (``log_model``), if any
        self.model_uri: str | None = None

    @property
    def location(self) -> str:
        return "(tracking disabled)"

    #: the MLflow UI's view of the comparison (MlflowTracker)
    comparison_view: str | None = None

    def start(self, run_name: str, tags: Mapping[str, str] | None = None,
              parent_run_id: str | None = None) -> str:
        self.run_id = "local"
        self.tags.update({**self.default_tags, **(tags or {})})
        return self.run_id

    def resume(self, run_id: str, finished_ok: bool = False) -> str:
        """Continue an unfinished run (see ``resume=<run id>``; ``finished_ok``: or a finished one)."""
        raise ConfigError("resume: needs MLflow tracking (tracking.enabled=true)")

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for k, v in metrics.items():
            self.metrics.setdefault(k, []).append((step, float(v)))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.artifacts.append((str(path), artifact_path))

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.artifacts.append((str(path), artifact_path))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.artifacts.append((artifact_file, None))

    def log_datasets(self, ds) -> None:
        """The run's train/validation/test frames (a ``xfer.data.Dataset``) as its inputs."""
        self.datasets = [(ds.name, DATASET_CONTEXT[split]) for split in ds.splits()]

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)

    def tag_run(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Tag another run of the store (e.g. the best trial of a sweep)."""

    def get_tags(self, run_id: str) -> dict[str, str]:
        """Tags of another run of the store ({} if there is no such run)."""
        return {}

    def end(self, status: str = "FINISHED") -> None:
        self.status = status

    def find_runs(self, filter_string: str) -> list[dict]:
        return []

    def child(self) -> "NullTracker":
        """A fresh tracker for another run in the same store and experiment (it keeps the
        default tags, e.g. the sweep id, so runs nested under a sweep job carry them too)."""
        other = NullTracker()
        other.default_tags = dict(self.default_tags)
        return other

    def download_artifacts(self, run_id: str, path: str, dst: str | None = None) -> str:
        raise KeyError(run_id)

    def delete_artifacts(self, path: str) -> None:
        """Remove ``path`` (a file or directory) from the current run's artifacts."""
        self.artifacts = [a for a in self.artifacts if not (a[1] or "").startswith(path)]

    def run_status(self, run_id: str) -> str | None:
        """FINISHED / RUNNING / FAILED / KILLED of another run of the store (None if unknown)."""
        return None

    def kill_run(self, run_id: str, reason: str) -> None:
        """End another run of the store (one whose process died) KILLED, the reason in ``xfer.error``."""

    def has_checkpoint(self, run_id: str) -> bool:
        """Whether another run logged a complete training checkpoint (see jobs.train.log_checkpoint)."""
        return False

    def load_bundle(self, run_id: str):
        """The bundle of another run of the store (see ``run_bundle_uri``), loaded."""
        raise KeyError(run_id)

    def log_model(self, bundle, example=None, name: str = "model", config: dict | None = None) -> str | None:
        """Log a saved :class:`~xfer.bundle.Bundle` as an ``mlflow.pyfunc`` model of the current run
        (see xfer.serving; ``config``: model_config entries over the defaults)."""
        self.artifacts.append((str(bundle.path), name))
        return None


class MlflowTracker(NullTracker):
    """One MLflow run per job in ``experiment`` at ``uri``."""

    persistent = True

    def __init__(self, uri: str | None = None, experiment: str = "xfer",
                 artifact_location: str | None = None, probe: bool = True) -> None:
        super().__init__()
        import mlflow

        self._mlflow = mlflow
        self.uri = tracking_uri(uri)
        mlflow.set_tracking_uri(self.uri)
        try:
            with quiet_store_errors():
                self.client = mlflow.MlflowClient(self.uri)
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    exp_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
                else:
                    exp_id = exp.experiment_id
                if probe:
                    self._probe_write(exp_id)
                if COMPARISON_VIEW_TAG not in (exp.tags if exp is not None else {}):
                    self._set_experiment_tag(exp_id, COMPARISON_VIEW_TAG, json.dumps(COMPARISON_VIEW_STATE))
        except Exception as e:  # noqa: BLE001 - MLflow/SQLAlchemy/OS errors all mean "unusable store"
            raise store_error(self.uri, e) from None
        self.experiment_id = exp_id
        self.experiment = experiment

    def _probe_write(self, exp_id: str) -> None:
        """A write before any work, so a read-only or broken store fails here, not after training.
        A sweep's jobs skip it (``probe=False``): their parent made the same write before they
        started, and every job writing one shared row is a race on MLflow's select-then-insert."""
        self._set_experiment_tag(exp_id, "xfer.last_job_started", str(int(time.time())))

    def _set_experiment_tag(self, exp_id: str, key: str, value: str) -> None:
        """Set an experiment tag; losing an insert race to another process that set the same tag
        at the same moment (a unique-key violation: sqlite, PostgreSQL, or a server's 400 naming
        it) means the row now exists, and the update goes through on the next try."""
        for attempt in range(5):
            try:
                self.client.set_experiment_tag(exp_id, key, value)
                return
            except Exception as e:  # noqa: BLE001
                if not is_unique_violation(e) or attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))

    @property
    def location(self) -> str:
        return f"{self.uri} experiment={self.experiment} run_id={self.run_id}"

    @property
    def comparison_view(self) -> str:
        """The MLflow UI's address (after the server's root) of the runs table grouped by method."""
        return f"#/experiments/{self.experiment_id}/runs?viewStateShareKey={COMPARISON_VIEW}"

    @property
    def artifact_uri(self) -> str | None:
        return self.client.get_run(self.run_id).info.artifact_uri if self.run_id else None

    def log_datasets(self, ds) -> None:
        """Each split as an MLflow dataset input: name, digest of its rows, source file, context
        (training / validation / test), shown in the runs table's Dataset column."""
        from mlflow.data import from_pandas
        from mlflow.data.dataset_source_registry import get_registered_sources
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT
        from pandas.api.types import is_integer_dtype

        # MLflow registers its local-file source class twice and warns that a path is ambiguous
        local = next(c for c in get_registered_sources() if c._get_source_type() == "local")
        files = ds.info.get("files", {})
        inputs = []
        for split, frame in ds.splits().items():
            source = files.get("test" if split == "test" else "train") or files.get("all") or ds.name
            # integer columns (the label) logged as floats: MLflow's schema inference warns about ints
            ints = {c: "float64" for c in frame.columns if is_integer_dtype(frame[c])}
            data = from_pandas(frame.astype(ints), source=local(source), name=ds.name)
            inputs.append(DatasetInput(data._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT,
                                                                           DATASET_CONTEXT[split])]))
        self.client.log_inputs(self.run_id, datasets=inputs)

    def start(self, run_name: str, tags: Mapping[str, str] | None = None,
              parent_run_id: str | None = None) -> str:
        all_tags = {**source_tags(), **{k: str(v) for k, v in {**self.default_tags, **(tags or {})}.items()}}
        parent_run_id = parent_run_id or self.default_parent
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        try:
            with quiet_store_errors():
                run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        except Exception as e:  # noqa: BLE001
            raise store_error(self.uri, e) from None
        self.run_id = run.info.run_id
        return self.run_id

    def resume(self, run_id: str, finished_ok: bool = False) -> str:
        from mlflow.exceptions import MlflowException
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            raise ConfigError(f"resume: run {run_id} not found in {self.uri}") from None
        if run.info.status == "FINISHED" and not finished_ok:
            raise ConfigError(f"resume: run {run_id} already finished")
        self.client.update_run(run_id, status="RUNNING")
        self.run_id, self.resumed = run_id, True
        return run_id

    def get_tags(self, run_id: str) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_run(run_id).data.tags)
        except MlflowException:
            return {}

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        if self.resumed:  # params are immutable in MLflow; a resumed run has them already
            return
        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100], synchronous=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000], synchronous=True)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def tag_run(self, run_id: str, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def end(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status=status)

    def child(self) -> "MlflowTracker":
        other = object.__new__(MlflowTracker)
        NullTracker.__init__(other)
        other._mlflow, other.uri, other.client = self._mlflow, self.uri, self.client
        other.experiment_id, other.experiment = self.experiment_id, self.experiment
        other.default_tags = dict(self.default_tags)
        return other

    def download_artifacts(self, run_id: str, path: str, dst: str | None = None) -> str:
        """A run's artifact as a local path (in ``dst``, else in a directory MLflow never removes)."""
        return self.client.download_artifacts(run_id, path, dst_path=dst)

    def delete_artifacts(self, path: str) -> None:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(self.artifact_uri).delete_artifacts(path)

    def load_bundle(self, run_id: str):
        return resolve_bundle(run_id, self.uri)

    def run_status(self, run_id: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.status
        except MlflowException:
            return None

    def kill_run(self, run_id: str, reason: str) -> None:
        self.client.set_tag(run_id, "xfer.error", reason[:5000])
        self.client.set_terminated(run_id, status="KILLED")

    def has_checkpoint(self, run_id: str) -> bool:
        for slot in CHECKPOINT_SLOTS:
            try:
                if any(f.path.endswith("/state.json") for f in self.client.list_artifacts(run_id, slot)):
                    return True
            except Exception:  # noqa: BLE001 - a slot never written
                continue
        return False

    def log_model(self, bundle, example=None, name: str = "model", config: dict | None = None) -> str:
        """Log the bundle as a pyfunc model linked to this run; returns its ``runs:/`` URI."""
        from mlflow.models import Model

        from .serving import model_kwargs

        # the logged-model entity goes to the fluent API's experiment: make it this run's
        self._mlflow.set_experiment(experiment_id=self.experiment_id)
        info = Model.log(artifact_path=None, name=name, flavor=self._mlflow.pyfunc, run_id=self.run_id,
                         **model_kwargs(bundle, example, config=config))
        self.client.set_tag(self.run_id, MODEL_TAG, info.model_uri)
        self.model_uri = info.model_uri
        return f"runs:/{self.run_id}/{name}"

    def find_runs(self, filter_string: str) -> list[dict]:
        runs = self.client.search_runs([self.experiment_id], filter_string=filter_string,
                                       order_by=["attributes.start_time DESC"])
        return [{"run_id": r.info.run_id, "status": r.info.status, "tags": r.data.tags,
                 "metrics": r.data.metrics, "artifact_uri": r.info.artifact_uri} for r in runs]


def source_tags() -> dict[str, str]:
    """MLflow's own source tags (the runs table's Source column, the run page's git commit): the
    command that made the run and the commit of the code, when it runs from a git checkout."""
    from .provenance import command, git_commit

    tags = {"mlflow.source.name": command(), "mlflow.source.type": "LOCAL"}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def is_unique_violation(exc: BaseException) -> bool:
    """A write that lost an insert race (the row it tried to insert now exists)."""
    text = str(exc)
    return "UNIQUE constraint failed" in text or "duplicate key value violates unique constraint" in text


def store_error(uri: str, exc: BaseException):
    """An unusable tracking store as one line: ``tracking.uri <uri>: cannot use the MLflow store (<cause>)``."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy keeps the driver's own message in .orig
    lines = [line for line in str(cause).splitlines() if line.strip()] or [type(cause).__name__]
    first = re.sub(r"^\([\w.]+\)\s*", "", lines[0])  # "(sqlite3.OperationalError) attempt to ..."
    return ConfigError(f"tracking.uri {uri}: cannot use the MLflow store ({first[:200]})")


@contextmanager
def quiet_store_errors() -> Iterator[None]:
    """MLflow's sqlite layer logs a full traceback before re-raising; we report one line instead."""
    logger = logging.getLogger("mlflow.store.db.utils")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _param_value(v: Any) -> str:
    s = str(v)
    return s if len(s) <= MAX_PARAM_LEN else s[: MAX_PARAM_LEN - 3] + "..."


def make_tracker(cfg: Mapping | None, probe: bool = True) -> NullTracker:
    """``tracking`` config -> a tracker (``enabled: false`` gives the in-memory one); ``probe``:
    check with a write that the store is writable (see ``MlflowTracker._probe_write``)."""
    from .schema import section

    cfg = section("tracking", cfg)
    if not cfg["enabled"]:
        return NullTracker()
    return MlflowTracker(cfg["uri"], cfg["experiment"], cfg["artifact_location"], probe=probe)


@contextmanager
def tracked_run(tracker: NullTracker, run_name: str, tags: Mapping[str, str] | None = None,
                parent_run_id: str | None = None, resume_run_id: str | None = None) -> Iterator[NullTracker]:
    """Start a run (or continue ``resume_run_id``); end it FINISHED, or FAILED (then re-raise)
    if the body raises, or KILLED with the reason in ``xfer.error`` when the process is stopped
    (a signal, see ``xfer.errors.Terminated``, or Ctrl-C)."""
    if resume_run_id:
        tracker.resume(resume_run_id)
    else:
        tracker.start(run_name, tags, parent_run_id)
    try:
        yield tracker
    except (Terminated, KeyboardInterrupt) as e:
        end_killed(tracker, str(e) or "interrupted (Ctrl-C)")
        raise
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")


def end_killed(tracker: NullTracker, reason: str) -> None:
    """End the current run KILLED with the reason in ``xfer.error`` (best effort: the process
    is on its way out, and a store that cannot take it leaves the run to the sweep's clean-up)."""
    try:
        tracker.set_tags({"xfer.error": reason[:5000]})
        tracker.end("KILLED")
    except Exception as e:  # noqa: BLE001
        log.warning("could not mark run %s KILLED: %s", tracker.run_id, e)
