"""Self-training (``self_train``): a teacher's confident predictions on unlabelled reviews join
the training split, and the network trains again on both."""
import numpy as np
import pandas as pd
import pytest

from helpers import QUICK, list_runs, run_cli
from xfer.config import compose_config
from xfer.errors import ConfigError
from xfer.jobs import run_task
from xfer.jobs.train import base_fingerprint
from xfer.schema import validate
from xfer.selftrain import pseudo_labelled, withheld_agreement
from xfer.tracking import make_tracker


def test_pseudo_labels_keep_the_confident_reviews_with_the_teachers_decision():
    texts = ["a", "b", "c", "d", "e"]
    p = np.array([0.95, 0.5, 0.02, 0.89, 0.91])
    out = pseudo_labelled(texts, p, threshold=0.9)
    assert out["text"].tolist() == ["a", "c", "e"] and out["label"].tolist() == [1, 0, 1]
    np.testing.assert_allclose(out["confidence"], [0.95, 0.98, 0.91])
    # max_rows keeps the surest, still in input order
    assert pseudo_labelled(texts, p, threshold=0.9, max_rows=2)["text"].tolist() == ["a", "c"]
    assert pseudo_labelled(texts, p, threshold=0.99).empty
    with pytest.raises(ValueError, match="5 texts but 2 probabilities"):
        pseudo_labelled(texts, p[:2], threshold=0.9)


def test_balanced_pseudo_labels_keep_the_labelled_share_by_cutting_the_over_represented_class():
    texts = list("abcdefg")
    p = np.array([0.95, 0.99, 0.92, 0.97, 0.05, 0.5, 0.08])  # 4 sure positives, 2 sure negatives
    # a share of 1/3 positives: 2 negatives allow 1 positive, the surest (b)
    assert pseudo_labelled(texts, p, 0.9, positive_share=1 / 3)["text"].tolist() == ["b", "e", "g"]
    # 0.8: 4 positives allow 1 negative, the surest (e); at 2/3 both classes stay whole
    assert pseudo_labelled(texts, p, 0.9, positive_share=0.8)["text"].tolist() == ["a", "b", "c", "d", "e"]
    assert pseudo_labelled(texts, p, 0.9, positive_share=2 / 3)["text"].tolist() == ["a", "b", "c", "d", "e", "g"]
    # 0.9 with 1 positive sure: the negatives are cut (1 positive allows 0.11 negatives -> none)
    q = np.array([0.95, 0.5, 0.02, 0.04, 0.5, 0.5, 0.5])
    assert pseudo_labelled(texts, q, 0.9, positive_share=0.9)["text"].tolist() == ["a"]
    # 0.5 there: the surest negative joins the positive
    assert pseudo_labelled(texts, q, 0.9, positive_share=0.5)["text"].tolist() == ["a", "c"]
    with pytest.raises(ValueError, match="positive_share must be strictly between 0 and 1, not 1.0"):
        pseudo_labelled(texts, p, 0.9, positive_share=1.0)


def test_balanced_pseudo_labels_can_fill_the_under_represented_class_below_the_threshold():
    texts = list("abcdefgh")
    p = np.array([0.95, 0.99, 0.92, 0.97, 0.05, 0.3, 0.45, 0.6])  # 4 sure positives, 1 sure negative
    fill = lambda share: pseudo_labelled(texts, p, 0.9, positive_share=share, fill=True)["text"].tolist()  # noqa: E731
    assert fill(2 / 3) == ["a", "b", "c", "d", "e", "f"]  # 4 positives want 2 negatives: e, then the surest f
    assert fill(0.5) == ["a", "b", "c", "d", "e", "f", "g"]  # want 4: the teacher predicts 3 negatives
    assert fill(0.9) == ["a", "b", "c", "d", "e", "h"]  # 1 negative wants 9 positives: all 5 it predicts
    assert fill(0.8) == ["a", "b", "c", "d", "e"]  # the share already: nothing added


def test_pseudo_labels_are_checked_against_the_labels_withheld_from_the_pool():
    pseudo = pd.DataFrame({"text": ["a", "b", "c", "d", "x"], "label": [1, 0, 1, 1, 0]})
    pool, labels = ["a", "b", "c", "d", "d", "e"], [1, 1, 1, 1, 0, 0]  # "d" is labelled both ways
    check = withheld_agreement(pseudo, pool, labels)  # "x" (extra text) and "d" have no known label
    assert check == {"pseudo_label_checked": 3.0, "pseudo_label_accuracy": pytest.approx(2 / 3)}
    assert withheld_agreement(pseudo, [], []) == {}  # no label known: nothing to check
    with pytest.raises(ValueError, match="3 texts but 2 labels"):
        withheld_agreement(pseudo, ["a", "b", "c"], [1, 0])


def test_threshold_must_be_above_one_half_and_only_a_base_self_trains():
    with pytest.raises(ConfigError, match=r"self_train.threshold: .*> 0.5"):
        validate(compose_config([*QUICK, "self_train.threshold=0.5"]))
    with pytest.raises(ConfigError, match=r"self_train.files: a transfer job does not self-train"):
        validate(compose_config(["+experiment=hotel_transfer", "self_train=imdb_unsup"]))
    with pytest.raises(ConfigError, match=r"self_train.files: a transfer job does not self-train"):
        validate(compose_config(["+experiment=hotel_transfer", "self_train=imdb_unsup", "base.run_id=0123abcd"]))
    cfg = validate(compose_config(["+experiment=hotel_transfer", "self_train@base.self_train=imdb_unsup"]))
    assert cfg["base"]["self_train"]["files"][0].endswith("unsup.csv.gz")


def test_a_transfer_jobs_base_stage_self_trains_as_imdb_base_does():
    """`self_train@base.self_train=...` reaches the base a transfer job trains: the same config and
    fingerprint as `+experiment=imdb_base self_train=...`, different from the plain base's."""
    from conftest import need_data

    from xfer.jobs.transfer import base_config

    need_data("imdb/train.csv.gz", "imdb/test.csv.gz", "imdb/unsup.csv.gz")
    base = base_config(validate(compose_config(["+experiment=hotel_transfer", "self_train@base.self_train=imdb_unsup"])))
    assert base["self_train"]["files"][0].endswith("unsup.csv.gz")
    alone = validate(compose_config(["+experiment=imdb_base", "self_train=imdb_unsup"]))
    plain = base_config(validate(compose_config(["+experiment=hotel_transfer"])))
    assert base_fingerprint(base) == base_fingerprint(alone) != base_fingerprint(plain)


def _unlabelled(tmp_path, n=120):
    from conftest import need_data

    need_data("imdb/train.csv.gz", "imdb/test.csv.gz", "imdb/unsup.csv.gz")
    from xfer.data import data_dir

    path = tmp_path / "unlabelled.csv"
    pd.read_csv(data_dir() / "imdb" / "unsup.csv.gz", nrows=n)[["text"]].to_csv(path, index=False)
    return path


def test_a_self_trained_network_learns_from_the_teachers_pseudo_labels(tmp_path):
    unlabelled = _unlabelled(tmp_path)
    store = [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifact_location={tmp_path / 'art'}"]
    over = [*QUICK, f"self_train.files=[{unlabelled}]", "self_train.threshold=0.51", *store]
    cfg = validate(compose_config(over))
    plain = validate(compose_config([*QUICK, *store]))
    assert base_fingerprint(cfg) != base_fingerprint(plain)  # self-training is part of the network's identity
    assert base_fingerprint(plain) == base_fingerprint(validate(compose_config([*QUICK, "self_train=none", *store])))
    result = run_task(cfg, tmp_path / "out", make_tracker(cfg["tracking"]))
    meta = result["loaded"].meta["self_train"]
    assert meta["unlabelled"] == 120 and 0 < meta["pseudo_labelled"] <= 120
    (run,) = list_runs(tmp_path)
    m, params = run.data.metrics, run.data.params
    assert m["pseudo_labelled"] == meta["pseudo_labelled"] and 0 < m["teacher_test_accuracy"] <= 1
    assert "teacher_train_loss" in m and "train_loss" in m  # both networks' epochs, apart
    # the student's training split is the teacher's plus the pseudo-labelled reviews
    assert int(params["rows.train"]) == int(params["rows.teacher_train"]) + meta["pseudo_labelled"]
    assert result["metrics"]["test_accuracy"] == pytest.approx(m["test_accuracy"])


def test_a_student_can_start_from_the_teacher_and_train_fewer_epochs(tmp_path, monkeypatch):
    """self_train.student=teacher: the student is the teacher's trained network, with the teacher's
    vocabulary, its n-gram ratios cleared so the fit estimates them again from the labelled and the
    pseudo-labelled reviews, trained for self_train.student_epochs at self_train.student_lr;
    student=scratch trains a fresh one."""
    import xfer.jobs.train as jt

    unlabelled = _unlabelled(tmp_path)
    small = ["model=cnn_ngrams", "model.ngrams.buckets=4096", "model.encoder.filters=4", "model.embedding.size=8",
             "trainer.max_epochs=2", "trainer.checkpoint=false", "tracking.enabled=false"]
    calls, real = [], jt.fit_and_test

    def spy(net, splits, trainer_cfg, *a, **kw):
        calls.append({"net": net, "epochs": trainer_cfg["max_epochs"], "lr": a[0]["lr"], "rows": len(splits["train"][0]),
                      "fitted": net.ngrams.fitted(),
                      "vocab": next(iter(net.embedding.collect_params().values())).shape[0]})
        start = {k: p.data().copy() for k, p in net.collect_params().items()}
        out = real(net, splits, trainer_cfg, *a, **kw)
        calls[-1].update(start=start, end={k: p.data().copy() for k, p in net.collect_params().items()})
        return out

    monkeypatch.setattr(jt, "fit_and_test", spy)
    quick = [o for o in QUICK if not o.startswith(("model=", "model.", "trainer.max_epochs="))]
    over = [*quick, *small, f"self_train.files=[{unlabelled}]", "self_train.threshold=0.51"]
    warm = validate(compose_config([*over, "self_train.student=teacher", "self_train.student_epochs=1",
                                    "self_train.student_lr=0.0005"]))
    scratch = validate(compose_config(over))
    assert base_fingerprint(warm) != base_fingerprint(scratch)
    # the student's learning rate is part of the fingerprint only when set
    assert base_fingerprint({**warm, "self_train": {**warm["self_train"], "student_lr": None}}) != base_fingerprint(warm)
    result = run_task(warm, tmp_path / "warm", make_tracker(warm["tracking"]))
    teacher, student = calls
    pseudo = result["loaded"].meta["self_train"]["pseudo_labelled"]
    assert student["net"] is teacher["net"] and (teacher["epochs"], student["epochs"]) == (2, 1)
    assert teacher["lr"] == warm["optimizer"]["lr"] != 0.0005 and student["lr"] == 0.0005
    assert student["rows"] == teacher["rows"] + pseudo and pseudo > 0
    assert not student["fitted"] and student["net"].ngrams.fitted()  # ratios cleared, then fitted on all rows
    for name, value in student["start"].items():  # the student starts where the teacher ended
        if not name.endswith("ratio"):
            np.testing.assert_array_equal(value.asnumpy(), teacher["end"][name].asnumpy())
    assert len(result["history"]) == 1
    calls.clear()
    run_task(scratch, tmp_path / "scratch", make_tracker(scratch["tracking"]))
    assert calls[1]["net"] is not calls[0]["net"] and calls[1]["epochs"] == 2 and calls[1]["lr"] == scratch["optimizer"]["lr"]
    # the scratch student fits its vocabulary again on all its reviews; the warm one keeps the teacher's
    assert student["vocab"] == teacher["vocab"] == calls[0]["vocab"] < calls[1]["vocab"]
    for key in ("student_epochs=1", "student_lr=0.001"):
        with pytest.raises(ConfigError, match=rf"self_train.{key.split('=')[0]}: only read with self_train.student=teacher"):
            validate(compose_config([*over, f"self_train.{key}"]))


def test_self_training_cannot_resume_and_bad_files_are_one_line_errors(tmp_path):
    unlabelled = _unlabelled(tmp_path, n=5)
    cfg = validate(compose_config([*QUICK, f"self_train.files=[{unlabelled}]", "resume=0123456789abcdef"]))
    with pytest.raises(ConfigError, match="resume: not available with self_train"):
        run_task(cfg, tmp_path / "out", make_tracker(cfg["tracking"]))
    proc = run_cli(tmp_path, *QUICK, f"self_train.files=[{tmp_path / 'nope.csv'}]")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("nope.csv: file not found (set XFER_DATA_DIR or the data.files.* config)")
    assert not list_runs(tmp_path)


def _self_trained_transfer(tmp_path, methods: str, threshold: float, *extra: str):
    """A transfer job on the hotel sample (60 labels) with target self-training: its records and
    the MLflow runs of the teacher and the student."""
    from conftest import need_data

    from helpers import TRANSFER_QUICK

    need_data("hotel/hotel_reviews_sample.csv.gz", "imdb/train.csv.gz")
    over = [*TRANSFER_QUICK, "transfer.repeats=1", "transfer.tsne.enabled=false", "data.n_train=60",
            f"transfer.methods={methods}", "transfer.self_train=true", f"transfer.self_train_threshold={threshold}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifact_location={tmp_path / 'art'}",
            *extra]
    cfg = validate(compose_config(over))
    result = run_task(cfg, tmp_path / "out", make_tracker(cfg["tracking"]))
    [teacher] = list_runs(tmp_path, "tags.method = 'transfer_gradual'")
    [student] = list_runs(tmp_path, "tags.method = 'transfer_gradual_selftrained'")
    return result["records"], teacher, student


def test_a_transfer_self_trains_on_the_targets_unlabelled_pool(tmp_path):
    """transfer.self_train: the transfer's network pseudo-labels the training pool beyond the
    labelled rows, and the base is transferred again on both (transfer_<schedule>_selftrained),
    recorded under the labelled n_train beside the plain transfer."""
    records, teacher, student = _self_trained_transfer(tmp_path, "[transfer,tfidf_lr]", 0.55)
    records = {r["method"]: r for r in records}
    assert list(records) == ["transfer_gradual", "transfer_gradual_selftrained", "tfidf_lr"]
    assert {r["n_train"] for r in records.values()} == {60}
    unlabelled = teacher.data.metrics["self_train_unlabelled"]
    assert unlabelled == 349 - 60  # the pool beyond the labelled rows, never validation or test
    pseudo = student.data.metrics["pseudo_labelled"]
    assert pseudo == teacher.data.metrics["self_train_pseudo_labelled"] and 0 < pseudo <= unlabelled
    assert student.data.params["n_train"] == "60" and student.data.metrics["test_roc_auc"] > 0.5
    assert int(student.data.params["rows.train"]) == 60 + pseudo
    assert "self_train_unlabelled" not in student.data.metrics  # a student never pseudo-labels again
    # every pseudo-labelled review is from the hotel pool, whose labels n_train withheld
    assert teacher.data.metrics["self_train_pseudo_label_checked"] == pseudo
    assert 0.5 < teacher.data.metrics["self_train_pseudo_label_accuracy"] <= 1


def test_balanced_self_training_passes_the_labelled_share_and_the_way_to_keep_it(tmp_path, monkeypatch):
    """transfer.self_train_balance(_by) reach the pseudo-labelling: the labelled rows' share of
    positives and cut or fill (what each does: the tests of pseudo_labelled above)."""
    import xfer.selftrain

    calls, real = [], xfer.selftrain.pseudo_labelled
    monkeypatch.setattr(xfer.selftrain, "pseudo_labelled",
                        lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    _, teacher, _ = _self_trained_transfer(tmp_path, "[transfer]", 0.55, "transfer.self_train_balance=true",
                                           "transfer.self_train_balance_by=fill")
    [kw] = calls
    assert kw["fill"] is True and kw["positive_share"] == pytest.approx(40 / 60)  # a stratified 60 of 330:169
    assert teacher.data.params["transfer.self_train_balance_by"] == "fill"


def test_a_second_round_of_self_training_relabels_with_the_first_student(tmp_path):
    """transfer.self_train_rounds=2: the first student, trained untracked, pseudo-labels the pool
    again and the recorded student learns from its labels: one teacher run, one student run, the
    first student's results and pseudo-labels logged on the student's run."""
    records, teacher, student = _self_trained_transfer(tmp_path, "[transfer]", 0.55, "transfer.self_train_rounds=2")
    assert [r["method"] for r in records] == ["transfer_gradual", "transfer_gradual_selftrained"]
    m = student.data.metrics
    assert m["self_train_round2_unlabelled"] == teacher.data.metrics["self_train_unlabelled"] == 349 - 60
    assert m["pseudo_labelled"] == m["self_train_round2_pseudo_labelled"] > 0  # the second round's labels
    assert int(student.data.params["rows.train"]) == 60 + m["pseudo_labelled"]
    assert 0.5 < m["round1_test_roc_auc"] <= 1 and 0.5 < m["self_train_round2_pseudo_label_accuracy"] <= 1
    assert "round1_test_roc_auc" not in teacher.data.metrics and student.data.params["transfer.self_train_rounds"] == "2"
    assert records[1]["test_roc_auc"] == m["test_roc_auc"]


def test_a_student_without_pseudo_labels_is_its_teacher_and_is_not_trained_again(tmp_path):
    """When the teacher is sure of no review (or the pool is empty: all labels used), a student
    would train on the teacher's rows from the teacher's initialisation: the self-trained
    transfer is recorded as its own run with the teacher's results, its bundle saved under its
    own name, and neither trains nor scores the pool a second time."""
    records, teacher, student = _self_trained_transfer(tmp_path, "[transfer]", 0.99999)
    assert [r["method"] for r in records] == ["transfer_gradual", "transfer_gradual_selftrained"]
    assert records[0]["run_id"] != records[1]["run_id"]
    assert teacher.data.metrics["self_train_pseudo_labelled"] == 0
    assert student.data.metrics["pseudo_labelled"] == 0 and int(student.data.params["rows.train"]) == 60
    assert student.data.params["student_is_teacher"] == "True" and "student_is_teacher" not in teacher.data.params
    for name in ("test_roc_auc", "test_accuracy"):
        assert student.data.metrics[name] == teacher.data.metrics[name] == records[1][name]
    assert "self_train_unlabelled" not in student.data.metrics and "pseudo_positive_share" not in student.data.metrics
    assert "train_loss" not in student.data.metrics  # no epoch ran for it
    # the student logs its own model, as every transfer does
    models = [{m.model_id for m in run.outputs.model_outputs} for run in (teacher, student)]
    assert all(len(m) == 1 for m in models) and models[0] != models[1]


def test_transfer_self_training_needs_the_transfer_method():
    from helpers import TRANSFER_QUICK

    from xfer.jobs.methods import methods_of

    cfg = validate(compose_config([*TRANSFER_QUICK, "transfer.self_train=true", "transfer.adapt=true"]))
    assert methods_of(cfg)[:3] == ["transfer", "transfer_adapted", "transfer_selftrained"]
    cfg = validate(compose_config([*TRANSFER_QUICK, "transfer.self_train=true", "transfer.methods=[tfidf_lr]"]))
    assert methods_of(cfg) == ["tfidf_lr"]
    with pytest.raises(ConfigError, match=r"transfer.self_train_threshold: .*> 0.5"):
        validate(compose_config([*TRANSFER_QUICK, "transfer.self_train_threshold=0.4"]))


def test_a_student_sure_of_no_review_ends_the_rounds_and_is_the_student_recorded(tmp_path, monkeypatch):
    """transfer.self_train_rounds=3 where the first student pseudo-labels nothing: the rounds end
    there and that student (trained on the teacher's labels) is recorded, not the teacher."""
    import xfer.selftrain

    calls, real = [], xfer.selftrain.pseudo_labelled

    def first_call_only(*a, **kw):
        calls.append(kw)
        out = real(*a, **kw)
        return out if len(calls) == 1 else out.iloc[:0]

    monkeypatch.setattr(xfer.selftrain, "pseudo_labelled", first_call_only)
    records, teacher, student = _self_trained_transfer(tmp_path, "[transfer]", 0.55, "transfer.self_train_rounds=3")
    assert len(calls) == 2  # the teacher's labels, then the first student's: none, so no third round
    m = student.data.metrics
    assert m["self_train_round2_pseudo_labelled"] == 0 and "self_train_round3_unlabelled" not in m
    assert m["pseudo_labelled"] == teacher.data.metrics["self_train_pseudo_labelled"] > 0
    assert int(student.data.params["rows.train"]) == 60 + m["pseudo_labelled"]
    assert "student_is_teacher" not in student.data.params and "train_loss" in m
    assert m["test_roc_auc"] == pytest.approx(m["round1_test_roc_auc"], abs=1e-6) == records[1]["test_roc_auc"]
