import os
import sys
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

from xfer.data import data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def pytest_configure(config):
    if not (data_dir() / "imdb" / "train.csv.gz").is_file():
        raise pytest.UsageError(f"test data not found under {data_dir()}: set XFER_DATA_DIR")


@pytest.fixture(scope="session")
def imdb_slice() -> pd.DataFrame:
    """The first 600 IMDB training reviews (both classes: the file is sorted pos then neg)."""
    frame = pd.read_csv(data_dir() / "imdb" / "train.csv.gz")
    return pd.concat([frame.head(300), frame.tail(300)]).reset_index(drop=True)


@pytest.fixture()
def imdb_cfg():
    d = data_dir()
    return {"name": "imdb", "files": {"train": str(d / "imdb/train.csv.gz"), "test": str(d / "imdb/test.csv.gz")},
            "text_column": "text", "label_column": "label", "positive": "pos", "negative": "neg",
            "id_column": ["label", "id"], "categorical": [], "split": {"policy": "official", "val_frac": 0.1},
            "limit": 200}


@pytest.fixture()
def hotel_cfg():
    from omegaconf import OmegaConf

    from xfer.config import register_configs

    register_configs()
    cfg = OmegaConf.load(ROOT / "xfer/conf/data/hotel.yaml")
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture()
def delhi_cfg():
    from omegaconf import OmegaConf

    from xfer.config import register_configs

    register_configs()
    return OmegaConf.to_container(OmegaConf.load(ROOT / "xfer/conf/data/hotel_delhi.yaml"), resolve=True)
