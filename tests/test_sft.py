"SFT: config translation, training reduces the response loss, resume equals uninterrupted, evaluation scores both ways."
import json
import pytest, torch
from instruct_course.core import CourseError
from instruct_course.sft import (instruction_training_config, INSTRUCTION_TRAINING_CONFIG_PROVENANCE, COURSE_SFT_CONFIG, training_arguments,
                                 train_sft_stage, evaluate_exact_match, InstructionTrainer)
from instruct_course.models import load_model, load_tokenizer
from instruct_course.world import make_splits


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny")


@pytest.fixture(scope="module")
def data():
    s = make_splits(seed=0, n_train=40, n_eval=4, families=["sentiment", "topic", "uppercase", "antonym"], heldout_families=["antonym"])
    return s


def test_every_tutorial_value_has_provenance():
    assert set(instruction_training_config) == set(INSTRUCTION_TRAINING_CONFIG_PROVENANCE)
    assert instruction_training_config["learning_rate"] == 2e-5 and instruction_training_config["evaluation_strategy"] == "epoch"


def test_tutorial_config_translates_to_transformers5(tmp_path):
    args = training_arguments(tmp_path, instruction_training_config, has_eval=True)
    assert args.learning_rate == 2e-5 and args.gradient_accumulation_steps == 4
    assert str(args.eval_strategy.value if hasattr(args.eval_strategy, "value") else args.eval_strategy) == "steps"
    assert not args.fp16  # no fp16 on a CPU


def test_sft_trains_resumes_and_saves_safetensors(tok, data, tmp_path):
    kw = dict(max_steps=12, save_steps=6, eval_steps=6, logging_steps=1, batch_size=8, progress=False)
    m = train_sft_stage(load_model("tiny", device="cpu"), data["train"], tok, output_dir=tmp_path / "a", eval_dataset=data["heldout_instances"], **kw)
    log = json.loads((tmp_path / "a" / "log_history.json").read_text())
    losses = [h["loss"] for h in log["log_history"] if "loss" in h]
    assert losses[-1] < losses[0]
    assert any("eval_loss" in h for h in log["log_history"])
    assert (tmp_path / "a" / "model.safetensors").exists() and not list((tmp_path / "a").glob("*.bin"))
    # resume from the step-6 checkpoint: same final loss as uninterrupted
    import shutil
    shutil.copytree(tmp_path / "a" / "checkpoint-6", tmp_path / "b" / "checkpoint-6")
    train_sft_stage(load_model("tiny", device="cpu"), data["train"], tok, output_dir=tmp_path / "b", eval_dataset=data["heldout_instances"],
                    resume_from_checkpoint=True, **kw)
    log_b = json.loads((tmp_path / "b" / "log_history.json").read_text())
    lb = [h["loss"] for h in log_b["log_history"] if "loss" in h]
    assert abs(lb[-1] - losses[-1]) < 1e-4


def test_sft_refuses_bad_datasets(tok):
    with pytest.raises(CourseError, match="columns"):
        train_sft_stage(load_model("tiny", device="cpu"), [{"text": "hello"}], tok, max_steps=1, progress=False)
    with pytest.raises(CourseError, match="loss_on"):
        train_sft_stage(load_model("tiny", device="cpu"), [{"instruction": "a", "response": "b"}], tok, max_steps=1, progress=False, loss_on="prompt")


def test_evaluate_exact_match_scores_both_ways(tok, data):
    recs = data["heldout_instances"][:6]
    res = evaluate_exact_match(load_model("tiny", device="cpu"), tok, recs, max_new_tokens=8)
    assert res["n"] == 6 and set(res["per_task"]) <= {"sentiment", "topic", "uppercase"}
    assert all(p["correct"] == (p["prediction"].strip() == p["response"]) for p in res["predictions"])
    with pytest.raises(CourseError, match="empty"):
        evaluate_exact_match(None, tok, [])
