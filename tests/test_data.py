import io
import re
import tarfile

import pandas as pd
import pytest

from xfer.data import download_imdb, load_dataset, load_frame, parse_label_rule
from xfer.errors import ConfigError, DataError


def test_imdb_official_split_with_limit_is_seeded(imdb_cfg):
    a = load_dataset(imdb_cfg, seed=0)
    b = load_dataset(imdb_cfg, seed=0)
    c = load_dataset(imdb_cfg, seed=1)
    assert len(a.train) == len(a.val) == len(a.test) == 200
    assert list(a.train.columns) == ["id", "text", "label"]
    assert a.train["id"].tolist() == b.train["id"].tolist()
    assert a.train["id"].tolist() != c.train["id"].tolist()
    assert 0.4 < a.train["label"].mean() < 0.6
    assert set(a.train["id"]).isdisjoint(set(a.val["id"]))
    assert len(a.checksum) == 64


def test_hotel_sample_repairs_shifted_row_and_normalises_browsers(hotel_cfg):
    frame = load_frame(hotel_cfg["files"]["all"], hotel_cfg)
    assert len(frame) == 499 and frame.attrs["n_repaired"] == 1
    row = frame.loc[frame["id"] == "id10425"].iloc[0]
    assert "the lobby reminds me of an old country inn" in row["text"]
    assert row["Browser_Used"] == "Internet Explorer" and row["Device_Used"] == "<missing>"
    assert frame["Browser_Used"].str.len().max() < 40
    assert set(frame["Browser_Used"]) == {"Firefox", "Edge", "Mozilla", "Internet Explorer", "Chrome",
                                          "Opera", "Safari"}
    assert frame["label"].sum() == 330


def test_hotel_stratified_splits(hotel_cfg):
    ds = load_dataset(hotel_cfg, seed=0)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 499
    assert abs(len(ds.test) - 100) <= 1
    assert ds.categorical == ["Browser_Used", "Device_Used"]
    for split in (ds.train, ds.val, ds.test):
        assert abs(split["label"].mean() - 330 / 499) < 0.05


def test_hotel_delhi_label_rule_and_n_train(delhi_cfg):
    frame = load_frame(delhi_cfg["files"]["all"], delhi_cfg)
    raw = pd.read_csv(delhi_cfg["files"]["all"])
    assert (frame["label"].to_numpy() == (raw["Rating"] >= 7).to_numpy()).all()
    ds = load_dataset({**delhi_cfg, "n_train": 100}, seed=0)
    assert len(ds.train) == 100
    full = load_dataset(delhi_cfg, seed=0)
    assert ds.test["id"].tolist() == full.test["id"].tolist()  # same held-out test set


def test_parse_label_rule():
    assert parse_label_rule("Rating >= 7") == ("Rating", ">=", 7.0)
    with pytest.raises(ConfigError, match="label_rule"):
        parse_label_rule("Rating is good")


# ---------------------------------------------------------------- bad input
CFG = {"name": "t", "text_column": "text", "label_column": "label", "positive": "pos", "negative": "neg"}


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("content,pattern", [
    (None, "file not found"),
    (b"", "file is empty"),
    ("text,label\n", "header but no rows"),
    ("review,label\nok,pos\n", "missing column 'text'"),
    ("text,label\ngood,pos\nbad,maybe\n", r"column 'label' row 2: value 'maybe' is not one of"),
    ("text,label\n,pos\n,neg\n", "has no text in any row"),
    ("text,label\ngood,pos\nbad,neg,extra\n", "malformed CSV: Expected 2 fields in line 3, saw 3"),
    (b"text,label\ngood,pos\nbad \xff\xfe text,neg\n", "undecodable bytes at line 3"),
])
def test_bad_csv_gives_one_line_error_naming_file(tmp_path, content, pattern):
    path = tmp_path / "bad.csv"
    if content is not None:
        _write(path, content)
    with pytest.raises(DataError) as exc:
        load_frame(path, CFG)
    msg = _one_line(exc)
    assert str(path) in msg
    assert re.search(pattern, msg), msg


def test_missing_text_policy_error_names_row(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\ngood,pos\n,neg\n")
    assert load_frame(path, CFG)["text"].isna().sum() == 1  # impute: NullImputer fills it later
    with pytest.raises(DataError, match="row 2: text is missing"):
        load_frame(path, {**CFG, "missing_text": "error"})


def test_non_numeric_rule_column(tmp_path):
    path = _write(tmp_path / "d.csv", "text,Rating\ngood,9\nbad,great\n")
    with pytest.raises(DataError, match=r"column 'Rating' row 2: value 'great' is not a number"):
        load_frame(path, {"text_column": "text", "label_rule": "Rating >= 7"})


def test_gzip_garbage(tmp_path):
    path = _write(tmp_path / "d.csv.gz", b"\x1f\x8b\x08\x00not really gzip")
    with pytest.raises(DataError) as exc:
        load_frame(path, CFG)
    assert str(path) in _one_line(exc)


# ---------------------------------------------------------------- download
def _tarball(path, reviews):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in reviews.items():
            data = text.encode()
            info = tarfile.TarInfo(f"aclImdb/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_download_imdb_from_local_tarball(tmp_path):
    archive = tmp_path / "aclImdb_v1.tar.gz"
    _tarball(archive, {"train/pos/3_9.txt": "Great, film!<br />Loved it", "train/neg/1_2.txt": "Awful \"plot\"",
                       "test/pos/0_10.txt": "Superb", "test/neg/5_1.txt": "Bad\nreally",
                       "train/unsup/7_0.txt": "No label", "README": "ignored"})
    dest = tmp_path / "data"
    paths = download_imdb(dest, url=archive.as_uri())
    train = pd.read_csv(paths["train"])
    assert train.to_dict("records") == [
        {"id": 3, "rating": 9, "label": "pos", "text": "Great, film!<br />Loved it"},
        {"id": 1, "rating": 2, "label": "neg", "text": 'Awful "plot"'}]
    assert pd.read_csv(paths["test"])["text"].tolist() == ["Superb", "Bad\nreally"]
    assert pd.read_csv(paths["unsup"])["label"].tolist() == ["unsup"]
    # the converted files are readable by the imdb data config
    cfg = {"name": "imdb", "files": {"train": str(paths["train"]), "test": str(paths["test"])},
           "text_column": "text", "label_column": "label", "positive": "pos", "negative": "neg",
           "id_column": "id"}
    assert load_frame(paths["train"], cfg)["label"].tolist() == [1, 0]
    # cached: a second call does not fetch (the archive is gone) and leaves the files alone
    archive.unlink()
    assert download_imdb(dest, url=archive.as_uri()) == paths


def test_download_failure_leaves_nothing(tmp_path):
    bad = _write(tmp_path / "broken.tar.gz", b"not a tarball")
    with pytest.raises(DataError, match="not a readable aclImdb tarball"):
        download_imdb(tmp_path / "out", url=bad.as_uri())
    assert not (tmp_path / "out").exists()  # neither a file nor the directories made for them
    with pytest.raises(DataError, match="download failed"):
        download_imdb(tmp_path / "out", url=(tmp_path / "missing.tar.gz").as_uri())
    assert not (tmp_path / "out").exists()
    (tmp_path / "kept").mkdir()  # a directory that was there before stays
    with pytest.raises(DataError, match="download failed"):
        download_imdb(tmp_path / "kept", url=(tmp_path / "missing.tar.gz").as_uri())
    assert list((tmp_path / "kept").iterdir()) == []


def test_an_atomic_directory_is_complete_or_absent_with_the_parents_made_for_it(tmp_path):
    from xfer.data import atomic_dir

    target = tmp_path / "a" / "b" / "bundle"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("failed while writing")
    assert not (tmp_path / "a").exists()
    with atomic_dir(target) as tmp:
        (tmp / "whole.bin").write_bytes(b"x")
    assert [f.name for f in target.iterdir()] == ["whole.bin"]
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:  # a failed rewrite keeps the old one
        raise RuntimeError("failed again")
    assert [f.name for f in tmp_path.joinpath("a", "b").iterdir()] == ["bundle"]


def test_a_repaired_file_is_reported_once_per_process_not_once_per_split(caplog):
    import logging

    from conftest import need_data
    from xfer import data as xdata
    from xfer.config import compose_config
    from xfer.schema import validate

    need_data("hotel/hotel_reviews_sample.csv.gz")
    cfg = validate(compose_config(["+experiment=hotel_transfer"]))["data"]
    xdata._REPAIRS_REPORTED.clear()
    with caplog.at_level(logging.WARNING, logger="xfer.data"):
        for seed in range(3):  # a 3-split job loads the file three times
            xdata.load_dataset(cfg, seed=seed)
    assert sum("whose text spilled" in r.getMessage() for r in caplog.records) == 1
