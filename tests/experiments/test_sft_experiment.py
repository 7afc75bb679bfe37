"experiments.sft: run_demo writes the metrics.json contract; bad arguments fail before any work."

import json

import pytest

from instruct_course.core import CourseError
from instruct_course.data.world import SPLITS
from instruct_course.experiments.sft import (
    COURSE_DEMO_CONFIG,
    COURSE_DEMO_STEPS,
    COURSE_TASK_UPSAMPLE,
    DEMO_TARGETS,
    run_demo,
    run_demo_seeds,
    run_loss_on,
)
from instruct_course.train.sft import SFTConfig


def test_demo_recipe():
    assert COURSE_DEMO_CONFIG == SFTConfig(max_steps=COURSE_DEMO_STEPS, batch_size=16) and COURSE_DEMO_STEPS == 1400
    assert COURSE_TASK_UPSAMPLE == {"qa": 6, "summarize": 6}


def test_run_demo_writes_the_metrics_contract(tmp_path):
    m = run_demo(tmp_path / "demo", max_steps=4, progress=False, eval_per_family=2)
    disk = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert disk == json.loads(json.dumps(m))
    assert set(disk) == {"before", "after", "sft", "eval_seconds", "eval_per_family", "seed", "dtype"}
    assert disk["dtype"] == "float32"  # the tiny model is narrow: fp32 on any CPU
    for side in ("before", "after"):
        per = disk[side]["per_task"]
        assert (
            0 <= disk[side]["exact_match"] <= 1 and len(per) == 11 and disk[side]["n"] == 22
        )  # 11 trained families x 2
        assert disk[side]["exact_match"] == pytest.approx(
            sum(per.values()) / len(per), abs=1e-3
        )  # mean over families, heldout_instances
        assert set(disk[side]["splits"]) == set(SPLITS[1:])
    assert disk["sft"]["steps"] == 4 and disk["sft"]["task_upsample"]["qa"] > 1
    assert disk["sft"]["config"]["batch_size"] == 16 and disk["sft"]["config"]["eval_steps"] == 1
    assert (tmp_path / "demo" / "loss.png").stat().st_size > 0
    preds = [json.loads(line) for line in (tmp_path / "demo" / "predictions.jsonl").read_text().splitlines()]
    assert {p["model"] for p in preds} == {"base", "sft"} and all("prediction" in p and "correct" in p for p in preds)


@pytest.mark.parametrize(
    "kw, phrase",
    [
        ({"eval_per_family": 0}, "eval_per_family"),
        ({"eval_per_family": 1.5}, "eval_per_family"),
        ({"max_steps": 0}, "max_steps"),  # issue 14: 0 used to mean the default 1,400 steps
        ({"max_steps": -3}, "max_steps"),
    ],
)
def test_run_demo_refuses_bad_arguments_before_writing(tmp_path, kw, phrase):
    with pytest.raises(CourseError, match=phrase):
        run_demo(tmp_path / "bad", progress=False, **kw)
    assert not (tmp_path / "bad").exists()


def test_demo_seeds_quick_writes_one_row_per_seed(tmp_path):
    res = run_demo_seeds(tmp_path / "seeds", seed=3, quick=True, progress=False)
    assert json.loads((tmp_path / "seeds" / "seeds.json").read_text()) == json.loads(json.dumps(res))
    assert res["seeds"] == [3, 4] and [r["seed"] for r in res["rows"]] == [3, 4]
    assert (tmp_path / "seeds" / "seed4" / "metrics.json").exists()
    for r in res["rows"]:
        assert set(r["meets"]) == set(DEMO_TARGETS) and r["weakest_family_em"] == min(r["per_task"].values())
        assert not r["meets"]["heldout_instances"]  # 20 steps do not make an instruction follower
    assert res["met"]["heldout_instances"] == 0 and res["all_met"] is False


def test_run_loss_on_quick_writes_both_runs(tmp_path):
    res = run_loss_on(tmp_path / "lo", quick=True, progress=False)
    disk = json.loads((tmp_path / "lo" / "loss_on.json").read_text())
    assert disk == json.loads(json.dumps(res))
    assert [(r["seed"], r["loss_on"]) for r in res["rows"]] == [(0, "response"), (0, "all")]
    assert res["steps"] == 10 and res["heldout"] == 22 and res["quick"] is True
    assert all(0 <= r["exact_match"] <= 1 and len(r["per_task"]) == 11 for r in res["rows"])
    assert res["response_better_on"] == int(res["rows"][0]["exact_match"] > res["rows"][1]["exact_match"])
    assert (tmp_path / "lo" / "loss_on.png").stat().st_size > 0
    with pytest.raises(CourseError, match="n_seeds"):
        run_loss_on(tmp_path / "bad", n_seeds=0)
