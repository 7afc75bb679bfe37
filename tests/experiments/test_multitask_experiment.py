"""experiments.multitask: the run plan, the tables and a short real run of `run_multitask_experiment`."""

import json

import pytest

from instruct_course.core import CourseError
from instruct_course.data.multitask import multitask_splits
from instruct_course.data.world import FAMILIES
from instruct_course.experiments.multitask import (
    FULL,
    QUICK,
    _run_plan,
    multitask_table,
    run_multitask_experiment,
    unseen_table,
)


def test_settings_and_plan():
    assert set(QUICK) == set(FULL) == {"steps", "n_train", "n_eval", "wide"}
    data = multitask_splits(("sentiment", "uppercase"), ("antonym", "plural"), n_train=5, n_eval=1)
    names = [n for n, _ in _run_plan(data, {**FULL, "n_train": 5, "n_eval": 1}, seed=0)]
    assert names == [
        "base",
        "multi-task (2)",
        "single: sentiment",
        "single: uppercase",
        f"multi-task ({len(FAMILIES) - 2})",
    ]
    plan = dict(_run_plan(data, {**QUICK, "n_train": 5, "n_eval": 1}, seed=0))
    assert plan["base"] is None and {r["task"] for r in plan["single: sentiment"]} == {"sentiment"}


def test_bad_plan_fails_before_training(tmp_path):
    with pytest.raises(CourseError, match="both in training and unseen"):
        run_multitask_experiment(tmp_path, train_families=("sentiment",), unseen_families=("sentiment",))


def test_experiment_end_to_end_tiny(tmp_path):
    r = run_multitask_experiment(
        tmp_path,
        quick=True,
        train_families=("sentiment", "uppercase"),
        unseen_families=("antonym",),
        steps=6,
        progress=False,
    )
    assert set(r["models"]) == {"base", "multi-task (2)", "single: sentiment", "single: uppercase"}
    assert (tmp_path / "multitask.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["steps"] == 6 and saved["models"]["single: uppercase"]["train_families"] == ["uppercase"]
    t = multitask_table(r)
    assert list(t.index) == list(r["models"]) and {"own: new instances", "unseen: exact match"} <= set(t.columns)
    assert t.loc["base", "steps"] == 0 and list(unseen_table(r).columns) == ["antonym"]
