"""The config schema: every bad value is one line naming the key, before anything runs; the
schema's defaults are the default groups' values; stages compose with their own fingerprints."""
import pytest
import yaml

from xfer.config import compose_config
from xfer.errors import ConfigError
from xfer.schema import describe, section, validate

from conftest import ROOT

QUICK = ["+experiment=imdb_base", "model=pool", "data.limit=300", "trainer.max_epochs=1"]


def with_experiment(overrides: list[str]) -> list[str]:
    """The overrides on the quick imdb_base job, or as they are when they name an experiment."""
    return list(overrides) if overrides[0].startswith("+experiment=") else [*QUICK, *overrides]

#: override -> the one-line error (the same table runs through the CLI in test_cli.py)
BAD = [
    (["trainer.max_epochs=abc"], "trainer.max_epochs: 'abc' is not an integer >= 1"),
    (["trainer.max_epochs=2.5"], "trainer.max_epochs: 2.5 is not an integer >= 1"),
    (["trainer.batch_size=-5"], "trainer.batch_size: -5 is not an integer >= 1"),
    (["trainer.batch_size=0"], "trainer.batch_size: 0 is not an integer >= 1"),
    (["model.encoder.type=transformer"], "model.encoder.type: 'transformer' is not one of pool, cnn, bilstm, lstm, gru, bigru"),
    (["optimizer.name=adagrad"], "optimizer.name: 'adagrad' is not one of adam, adamw, sgd"),
    (["schedule.name=sometimes"], "schedule.name: 'sometimes' is not one of frozen, full, scratch, gradual, discriminative"),
    (["+experiment=hotel_transfer", "transfer.methods=[transfer,svm]"],
     "transfer.methods[1]: 'svm' is not one of transfer, scratch, scratch_pretrained, catboost_embeddings, tfidf_lr"),
    (["heads.catboost.layer=attention"], "heads.catboost.layer: 'attention' is not one of embedding, encoder, hidden, output"),
    (["data.split.val_frac=1.5"], "data.split.val_frac: 1.5 is not a number > 0 and < 1"),
    (["data.split.val_frac=0"], "data.split.val_frac: 0.0 is not a number > 0 and < 1"),
    (["optimizer.lr=-0.01"], "optimizer.lr: -0.01 is not a number > 0"),
    (["model.hidden.dropout=1.0"], "model.hidden.dropout: 1.0 is not a number >= 0 and < 1"),
    (["trainer.ctx=tpu"], "trainer.ctx: 'tpu' is not of the form cpu|gpu(:\\d+)?"),
    (["trainer.truncate=middle"], "trainer.truncate: 'middle' is not one of head, tail"),
    (["trainer.progress=maybe"], "trainer.progress: 'maybe' is not true or false"),
    (["data.n_train=0"], "data.n_train: 0 is not an integer >= 1"),
    (["+trainer.max_epocs=1"], "trainer.max_epocs: unknown key (allowed: max_epochs, batch_size"),
    (["data.label_rule=Rating is high", "data.label_column=null"],
     "data.label_rule: 'Rating is high' is not a rule like 'Rating >= 7'"),
    (["data.positive=null"], "data.positive: missing required key"),
    (["~data.files.train"], "data.files.train: missing required key (needed by split.policy=official)"),
    (["+experiment=hotel_transfer", "model.encoder.type=cnn", "model.encoder.filters=64"],
     "model.encoder.filters: differs from base.model.encoder.filters"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_value_is_one_line_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(compose_config(with_experiment(overrides)))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_user_data_config_without_a_required_key(tmp_path):
    cfg = compose_config(QUICK)
    cfg["data"] = {"name": "mine", "files": {"all": "x.csv"}, "label_column": "y", "positive": "1"}
    with pytest.raises(ConfigError, match=r"^data.text_column: missing required key$"):
        validate(cfg)


def test_n_train_larger_than_the_training_split(delhi_cfg):
    from xfer.data import load_dataset

    with pytest.raises(ConfigError, match=r"data.n_train: 5000 is not <= the 3079 reviews of the training split"):
        load_dataset({**delhi_cfg, "n_train": 5000})


def test_good_configs_validate_with_every_key_typed():
    for exp in ("imdb_base", "hotel_transfer", "hotel_delhi_transfer", "learning_curve"):
        cfg = validate(compose_config([f"+experiment={exp}"]))
        assert isinstance(cfg["trainer"]["max_epochs"], int) and isinstance(cfg["optimizer"]["lr"], float)
        assert validate(cfg) == cfg  # idempotent: jobs validate what they are given again


def test_each_transfer_experiment_has_the_schedule_its_study_chose():
    """hotel_delhi_transfer trains with `full` (ahead of gradual there), hotel_transfer with `gradual`
    (level on the sample); a command-line schedule still wins."""
    schedule = lambda *o: validate(compose_config(list(o)))["schedule"]["name"]  # noqa: E731
    assert schedule("+experiment=hotel_delhi_transfer") == "full"
    assert schedule("+experiment=hotel_transfer") == "gradual"
    assert schedule("+experiment=hotel_delhi_transfer", "schedule=gradual") == "gradual"


def test_hotel_delhi_self_trains_on_its_target_by_default_and_the_search_does_not():
    """hotel_delhi_transfer (and learning_curve) pseudo-label the unlabelled training pool; the
    sample has none (hotel_transfer: off); the transfer search tunes the transfer alone."""
    on = lambda *o: validate(compose_config(list(o)))["transfer"]["self_train"]  # noqa: E731
    assert on("+experiment=hotel_delhi_transfer") and on("+experiment=learning_curve")
    assert not on("+experiment=hotel_transfer") and not on("+experiment=hotel_delhi_transfer", "transfer.self_train=false")
    search = yaml.safe_load((ROOT / "xfer" / "conf" / "hparams_search" / "transfer_optuna.yaml").read_text())
    assert search["hydra"]["sweeper"]["params"]["transfer.self_train"] is False


def test_hotel_delhi_balances_its_pseudo_labels_by_filling():
    """hotel_delhi_transfer (and learning_curve) fill the class the teacher under-represents (the
    fill study's winner); the schema's default and hotel_transfer leave the pseudo-labels as given."""
    how = lambda *o: (lambda t: (t["self_train_balance"], t["self_train_balance_by"]))(  # noqa: E731
        validate(compose_config(list(o)))["transfer"])
    assert how("+experiment=hotel_delhi_transfer") == how("+experiment=learning_curve") == (True, "fill")
    assert how("+experiment=hotel_transfer") == (False, "cut")
    assert how("+experiment=hotel_delhi_transfer", "transfer.self_train_balance=false")[0] is False


def test_schema_defaults_are_the_default_groups_values():
    """One place holds a default: the schema's equal the options config.yaml picks by default."""
    conf = ROOT / "xfer" / "conf"
    load = lambda rel: yaml.safe_load((conf / rel).read_text())  # noqa: E731
    assert section("model", {}) == section("model", load("model/pool.yaml"))
    assert section("optimizer", {"name": "adam"}) == section("optimizer", load("optimizer/adam.yaml"))
    assert section("transforms", {}) == section("transforms", load("transforms/default.yaml"))
    assert section("heads", {}) == section("heads", {"catboost": load("head/catboost.yaml"),
                                                      "tfidf_lr": load("head/tfidf_lr.yaml")})
    for group in ("model", "optimizer", "schedule", "transforms"):
        for f in (conf / group).glob("*.yaml"):
            section(group, load(f"{group}/{f.name}"))  # every packaged option is valid


def test_every_key_has_a_type_and_a_help_line():
    rows = describe()
    assert len(rows) > 80
    for key, typ, default, help_ in rows:
        assert typ and help_, key


def test_the_base_is_a_stage_of_its_own():
    cfg = validate(compose_config(["+experiment=hotel_transfer", "optimizer.lr=0.01", "base.trainer.max_epochs=2"]))
    assert cfg["optimizer"]["lr"] == 0.01 and cfg["base"]["optimizer"]["lr"] == 0.002
    assert cfg["base"]["trainer"]["max_epochs"] == 2 and cfg["trainer"]["max_epochs"] == 8
    assert cfg["base"]["data"]["name"] == "imdb" and cfg["data"]["name"] == "hotel"
    assert cfg["base"]["model"]["name"] == cfg["model"]["name"] == "cnn_ngrams"
    other = validate(compose_config(["+experiment=hotel_transfer", "model@base.model=cnn", "model=cnn"]))
    assert other["base"]["model"]["ngrams"] is None


def test_generic_csv_data_config(tmp_path):
    csv = tmp_path / "reviews.csv"
    csv.write_text("review,stars\n" + "".join(f"great stay number {i},5\nawful room {i},1\n" for i in range(30)))
    cfg = validate(compose_config([*QUICK, "data=csv", f"data.files.all={csv}", "data.text_column=review",
                                   "data.label_rule='stars >= 4'"]))
    from xfer.data import load_dataset

    ds = load_dataset(cfg["data"], seed=0)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 60 and set(ds.train["label"]) == {0, 1}
    with pytest.raises(ConfigError, match=r"^data.files.all: missing required key"):
        validate(compose_config([*QUICK, "data=csv", "data.text_column=review", "data.label_rule='stars >= 4'"]))
