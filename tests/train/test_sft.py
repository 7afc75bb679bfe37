"""train.sft: SFTConfig and its validation, the tutorial dict's mapping, unknown keys refused, transformers-5 arguments,
training reduces the response loss, resume equals uninterrupted, evaluation scores both ways."""

import json
import re
import shutil

import pytest

from instruct_course.core import CourseError, pick_device
from instruct_course.data.world import make_splits
from instruct_course.models import load_model
from instruct_course.train.sft import (
    INSTRUCTION_TRAINING_CONFIG_PROVENANCE,
    SFTConfig,
    evaluate_exact_match,
    instruction_training_config,
    resolve_sft_config,
    sft_config_from_tutorial,
    train_sft_stage,
    training_arguments,
)

ON_CUDA = pick_device()[0].type == "cuda"


@pytest.fixture(scope="module")
def data():
    "A small world: 40 instances of 3 trained families, one held-out family."
    return make_splits(
        seed=0,
        n_train=40,
        n_eval=4,
        families=["sentiment", "topic", "uppercase", "antonym"],
        heldout_families=["antonym"],
    )


def losses(out_dir) -> list[float]:
    log = json.loads((out_dir / "log_history.json").read_text())
    return [h["loss"] for h in log["log_history"] if "loss" in h]


# ---------- SFTConfig ----------


def test_every_tutorial_value_has_provenance():
    assert set(instruction_training_config) == set(INSTRUCTION_TRAINING_CONFIG_PROVENANCE)
    assert (
        instruction_training_config["learning_rate"] == 2e-5
        and instruction_training_config["evaluation_strategy"] == "epoch"
    )


def test_defaults_are_the_course_values():
    c = SFTConfig()
    assert (c.learning_rate, c.batch_size, c.max_steps, c.max_seq_length, c.weight_decay) == (2e-3, 32, 700, 160, 0.0)
    assert (c.warmup_ratio, c.logging_steps, c.eval_steps, c.save_steps) == (0.03, 25, 100, 100)
    assert (c.train_sampling_strategy, c.style, c.fp16) == ("random", "tutorial", False)


@pytest.mark.parametrize(
    "bad, phrase",
    [
        ({"learning_rate": 0}, "learning_rate must be a number > 0"),
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"learning_rate": "2e-3"}, "learning_rate"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"batch_size": 8.0}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"max_steps": 0}, "max_steps must be a positive int, or None"),
        ({"max_steps": -1}, "max_steps"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"warmup_ratio": 1.0}, "warmup_ratio must be a number in [0, 1)"),
        ({"warmup_ratio": -0.1}, "warmup_ratio"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"max_seq_length": 0}, "max_seq_length"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"logging_steps": 0}, "logging_steps"),
        ({"eval_steps": -5}, "eval_steps"),
        ({"save_steps": 0}, "save_steps"),
        ({"eval_strategy": "epochs"}, "eval_strategy must be one of"),
        ({"save_strategy": "best"}, "save_strategy must be one of"),
        ({"fp16": "yes"}, "fp16 must be True or False"),
        ({"train_sampling_strategy": "sorted"}, "train_sampling_strategy must be one of"),
        ({"style": "llama"}, "style must be one of"),
        ({"train_sampling_strategy": "batch_rebalance"}, "gradient_accumulation_steps >= 2"),
    ],
)
def test_sft_config_refuses_bad_values(bad, phrase):
    with pytest.raises(CourseError, match=re.escape(phrase)):
        SFTConfig(**bad)


@pytest.mark.parametrize(
    "good",
    [
        {"max_steps": None},
        {"max_steps": 1, "epochs": 0.5},
        {"warmup_ratio": 0.0, "weight_decay": 0.1},
        {"eval_strategy": "epoch", "save_strategy": "no"},
        {"train_sampling_strategy": "batch_rebalance", "gradient_accumulation_steps": 2},
        {"style": "alpaca"},
    ],
)
def test_sft_config_accepts_good_values(good):
    c = SFTConfig(**good)
    assert all(getattr(c, k) == v for k, v in good.items())


@pytest.mark.parametrize(
    "config, overrides, phrase",
    [
        (None, {"lerning_rate": 1e-3}, "'lerning_rate' (did you mean 'learning_rate'?)"),
        ({"lerning_rate": 1e-3}, {}, "unknown SFTConfig setting(s): 'lerning_rate'"),
        (None, {"evaluation_strategy": "epoch"}, "renamed eval_strategy"),
        (None, {"per_device_train_batch_size": 8}, "TRL's name: use 'batch_size'"),
        (None, {"num_train_epochs": 1}, "use 'epochs'"),
        (None, {"max_length": 128}, "use 'max_seq_length'"),
        (None, {"sampling": "random"}, "use 'train_sampling_strategy'"),
        (None, {"group_by_length": True}, "train_sampling_strategy='group_by_length'"),
        (None, {"xyz": 1}, "Valid: learning_rate, batch_size"),
        ("fast", {}, "config must be a SFTConfig"),
    ],
)
def test_unknown_keys_raise_with_the_valid_ones(config, overrides, phrase):
    with pytest.raises(CourseError, match=re.escape(phrase)):
        resolve_sft_config(config, **overrides)


def test_resolve_merges_config_then_overrides():
    assert resolve_sft_config() == SFTConfig()
    assert resolve_sft_config({"batch_size": 16}, batch_size=8).batch_size == 8
    c = resolve_sft_config(SFTConfig(learning_rate=1e-3), max_steps=10)
    assert (c.learning_rate, c.max_steps, c.batch_size) == (1e-3, 10, 32)
    with pytest.raises(CourseError, match="max_steps"):  # overrides are validated too
        resolve_sft_config(SFTConfig(), max_steps=0)


# ---------- the tutorial's dict ----------


def test_tutorial_dict_maps_onto_sft_config():
    c = sft_config_from_tutorial(fp16=False)
    assert (c.learning_rate, c.batch_size, c.epochs, c.warmup_ratio, c.weight_decay) == (2e-5, 32, 3, 0.03, 0.1)
    assert (c.max_seq_length, c.gradient_accumulation_steps, c.logging_steps) == (512, 4, 100)
    assert (c.eval_strategy, c.save_strategy, c.max_steps, c.fp16) == ("epoch", "epoch", None, False)
    assert sft_config_from_tutorial({"learning_rate": 1e-4}).learning_rate == 1e-4  # a partial dict: course defaults
    assert sft_config_from_tutorial({"learning_rate": 1e-4}).max_steps is None


def test_tutorial_fp16_is_refused_without_cuda():
    if ON_CUDA:
        assert sft_config_from_tutorial(instruction_training_config).fp16
    else:
        with pytest.raises(CourseError, match="needs a CUDA GPU.*fp16=False"):
            sft_config_from_tutorial(instruction_training_config)
        with pytest.raises(CourseError, match="fp16=True needs a CUDA GPU"):
            training_arguments("/tmp/never", SFTConfig(fp16=True))


@pytest.mark.parametrize(
    "d, phrase",
    [
        ({**instruction_training_config, "fp16": False, "lr": 1}, "'lr'"),
        ({"evaluation_strategy": "epoch", "eval_strategy": "no"}, "not both"),
        ({"evaluation_strategy": "sometimes"}, "eval_strategy must be one of"),
    ],
)
def test_tutorial_dict_refuses_bad_keys(d, phrase):
    with pytest.raises(CourseError, match=phrase):
        sft_config_from_tutorial(d)


def test_tutorial_config_translates_to_transformers5(tmp_path):
    args = training_arguments(tmp_path, sft_config_from_tutorial(fp16=ON_CUDA), has_eval=True)
    assert args.learning_rate == 2e-5 and args.gradient_accumulation_steps == 4
    assert str(args.eval_strategy.value if hasattr(args.eval_strategy, "value") else args.eval_strategy) == "epoch"
    assert args.max_steps == -1 and args.num_train_epochs == 3 and args.weight_decay == 0.1
    assert not args.fp16 or ON_CUDA  # no fp16 on a CPU
    with pytest.raises(CourseError, match="evaluation_strategy"):  # the raw dict is not a config: map it first
        training_arguments(tmp_path, instruction_training_config)


def test_default_training_arguments_are_unchanged(tmp_path):
    "The values the course trained with before SFTConfig existed: the demo's numbers depend on them."
    a = training_arguments(tmp_path, seed=3)
    assert (a.learning_rate, a.per_device_train_batch_size, a.per_device_eval_batch_size) == (2e-3, 32, 32)
    assert (a.max_steps, a.warmup_steps, a.weight_decay, a.gradient_accumulation_steps) == (700, 0.03, 0.0, 1)
    assert (a.logging_steps, a.eval_steps, a.save_steps, a.save_total_limit) == (25, 100, 100, 2)
    assert str(a.lr_scheduler_type.value) == "cosine" and a.train_sampling_strategy == "random"
    assert (a.seed, a.data_seed, a.eval_strategy.value, a.save_strategy.value) == (3, 3, "no", "steps")
    assert training_arguments(tmp_path, has_eval=True).eval_strategy.value == "steps"


# ---------- training ----------


def test_sft_trains_resumes_and_saves_safetensors(tok, data, tmp_path):
    kw = dict(max_steps=12, save_steps=6, eval_steps=6, logging_steps=1, batch_size=8, progress=False)
    train_sft_stage(
        load_model("tiny", device="cpu"),
        data["train"],
        tok,
        output_dir=tmp_path / "a",
        eval_dataset=data["heldout_instances"],
        **kw,
    )
    la = losses(tmp_path / "a")
    log = json.loads((tmp_path / "a" / "log_history.json").read_text())
    assert la[-1] < la[0]
    assert any("eval_loss" in h for h in log["log_history"])
    assert log["config"]["batch_size"] == 8 and log["config"]["max_steps"] == 12 and log["loss_on"] == "response"
    assert (tmp_path / "a" / "model.safetensors").exists() and not list((tmp_path / "a").glob("*.bin"))
    # resume from the step-6 checkpoint: same final loss as uninterrupted
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
    assert abs(losses(tmp_path / "b")[-1] - la[-1]) < 1e-4


def test_a_config_object_trains_like_the_same_keywords(tok, data, tmp_path):
    "config=SFTConfig(...), config={...} and keyword overrides are one and the same run."
    kw = dict(max_steps=3, logging_steps=1, batch_size=8, save_steps=1000)
    runs = {
        "kw": dict(**kw),
        "obj": dict(config=SFTConfig(**kw)),
        "dict": dict(config={**kw, "batch_size": 4}, batch_size=8),  # the keyword wins over the dict
    }
    for name, how in runs.items():
        train_sft_stage(
            load_model("tiny", device="cpu"), data["train"], tok, output_dir=tmp_path / name, progress=False, **how
        )
    assert losses(tmp_path / "kw") == losses(tmp_path / "obj") == losses(tmp_path / "dict")
    # the failure side: another learning rate gives other losses
    train_sft_stage(
        load_model("tiny", device="cpu"),
        data["train"],
        tok,
        output_dir=tmp_path / "lr",
        progress=False,
        learning_rate=1e-4,
        **kw,
    )
    assert losses(tmp_path / "lr") != losses(tmp_path / "kw")


@pytest.mark.parametrize(
    "bad, phrase",
    [
        ({"lerning_rate": 1e-3}, "did you mean 'learning_rate'"),  # issue 14: a typo must not train at the default
        ({"config": {"lerning_rate": 1e-3}}, "did you mean 'learning_rate'"),
        ({"sampling": "random"}, "train_sampling_strategy"),
        ({"max_steps": 0}, "max_steps"),
        ({"loss_on": "prompt"}, "loss_on"),
        ({"epochs": 0}, "epochs"),
    ],
)
def test_sft_refuses_bad_settings_before_training(tok, data, tmp_path, bad, phrase):
    with pytest.raises(CourseError, match=phrase):
        train_sft_stage(
            load_model("tiny", device="cpu"), data["train"], tok, output_dir=tmp_path / "x", progress=False, **bad
        )
    assert not (tmp_path / "x").exists()  # nothing trained, nothing written


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


def test_evaluate_exact_match_scores_both_ways(tok, tiny, data):
    recs = data["heldout_instances"][:6]
    res = evaluate_exact_match(tiny, tok, recs, max_new_tokens=8)
    assert res["n"] == 6 and set(res["per_task"]) <= {"sentiment", "topic", "uppercase"}
    assert all(p["correct"] == (p["prediction"].strip() == p["response"]) for p in res["predictions"])
    with pytest.raises(CourseError, match="empty"):
        evaluate_exact_match(None, tok, [])


def test_batch_rebalance_splits_the_same_batch_and_follows_the_seed(tok, data, tmp_path):
    """Micro-batches of similar length inside each random optimizer-step batch: how the batch is cut changes nothing,
    the seed does."""

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
            train_sampling_strategy="batch_rebalance",
            **kw,
        )
        return losses(tmp_path / name)

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
            train_sampling_strategy="batch_rebalance",
        )
    with pytest.raises(CourseError, match="train_sampling_strategy"):
        train_sft_stage(
            load_model("tiny", device="cpu"),
            data["train"],
            tok,
            output_dir=tmp_path / "e",
            max_steps=1,
            progress=False,
            train_sampling_strategy="sorted",
        )


# ---------- one output folder, one run (issue 14, case 3) ----------


def run_quick(tok, data, out, **kw):
    kw = {"max_steps": 2, "batch_size": 4, "save_steps": 1, "logging_steps": 1, "progress": False, **kw}
    return train_sft_stage(load_model("tiny", device="cpu"), data["train"][:16], tok, output_dir=out, **kw)


def test_another_runs_folder_is_refused_and_never_resumed(tok, data, tmp_path):
    "The issue's case: a 7-step run in the folder, then a 2-step request that resumes. It must not resume that run."
    run_quick(tok, data, tmp_path, max_steps=7)
    (tmp_path / "notes.txt").write_text("mine")
    before = {p.name for p in tmp_path.iterdir()}
    for kw in ({}, {"resume_from_checkpoint": True}):
        with pytest.raises(CourseError, match=r"holds another run \(config.max_steps: 7 there, 2 now\)"):
            run_quick(tok, data, tmp_path, **kw)
    assert {p.name for p in tmp_path.iterdir()} == before
    with pytest.raises(CourseError, match="belongs to another run"):
        run_quick(tok, data, tmp_path / "fresh", resume_from_checkpoint=tmp_path / "checkpoint-7")
    run_quick(tok, data, tmp_path, overwrite_output_dir=True)
    log = json.loads((tmp_path / "log_history.json").read_text())
    assert log["global_step"] == 2 and (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    record = json.loads((tmp_path / "course_run.json").read_text())
    assert record["config"]["max_steps"] == 2 and record["loss_on"] == "response" and record["seed"] == 0
    assert json.loads((tmp_path / "checkpoint-2" / "course_run.json").read_text()) == record


def test_resume_needs_a_checkpoint_of_this_run(tok, data, tmp_path):
    with pytest.raises(CourseError, match="holds no complete checkpoint"):  # not transformers' ValueError
        run_quick(tok, data, tmp_path / "a", resume_from_checkpoint=True)
    run_quick(tok, data, tmp_path / "b", max_steps=4)
    with pytest.raises(CourseError, match=r"belongs to another run \(train_data.sha256"):  # other data
        train_sft_stage(
            load_model("tiny", device="cpu"),
            data["train"][16:32],
            tok,
            output_dir=tmp_path / "c",
            max_steps=4,
            batch_size=4,
            save_steps=1,
            logging_steps=1,
            progress=False,
            resume_from_checkpoint=tmp_path / "b" / "checkpoint-4",
        )
    with pytest.raises(CourseError, match=r"model.sha256"):  # another starting model
        train_sft_stage(
            load_model("tiny-sft", device="cpu"),
            data["train"][:16],
            tok,
            output_dir=tmp_path / "b",
            max_steps=4,
            batch_size=4,
            save_steps=1,
            logging_steps=1,
            progress=False,
        )
    with pytest.raises(CourseError, match="one or the other"):
        run_quick(tok, data, tmp_path / "b", max_steps=4, overwrite_output_dir=True, resume_from_checkpoint=True)


def test_empty_datasets_say_empty(tok, data, tmp_path):
    for kw, phrase in (({"data": {"train": []}}, "dataset is empty"), ({"eval_dataset": []}, "eval_dataset is empty")):
        with pytest.raises(CourseError, match=phrase):
            run_quick(tok, kw.get("data", data), tmp_path / "x", **{k: v for k, v in kw.items() if k != "data"})
    assert not (tmp_path / "x").exists()
