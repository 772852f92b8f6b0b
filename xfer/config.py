"""Config composition: the packaged Hydra configs, the nodes generated from the schema and the
OmegaConf resolvers they use.

``xfer/conf`` holds choices (groups: data, transforms, model, optimizer, schedule, head,
stage, experiment...). Every key that no group sets comes from ``xfer.schema`` through two
generated nodes, so Hydra knows every key (``trainer.max_epochs=2`` overrides without a ``+``)
and the schema stays the only place that holds a default:

- ``xfer_stage_base``: ``seed``, ``trainer`` and ``self_train``, included by every ``stage/*.yaml``;
- ``xfer_job_base``: the job-level sections (task, resume, tracking, register, sweep, transfer);
- ``xfer_data_base``: every optional key of a data config, under each stage's ``data``, so a
  user's own data config needs only its required keys and still takes ``data.limit=...``.
"""
from __future__ import annotations

from omegaconf import OmegaConf

from . import schema


def job_defaults() -> dict:
    """The job-level keys that no config group sets, with the schema's defaults."""
    return {"task": "train", "resume": None, "tracking": schema.section("tracking", {}),
            "register": schema.section("register", {}), "sweep": schema.section("sweep", {}), "transfer": schema.section("transfer", {}), "base": None}


def data_defaults() -> dict:
    """The data keys that have a default (the required ones come from the chosen data config)."""
    import dataclasses

    full = schema.section("data", {"name": "x", "files": {}, "text_column": "x"})
    return {f.name: full[f.name] for f in dataclasses.fields(schema.Data)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def stage_defaults() -> dict:
    return {"seed": 0, "trainer": schema.section("trainer", {}), "self_train": schema.section("self_train", {})}


def register_configs() -> None:
    """Register the resolvers and the schema-generated nodes (idempotent)."""
    from hydra.core.config_store import ConfigStore

    from .data import data_dir

    if not OmegaConf.has_resolver("xfer_data_dir"):
        OmegaConf.register_new_resolver("xfer_data_dir", lambda: str(data_dir()))
    cs = ConfigStore.instance()
    cs.store(name="xfer_job_base", node=job_defaults())
    cs.store(name="xfer_stage_base", node=stage_defaults())
    cs.store(name="xfer_data_base", node=data_defaults())




def compose_config(overrides: list[str] | None = None, config_name: str = "config") -> dict:
    """The packaged Hydra config composed with ``overrides``, resolved to plain dicts (not yet
    validated: ``xfer.schema.validate`` does that)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module="xfer.conf", version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides or []))
    return OmegaConf.to_container(cfg, resolve=True)
