"""Register the best model of a run, a sweep or an experiment in the MLflow Model Registry.

CLI::

    python -m xfer.registry --name imdb-sentiment                 # best run of experiment "xfer"
    python -m xfer.registry --name hotel --sweep-id 2026-11-25/...  # best job of a sweep
    python -m xfer.registry --name hotel --parent <run id>         # best child of a parent run

or from a job: ``python -m xfer.run +experiment=imdb_base register.name=imdb-sentiment``
(and at the end of a ``-m`` sweep, the best of its jobs).

"Best" is the highest ``--metric`` (default ``test_roc_auc``) among FINISHED runs that
logged a pyfunc model. The new version carries the metrics in its description and
tags; the alias (default ``champion``) moves to it only if it is at least as good as
the version holding the alias now (``--force-alias`` moves it anyway).
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

from .errors import ConfigError, XferError, cli_main
from .tracking import MODEL_TAG

log = logging.getLogger(__name__)

NOTE_METRICS = ("test_roc_auc", "test_accuracy", "test_f1", "test_log_loss", "train_seconds")


@dataclass
class Registered:
    name: str
    version: str
    run_id: str
    metric: str
    value: float
    alias: str | None
    alias_moved: bool

    def __str__(self) -> str:
        alias = ""
        if self.alias:
            alias = (f"; alias {self.alias} -> version {self.version}" if self.alias_moved
                     else f"; alias {self.alias} stays on a better version")
        return (f"registered {self.name} version {self.version} from run {self.run_id} "
                f"({self.metric} {self.value:.4f}){alias}")


def _client(tracking_uri: str | None):
    import mlflow

    from .tracking import tracking_uri as resolve

    uri = resolve(tracking_uri)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


def model_runs(client, experiment: str, *, run_id: str | None = None, parent: str | None = None,
               sweep_id: str | None = None, filter_string: str | None = None) -> list:
    """FINISHED runs with a logged pyfunc model, narrowed to one run, a parent's children
    (the parent itself included) or a sweep."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ConfigError(f"experiment {experiment!r}: not found in the tracking store")
    base = [f"tags.`{MODEL_TAG}` != ''", "attributes.status = 'FINISHED'"]
    if filter_string:
        base.append(filter_string)
    queries = []
    if run_id:
        return [r for r in [client.get_run(run_id)] if r.data.tags.get(MODEL_TAG) and r.info.status == "FINISHED"]
    if parent:
        queries = [base + [f"tags.`mlflow.parentRunId` = '{parent}'"], base + [f"attributes.run_id = '{parent}'"]]
    elif sweep_id:
        queries = [base + [f"tags.`xfer.sweep_id` = '{sweep_id}'"]]
    else:
        queries = [base]
    runs = {}
    for q in queries:
        for r in client.search_runs([exp.experiment_id], " and ".join(q), max_results=50000):
            runs[r.info.run_id] = r
    return list(runs.values())


def best_run(runs: Sequence, metric: str):
    scored = [r for r in runs if metric in r.data.metrics]
    if not scored:
        raise XferError(f"no finished run with a model and metric {metric!r} to register")
    return max(scored, key=lambda r: (r.data.metrics[metric], r.info.start_time))


def register_run(client, run, name: str, metric: str = "test_roc_auc", alias: str | None = "champion",
                 force_alias: bool = False) -> Registered:
    """Register ``runs:/<id>/model`` as a new version of ``name``; move ``alias`` if it is better."""
    import mlflow
    from mlflow.exceptions import MlflowException

    value = float(run.data.metrics[metric])
    note = ", ".join(f"{k} {run.data.metrics[k]:.4f}" for k in NOTE_METRICS if k in run.data.metrics)
    mv = mlflow.register_model(run.data.tags[MODEL_TAG], name, await_registration_for=60,
                               tags={f"metric.{metric}": str(value), "xfer.run_id": run.info.run_id})
    client.update_model_version(name, mv.version, description=(
        f"From run {run.info.run_id} ({run.info.run_name}) of experiment {run.info.experiment_id}: {note}."))
    moved = False
    if alias:
        try:
            holder = client.get_model_version_by_alias(name, alias)
            current = float(holder.tags.get(f"metric.{metric}", "-inf"))
        except MlflowException:
            current = float("-inf")
        if force_alias or value >= current:
            client.set_registered_model_alias(name, alias, mv.version)
            moved = True
    return Registered(name, str(mv.version), run.info.run_id, metric, value, alias, moved)


def register_best(name: str, tracking_uri: str | None = None, experiment: str = "xfer",
                  metric: str = "test_roc_auc", alias: str | None = "champion", force_alias: bool = False,
                  **narrow) -> Registered:
    client = _client(tracking_uri)
    run = best_run(model_runs(client, experiment, **narrow), metric)
    return register_run(client, run, name, metric, alias, force_alias)


def register_from_config(reg_cfg: Mapping | None, tracking_cfg: Mapping | None, task: str | None = None,
                         **narrow) -> Registered | None:
    """The ``register`` config block (``name`` unset: do nothing). ``task`` keeps to runs of that
    task (a transfer sweep also holds the base it trained, scored on the base data)."""
    from .schema import section

    reg_cfg, tracking_cfg = section("register", reg_cfg), section("tracking", tracking_cfg)
    if not reg_cfg["name"] or not tracking_cfg["enabled"]:
        return None
    if task:
        narrow["filter_string"] = f"tags.`xfer.task` = '{task}'"
    result = register_best(reg_cfg["name"], tracking_cfg["uri"], tracking_cfg["experiment"], reg_cfg["metric"],
                           reg_cfg["alias"] or None, reg_cfg["force_alias"], **narrow)
    log.info("%s", result)
    return result


@cli_main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xfer.registry", description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="registered model name")
    ap.add_argument("--experiment", default="xfer")
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--run", dest="run_id", help="register this run")
    group.add_argument("--parent", help="best child of this parent run (a transfer comparison or sweep)")
    group.add_argument("--sweep-id", help="best job of this sweep (its xfer.sweep_id tag)")
    ap.add_argument("--filter", dest="filter_string", help="extra MLflow search filter")
    ap.add_argument("--metric", default="test_roc_auc")
    ap.add_argument("--alias", default="champion", help="alias to move to the new version ('' for none)")
    ap.add_argument("--force-alias", action="store_true", help="move the alias even if the new version is worse")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    result = register_best(args.name, args.tracking_uri, args.experiment, args.metric, args.alias or None,
                           args.force_alias, run_id=args.run_id, parent=args.parent, sweep_id=args.sweep_id,
                           filter_string=args.filter_string)
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
