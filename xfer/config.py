"""OmegaConf resolvers used by the packaged configs."""
from __future__ import annotations

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """``${xfer_data_dir:}`` -> $XFER_DATA_DIR, or ../shared/data beside the project."""
    from .data import data_dir

    if not OmegaConf.has_resolver("xfer_data_dir"):
        OmegaConf.register_new_resolver("xfer_data_dir", lambda: str(data_dir()))


def compose_config(overrides: list[str] | None = None, config_name: str = "config") -> dict:
    """The packaged Hydra config composed with ``overrides``, resolved to plain dicts."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_module(config_module="xfer.conf", version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides or []))
    return OmegaConf.to_container(cfg, resolve=True)
