"""Fixtures. Tests that read the bundled IMDB/hotel files skip when they are missing, unless
XFER_REQUIRE_DATA=1 (CI sets it): then a missing file fails the test. Every test writes only
into its temporary directory: the working directory is a fresh one, and MLflow's default store
points there."""
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

from hypothesis import settings  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

# property tests keep no example database, and hypothesis's caches (it writes some while test
# modules are collected) go to a temporary directory removed at the end, not into the checkout
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="xfer-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
settings.register_profile("xfer", database=None)
settings.load_profile("xfer")


def pytest_unconfigure(config):
    shutil.rmtree(_HYPOTHESIS_HOME, ignore_errors=True)

from xfer.data import data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/helpers.py


def need_data(*relative: str) -> Path:
    """The data file, or skip (fail under XFER_REQUIRE_DATA=1) when it is not there."""
    for rel in relative:
        path = data_dir() / rel
        if not path.is_file():
            message = f"test data {path} not found: set XFER_DATA_DIR"
            if os.environ.get("XFER_REQUIRE_DATA") == "1":
                pytest.fail(message)
            pytest.skip(message)
    return data_dir() / relative[0]


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, tmp_path_factory, monkeypatch):
    """Nothing a test does lands in the checkout: cwd and MLflow's default store are temporary."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    scratch = tmp_path_factory.mktemp("scratch")  # temporary files (MLflow downloads...), in CLI children too
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))


@pytest.fixture(scope="session")
def imdb_slice() -> pd.DataFrame:
    """The first 600 IMDB training reviews (both classes: the file is sorted pos then neg)."""
    frame = pd.read_csv(need_data("imdb/train.csv.gz"))
    return pd.concat([frame.head(300), frame.tail(300)]).reset_index(drop=True)


@pytest.fixture()
def imdb_cfg():
    d = data_dir()
    need_data("imdb/train.csv.gz", "imdb/test.csv.gz")
    return {"name": "imdb", "files": {"train": str(d / "imdb/train.csv.gz"), "test": str(d / "imdb/test.csv.gz")},
            "text_column": "text", "label_column": "label", "positive": "pos", "negative": "neg",
            "id_column": ["label", "id"], "categorical": [], "split": {"policy": "official", "val_frac": 0.1},
            "limit": 200}


def _data_config(name: str) -> dict:
    from omegaconf import OmegaConf

    from xfer.config import register_configs

    register_configs()
    return OmegaConf.to_container(OmegaConf.load(ROOT / f"xfer/conf/data/{name}.yaml"), resolve=True)


@pytest.fixture()
def hotel_cfg():
    need_data("hotel/hotel_reviews_sample.csv.gz")
    return _data_config("hotel")


@pytest.fixture()
def delhi_cfg():
    need_data("hotel_delhi/delhi_hotel_reviews.csv.gz")
    return _data_config("hotel_delhi")
