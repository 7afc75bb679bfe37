"The explorers, driven through their Python API: set a widget's value, check that the output changes as it should."

import pytest

from instruct_course.core import CourseError
from instruct_course.widgets import (
    MaskExplorer,
    ModelComparer,
    TrainingDashboard,
    svg_bars,
    svg_lines,
)


def test_mask_explorer_follows_every_control():
    mx = MaskExplorer(["tiny"], max_length=48)
    start = dict(mx.counts)
    assert start["trained"] >= 2 and start["padding"] > 0 and start["prompt_tokens_cut"] == 0
    view = mx.view.value
    mx.response.value = "le chat noir mange la pomme rouge"
    assert mx.counts["trained"] > start["trained"] and mx.view.value != view
    assert mx.view.value.count('class="tok trained"') == mx.counts["trained"]
    assert mx.view.value.count('class="tok padding"') == mx.counts["padding"]
    mx.style.value = "alpaca"
    assert mx.counts["masked"] > start["masked"]  # Alpaca's preamble is a longer prompt
    mx.max_length.value = 20
    assert mx.counts["prompt_tokens_cut"] > 0 and mx.counts["tokens"] == 20 and mx.counts["padding"] == 0
    mx.truncation.value = "drop"
    assert "dropped" in mx.counts["error"] and mx.view.value == ""
    mx.truncation.value = "left"
    mx.max_length.value = 4  # the response alone does not fit
    assert "does not fit" in mx.counts["error"]


def test_mask_explorer_refuses_an_empty_response():
    mx = MaskExplorer(["tiny"])
    mx.response.value = "   "
    assert "empty response" in mx.counts["error"] and "empty response" in mx.summary.value


def test_model_comparer_shows_each_model_and_errors_in_place():
    cmp = ModelComparer({"base": "tiny", "sft": "tiny-sft", "missing": "./no/such/model"})
    out = cmp.run()
    assert out["sft"] == "GREEN APPLE" and out["base"] != out["sft"]
    assert out["missing"] is None and "does not exist" in cmp.panes["missing"].value
    cmp.input.value = "red old cat"
    changed = cmp.run()["sft"]
    assert changed != out["sft"] and changed == changed.upper()  # the new input, still in capitals
    cmp.temperature.value, cmp.max_new_tokens.value = 1.5, 3
    assert len(cmp.run()["base"].split()) <= 3
    with pytest.raises(CourseError, match="non-empty dict"):
        ModelComparer({})


def test_dashboard_stops_a_real_trainer_and_keeps_what_was_trained(tok, splits, tmp_path):
    from instruct_course.models import load_model
    from instruct_course.train.sft import train_sft_stage

    dash = TrainingDashboard(["loss"], title="sft")

    cb = dash.trainer_callback()
    original = cb.on_step_end  # below: the learner presses Stop during step 2

    def on_step_end(args, state, control, **kw):
        if state.global_step == 2:
            dash.stop()
        return original(args, state, control, **kw)

    cb.on_step_end = on_step_end
    model = load_model("tiny", device="cpu")
    trained = dash.start(
        train_sft_stage,
        model,
        splits["train"][:64],
        tok,
        output_dir=tmp_path / "sft",
        callbacks=[cb],
        progress=False,
        max_steps=20,
        batch_size=8,
        logging_steps=1,
        save_steps=100,
    ).result()
    assert trained is not None and 2 <= len(dash.history["loss"]) <= 3  # stopped at step 2 of 20
    assert dash.charts.value.count('class="series"') == 1 and "step 2" in dash.status.value
    assert (tmp_path / "sft" / "model.safetensors").exists()


def test_dashboard_loop_callback_and_errors():
    dash = TrainingDashboard(["reward", "kl"])
    cb = dash.loop_callback()
    assert cb({"step": [0], "reward": [0.5], "kl": [0.0]}) is False
    dash.stop()
    assert cb({"step": [1], "reward": [0.7], "kl": [0.1]}) is True
    assert dash.history == {"reward": [0.5, 0.7], "kl": [0.0, 0.1]}
    failing = TrainingDashboard(["loss"]).start(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result()
    assert "failed" in failing.status.value


def test_svg_helpers():
    assert svg_lines({"x": [1.0, float("nan"), 3.0]}).count("<polyline") == 1
    assert 'width="0.0"' in svg_bars({"none": 0.0})


def test_dashboard_stops_ppo_and_dpo_loops(tok, splits):
    from instruct_course.data.preferences import gold_reward
    from instruct_course.models import load_model
    from instruct_course.train.dpo import train_dpo
    from instruct_course.train.ppo import PPOConfig, train_ppo

    def press_stop_after(dash, n):
        cb = dash.loop_callback()

        def callback(history):
            if len(dash.steps) + 1 >= n:
                dash.stop()
            return cb(history)

        return callback

    dash = TrainingDashboard(["gold_reward", "kl"], title="ppo")
    cfg = PPOConfig(steps=10, batch_size=4, mini_batch_size=4, ppo_epochs=1, max_new_tokens=8)
    reward = lambda recs, texts: [gold_reward(r, t) for r, t in zip(recs, texts)]  # noqa: E731
    policy, hist = train_ppo(
        "tiny-sft", reward, splits["train"][:16], cfg, progress=False, callback=press_stop_after(dash, 2)
    )
    assert len(hist["step"]) == 2 and len(dash.history["kl"]) == 2 and policy is not None

    pairs = [{"prompt": "Instruction: Say hi.\nResponse:", "chosen": "hi", "rejected": "no"}] * 4
    dash = TrainingDashboard(["loss", "margin"], title="dpo")
    policy, ref = load_model("tiny-sft", device="cpu"), load_model("tiny-sft", device="cpu")
    _, hist = train_dpo(
        policy, ref, tok, pairs, {"max_steps": 10, "batch_size": 2}, progress=False, callback=press_stop_after(dash, 3)
    )
    assert len(hist["loss"]) == 3 and len(dash.history["loss"]) == 3
