"SFT: config translation, training reduces the response loss, resume equals uninterrupted, evaluation scores both ways."

import json

import pytest

from instruct_course.core import CourseError
from instruct_course.models import load_model, load_tokenizer
from instruct_course.train.sft import (
    INSTRUCTION_TRAINING_CONFIG_PROVENANCE,
    evaluate_exact_match,
    instruction_training_config,
    train_sft_stage,
    training_arguments,
)
from instruct_course.data.world import make_splits


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


@pytest.fixture(scope="module")
def data():
    s = make_splits(
        seed=0,
        n_train=40,
        n_eval=4,
        families=["sentiment", "topic", "uppercase", "antonym"],
        heldout_families=["antonym"],
    )
    return s


def test_every_tutorial_value_has_provenance():
    assert set(instruction_training_config) == set(INSTRUCTION_TRAINING_CONFIG_PROVENANCE)
    assert (
        instruction_training_config["learning_rate"] == 2e-5
        and instruction_training_config["evaluation_strategy"] == "epoch"
    )


def test_tutorial_config_translates_to_transformers5(tmp_path):
    args = training_arguments(tmp_path, instruction_training_config, has_eval=True)
    assert args.learning_rate == 2e-5 and args.gradient_accumulation_steps == 4
    assert str(args.eval_strategy.value if hasattr(args.eval_strategy, "value") else args.eval_strategy) == "steps"
    assert not args.fp16  # no fp16 on a CPU


def test_sft_trains_resumes_and_saves_safetensors(tok, data, tmp_path):
    kw = dict(max_steps=12, save_steps=6, eval_steps=6, logging_steps=1, batch_size=8, progress=False)
    m = train_sft_stage(
        load_model("tiny", device="cpu"),
        data["train"],
        tok,
        output_dir=tmp_path / "a",
        eval_dataset=data["heldout_instances"],
        **kw,
    )
    log = json.loads((tmp_path / "a" / "log_history.json").read_text())
    losses = [h["loss"] for h in log["log_history"] if "loss" in h]
    assert losses[-1] < losses[0]
    assert any("eval_loss" in h for h in log["log_history"])
    assert (tmp_path / "a" / "model.safetensors").exists() and not list((tmp_path / "a").glob("*.bin"))
    # resume from the step-6 checkpoint: same final loss as uninterrupted
    import shutil

    shutil.copytree(tmp_path / "a" / "checkpoint-6", tmp_path / "b" / "checkpoint-6")
    train_sft_stage(
        load_model("tiny", device="cpu"),
        data["train"],
        tok,
        output_dir=tmp_path / "b",
        eval_dataset=data["heldout_instances"],
        resume_from_checkpoint=True,
        **kw,
    )
    log_b = json.loads((tmp_path / "b" / "log_history.json").read_text())
    lb = [h["loss"] for h in log_b["log_history"] if "loss" in h]
    assert abs(lb[-1] - losses[-1]) < 1e-4


def test_sft_refuses_bad_datasets(tok):
    with pytest.raises(CourseError, match="columns"):
        train_sft_stage(load_model("tiny", device="cpu"), [{"text": "hello"}], tok, max_steps=1, progress=False)
    with pytest.raises(CourseError, match="loss_on"):
        train_sft_stage(
            load_model("tiny", device="cpu"),
            [{"instruction": "a", "response": "b"}],
            tok,
            max_steps=1,
            progress=False,
            loss_on="prompt",
        )


def test_evaluate_exact_match_scores_both_ways(tok, data):
    recs = data["heldout_instances"][:6]
    res = evaluate_exact_match(load_model("tiny", device="cpu"), tok, recs, max_new_tokens=8)
    assert res["n"] == 6 and set(res["per_task"]) <= {"sentiment", "topic", "uppercase"}
    assert all(p["correct"] == (p["prediction"].strip() == p["response"]) for p in res["predictions"])
    with pytest.raises(CourseError, match="empty"):
        evaluate_exact_match(None, tok, [])


def test_run_demo_writes_the_metrics_contract(tmp_path):
    from instruct_course.train.sft import run_demo
    from instruct_course.data.world import SPLITS

    m = run_demo(tmp_path / "demo", max_steps=4, progress=False, eval_per_family=2)
    disk = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert disk == json.loads(json.dumps(m))
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
    assert (tmp_path / "demo" / "loss.png").stat().st_size > 0
    preds = [json.loads(l) for l in (tmp_path / "demo" / "predictions.jsonl").read_text().splitlines()]
    assert {p["model"] for p in preds} == {"base", "sft"} and all("prediction" in p and "correct" in p for p in preds)
    with pytest.raises(CourseError, match="eval_per_family"):
        run_demo(tmp_path / "bad", max_steps=1, progress=False, eval_per_family=0)


def test_batch_rebalance_splits_the_same_batch_and_follows_the_seed(tok, data, tmp_path):
    "Micro-batches of similar length inside each random optimizer-step batch: how the batch is cut changes nothing, the seed does."

    def final_loss(name, seed=0, **kw):
        train_sft_stage(
            load_model("tiny", device="cpu"),
            data["train"],
            tok,
            output_dir=tmp_path / name,
            max_steps=6,
            seed=seed,
            progress=False,
            save_steps=1000,
            logging_steps=1,
            learning_rate=1e-3,
            sampling="batch_rebalance",
            **kw,
        )
        return [
            h["loss"]
            for h in json.loads((tmp_path / name / "log_history.json").read_text())["log_history"]
            if "loss" in h
        ]

    a = final_loss("a", batch_size=8, gradient_accumulation_steps=2)  # 16 examples per step, in 2 micro-batches
    b = final_loss("b", batch_size=4, gradient_accumulation_steps=4)  # the same 16, in 4
    c = final_loss("c", seed=1, batch_size=8, gradient_accumulation_steps=2)
    assert a == pytest.approx(b, rel=1e-4) and a != pytest.approx(c, rel=1e-3)
    with pytest.raises(CourseError, match="gradient_accumulation_steps"):
        train_sft_stage(
            load_model("tiny", device="cpu"),
            data["train"],
            tok,
            output_dir=tmp_path / "d",
            max_steps=1,
            progress=False,
            sampling="batch_rebalance",
        )
    with pytest.raises(CourseError, match="sampling"):
        train_sft_stage(
            load_model("tiny", device="cpu"),
            data["train"],
            tok,
            output_dir=tmp_path / "e",
            max_steps=1,
            progress=False,
            sampling="sorted",
        )
