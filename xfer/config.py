"""OmegaConf resolvers used by the packaged configs."""
from __future__ import annotations

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """``${xfer_data_dir:}`` -> $XFER_DATA_DIR, or ../shared/data beside the project."""
    from .data import data_dir

    if not OmegaConf.has_resolver("xfer_data_dir"):
        OmegaConf.register_new_resolver("xfer_data_dir", lambda: str(data_dir()))
