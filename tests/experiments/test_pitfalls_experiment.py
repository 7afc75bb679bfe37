"""experiments.pitfalls: the repaired table, the settings, the held-out text, a short real early-stopped run, the
whole experiment on micro settings (the pretraining mix is tested with data.flan)."""

import pytest

from instruct_course.core import CourseError
from instruct_course.data.world import pretraining_text
from instruct_course.experiments.pitfalls import (
    FULL,
    PITFALLS_TABLE,
    QUICK,
    curves,
    heldout_pretraining_text,
    overfit_data,
    pitfall_setup,
    pitfall_train,
)
from instruct_course.train.callbacks import EvalLossEarlyStopping, early_stop_index


def test_table_is_repaired():
    assert [r["pitfall"] for r in PITFALLS_TABLE] == [
        "Overfitting",
        "Underfitting",
        "Catastrophic forgetting",
        "Data contamination",
    ]
    text = " ".join(v for r in PITFALLS_TABLE for v in r.values())
    assert "β" not in text and "train loss ↓, eval loss ↑" == PITFALLS_TABLE[0]["symptom"]


def test_settings():
    assert set(QUICK) == set(FULL) and FULL["steps"] == 300 and QUICK["steps"] == 40
    assert pitfall_setup(seed=0, quick=True, n_train=5, n_eval=1)["cfg"]["n_train"] == 5
    with pytest.raises(CourseError, match="stepz"):
        pitfall_setup(stepz=3)


def test_heldout_pretraining_text_is_not_the_mix():
    setup = pitfall_setup(seed=0, quick=True, n_train=5, n_eval=1, n_ppl_docs=20)
    held = heldout_pretraining_text(setup)
    mix_docs = pretraining_text(seed=456, n_docs=200)
    assert len(held) == 20 and not set(held) & set(mix_docs)


def test_real_run_stops_where_eval_loss_turns(tmp_path):
    setup = pitfall_setup(seed=0, quick=True, n_train=20, n_eval=2, overfit_n=24)
    small, held = overfit_data(setup)
    kw = dict(max_steps=60, batch_size=8, eval_steps=3, logging_steps=3)
    _, log = pitfall_train(setup, small, tmp_path / "full", held[:10], **kw)
    ev = curves(log)["eval"]
    b, s = early_stop_index([x for _, x in ev], patience=2)
    assert s is not None, f"no turn in {ev}"
    cb = EvalLossEarlyStopping(patience=2)
    _, log2 = pitfall_train(setup, small, tmp_path / "es", held[:10], callbacks=[cb], **kw)
    assert cb.stopped_step == ev[s][0] and cb.best_step == ev[b][0] and cb.restored
    assert max(h["step"] for h in log2 if "step" in h) == cb.stopped_step < 60


MICRO = dict(n_train=4, n_eval=2, steps=2, eval_steps=1, overfit_n=8, overfit_steps=4, overfit_batch=4)
MICRO |= dict(overfit_eval_steps=1, patience=1, n_ppl_docs=5, leak_per_family=1, leak_copies=2)


def test_run_pitfalls_experiment_end_to_end(tmp_path):
    "The CLI's experiment on micro settings: every section, pitfalls.json as returned, the figure."
    import json

    from instruct_course.experiments.pitfalls import run_pitfalls_experiment

    res = run_pitfalls_experiment(tmp_path / "p", seed=0, quick=True, progress=False, **MICRO)
    disk = json.loads((tmp_path / "p" / "pitfalls.json").read_text())
    sections = ["overfitting", "underfitting", "forgetting", "contamination"]
    assert set(disk) == {"seed", "quick", "config", "seconds", "threads", *sections}
    assert disk["config"] == {**QUICK, **MICRO} and disk["overfitting"]["steps"] == 4
    assert set(disk["underfitting"]) == {"tutorial lr 2e-5", "course lr 2e-3"}  # save_json sorts keys
    assert "model" not in disk["underfitting"]["course lr 2e-3"]  # models are returned by the runs, never saved
    assert len(disk["forgetting"]["models"]) == 4 and disk["contamination"]["recall"] == 1.0
    assert res["contamination"]["leaked"] == disk["contamination"]["leaked"]
    assert (tmp_path / "p" / "pitfalls.png").stat().st_size > 0
    with pytest.raises(CourseError, match="stepz"):
        run_pitfalls_experiment(tmp_path / "bad", stepz=1)
    assert not (tmp_path / "bad").exists()
