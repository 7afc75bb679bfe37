"""train.reward: -logsigmoid loss (pitfall 8), last-token reading (pitfall 7), RewardConfig, training, measurement,
the shipped tiny-rm."""

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from instruct_course.core import CourseError, seed_everything
from instruct_course.data.masking import format_prompt
from instruct_course.data.preferences import build_preference_data
from instruct_course.experiments.reward import shipped_rm_stats
from instruct_course.metrics import calibration_table
from instruct_course.models import load_model, shipped_model_dir
from instruct_course.train.reward import (
    RewardModel,
    compute_reward_loss,
    last_token_index,
    load_reward_model,
    pad_batch,
)
from instruct_course.train.reward_training import (
    TRL_NAMES,
    GroupedPairSampler,
    RewardConfig,
    RewardModelTrainer,
    RewardPairCollator,
    evaluate_reward_model,
    gold_agreement,
    pairwise_accuracy,
    plot_calibration,
    reward_config,
    reward_training_arguments,
    tokenize_pairs,
    train_reward_model,
)

SFT = "tiny-sft"


@pytest.fixture(scope="module")
def pairs(tiny_sft, tok, splits):
    recs = splits["train"][:24]
    return (
        build_preference_data(tiny_sft, tok, recs, k=4, seed=0, progress=False),
        dict(build_preference_data.last_stats),
        recs,
    )


def test_grouped_sampler_keeps_groups_together():
    groups = [0, 0, 0, 1, 1, 2, 3, 3, 3]
    order = list(GroupedPairSampler(groups, seed=0))
    assert sorted(order) == list(range(len(groups)))
    seen = [groups[i] for i in order]
    assert all(seen.count(g) == sum(1 for j in range(len(seen)) if seen[j] == g) for g in set(seen))
    runs = [g for j, g in enumerate(seen) if j == 0 or seen[j - 1] != g]
    assert len(runs) == len(set(groups))  # each group is one contiguous run


# ---------------------------------------------------------------- loss (pitfall 8)


def _margin_direction_ok(loss_fn) -> bool:
    rc, rr = torch.tensor([1.0, 0.2]), torch.tensor([0.0, -0.3])
    hand = -F.logsigmoid(rc - rr - 0.5).mean()
    return (
        loss_fn(rc, rr) < loss_fn(rr, rc)
        and loss_fn(rc, rr, margin=0.5) > loss_fn(rc, rr)
        and torch.allclose(loss_fn(rc, rr, margin=0.5), hand)
    )


def test_loss_sign_and_margin_direction():
    assert _margin_direction_ok(compute_reward_loss)
    flipped = lambda c, r, margin=None: compute_reward_loss(r, c, margin=margin)  # failure side: wrong sign
    plus = lambda c, r, margin=None: -F.logsigmoid(c - r + (margin or 0.0)).mean()  # failure side: margin added
    assert not _margin_direction_ok(flipped) and not _margin_direction_ok(plus)


def test_logsigmoid_is_stable_where_log_sigmoid_is_not():
    gap = torch.tensor([-200.0, -120.0, 0.0, 30.0], requires_grad=True)
    naive = -torch.log(torch.sigmoid(gap))
    assert torch.isinf(naive[0])  # the tutorial's loss breaks
    loss = compute_reward_loss(gap, torch.zeros(4))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(gap.grad).all()
    assert torch.allclose(-F.logsigmoid(gap.detach()), torch.tensor([200.0, 120.0, math.log(2), 0.0]), atol=1e-5)
    assert abs(loss.item() - (200 + 120 + math.log(2) + 0) / 4) < 1e-3


def test_centring_penalises_offset_only():
    rc, rr = torch.tensor([2.0, 1.0]), torch.tensor([0.0, 0.5])
    assert torch.allclose(compute_reward_loss(rc + 7, rr + 7), compute_reward_loss(rc, rr))
    assert compute_reward_loss(rc + 7, rr + 7, center_weight=0.01) > compute_reward_loss(rc, rr, center_weight=0.01)
    hand = -F.logsigmoid(rc - rr).mean() + 0.01 * ((rc + rr) ** 2).mean()
    assert torch.allclose(compute_reward_loss(rc, rr, center_weight=0.01), hand)
    with pytest.raises(CourseError, match="differ in shape"):
        compute_reward_loss(rc, rr[:1])
    with pytest.raises(CourseError, match="no pairs"):
        compute_reward_loss(torch.zeros(0), torch.zeros(0))


# ---------------------------------------------------------------- last real token (pitfall 7)


def test_last_token_index_both_sides():
    assert last_token_index(torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])).tolist() == [2, 4, 4]
    with pytest.raises(CourseError, match="no real token"):
        last_token_index(torch.tensor([[0, 0]]))


def test_pad_batch_uses_the_shared_padding_helper():
    b = pad_batch([[5, 6, 7], [8]], 0, "left")
    assert b["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]] and b["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert b["input_ids"].dtype == torch.long
    with pytest.raises(CourseError, match="'left' or 'right'"):
        pad_batch([[1]], 0, "middle")
    with pytest.raises(CourseError, match="empty"):
        pad_batch([], 0)


def test_reward_is_read_at_last_real_token_under_left_and_right_padding(pairs, tok):
    seed_everything(0)
    rm = RewardModel.from_sft(SFT).eval()
    ps = [p for p in pairs[0] if p["source_chosen"] == "reference"][:6]
    ids = rm.encode([p["prompt"] for p in ps], [p["chosen"] for p in ps], tok)
    assert all(i[-1] == tok.eos_token_id for i in ids) and len({len(i) for i in ids}) > 1
    right, left = pad_batch(ids, tok.pad_token_id, "right"), pad_batch(ids, tok.pad_token_id, "left")
    with torch.no_grad():
        r_right, r_left = rm(**right), rm(**left)
        r_alone = torch.cat([rm(**pad_batch([i], tok.pad_token_id)) for i in ids])
        last_pos = rm.head(rm.trunk(**right).last_hidden_state[:, -1]).squeeze(-1)  # failure side: reads padding
    assert torch.allclose(r_right, r_alone, atol=1e-4) and torch.allclose(r_left, r_alone, atol=1e-4)
    assert not torch.allclose(last_pos, r_alone, atol=1e-3)
    s_right = rm.score([p["prompt"] for p in ps], [p["chosen"] for p in ps], tok, batch_size=4, padding_side="right")
    s_left = rm.score([p["prompt"] for p in ps], [p["chosen"] for p in ps], tok, batch_size=3, padding_side="left")
    assert torch.allclose(torch.tensor(s_right), torch.tensor(s_left), atol=1e-4)


def test_left_padding_needs_position_ids_with_absolute_positions(tok):
    # rotary embeddings (Llama) are shift-invariant; GPT-2's learned absolute positions are not: the fix is for them
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    rm = RewardModel(GPT2Model(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2))).eval()
    ids = [[5, 6, 7, 8, 9, tok.eos_token_id], [11, 12, tok.eos_token_id]]
    left, right = pad_batch(ids, tok.pad_token_id, "left"), pad_batch(ids, tok.pad_token_id, "right")
    with torch.no_grad():
        ours_l, ours_r = rm(**left), rm(**right)
        naive_l = rm.head(rm.trunk(**left).last_hidden_state[:, -1]).squeeze(-1)
    assert torch.allclose(ours_l, ours_r, atol=1e-5)
    assert not torch.allclose(naive_l, ours_r, atol=1e-3)


# ---------------------------------------------------------------- RewardConfig


def test_reward_config_defaults_are_the_lessons():
    c = RewardConfig()
    assert (c.learning_rate, c.batch_size, c.max_steps, c.warmup_ratio, c.center_weight) == (5e-4, 32, 400, 0.05, 0.01)
    assert (c.margin, c.max_length, c.grouped, c.seed) == (None, 256, True, 0)


BAD_CONFIGS = [
    ({"batch_size": 0}, "RewardConfig.batch_size must be a positive int"),
    ({"batch_size": 8.0}, "RewardConfig.batch_size must be a positive int"),
    ({"batch_size": True}, "RewardConfig.batch_size must be a positive int"),
    ({"max_steps": -1}, "RewardConfig.max_steps must be a positive int"),
    ({"max_length": 0}, "RewardConfig.max_length must be a positive int"),
    ({"logging_steps": None}, "RewardConfig.logging_steps must be a positive int"),
    ({"eval_steps": "50"}, "RewardConfig.eval_steps must be a positive int"),
    ({"learning_rate": 0}, "RewardConfig.learning_rate must be a number > 0"),
    ({"learning_rate": float("nan")}, "RewardConfig.learning_rate must be a number > 0"),
    ({"learning_rate": "5e-4"}, "RewardConfig.learning_rate must be a number > 0"),
    ({"warmup_ratio": 1.0}, r"RewardConfig.warmup_ratio must be a number in \[0, 1\)"),
    ({"warmup_ratio": -0.1}, r"RewardConfig.warmup_ratio must be a number in \[0, 1\)"),
    ({"weight_decay": -1e-3}, "RewardConfig.weight_decay must be a number >= 0"),
    ({"center_weight": -0.01}, "RewardConfig.center_weight must be a number >= 0"),
    ({"center_weight": None}, "RewardConfig.center_weight must be a number >= 0"),
    ({"margin": float("inf")}, "RewardConfig.margin must be None or a finite number"),
    ({"grouped": 1}, "RewardConfig.grouped must be True or False"),
    ({"seed": -1}, "RewardConfig.seed must be an int >= 0"),
]


@pytest.mark.parametrize("values,message", BAD_CONFIGS, ids=[str(v) for v, _ in BAD_CONFIGS])
def test_reward_config_refuses_bad_values(values, message):
    with pytest.raises(CourseError, match=message):
        RewardConfig(**values)
    with pytest.raises(CourseError, match=message):
        reward_config(**values)


def test_reward_config_accepts_good_values():
    c = RewardConfig(learning_rate=1, margin=-0.5, center_weight=0, warmup_ratio=0.0, weight_decay=0.1)
    assert c.learning_rate == 1 and c.margin == -0.5


def test_reward_config_merges_and_refuses_unknown_keys():
    assert reward_config() == RewardConfig()
    assert reward_config({"batch_size": 8}, max_steps=3) == RewardConfig(batch_size=8, max_steps=3)
    base = RewardConfig(batch_size=8)
    assert reward_config(base, batch_size=4).batch_size == 4 and base.batch_size == 8  # the original is untouched
    valid = [f.name for f in dataclasses.fields(RewardConfig)]
    with pytest.raises(CourseError, match=r"'lerning_rate' \(did you mean 'learning_rate'\?\)") as e:
        reward_config(lerning_rate=1e-3)
    assert all(v in str(e.value) for v in valid)  # the valid keys are listed
    with pytest.raises(CourseError, match="lerning_rate"):
        reward_config({"lerning_rate": 1e-3})
    for trl_name, ours in TRL_NAMES.items():
        with pytest.raises(CourseError, match=f"'{trl_name}' \\(TRL's name: use '{ours}'\\)"):
            reward_config(**{trl_name: 1})
    with pytest.raises(CourseError, match="config must be a RewardConfig, a dict of its fields or None"):
        reward_config("fast")


def test_reward_training_arguments_follow_the_config(tmp_path):
    a = reward_training_arguments(tmp_path, RewardConfig(batch_size=4, max_steps=7, seed=3), has_eval=True)
    assert (a.per_device_train_batch_size, a.per_device_eval_batch_size, a.max_steps) == (4, 8, 7)
    assert (a.seed, a.data_seed, a.warmup_steps, a.eval_strategy.value) == (3, 3, 0.05, "steps")
    with pytest.raises(CourseError, match="unknown RewardConfig setting"):
        reward_training_arguments(tmp_path, {"per_device_train_batch_size": 4})


# ---------------------------------------------------------------- training


def test_train_reward_model_refuses_bad_arguments_before_writing(pairs, tmp_path):
    ps = pairs[0]
    out = tmp_path / "rm"
    with pytest.raises(CourseError, match=r"train_reward_model \(base\) needs a model: a shipped name \("):
        train_reward_model(ps, None, out)
    with pytest.raises(CourseError, match="unknown RewardConfig setting"):
        train_reward_model(ps, SFT, out, lerning_rate=1e-3)  # issue 14 item 4, for the reward model
    with pytest.raises(CourseError, match="RewardConfig.batch_size"):
        train_reward_model(ps, SFT, out, {"batch_size": 0})
    with pytest.raises(CourseError, match="needs out_dir"):
        train_reward_model(ps, SFT, None)
    with pytest.raises(CourseError, match="train pairs: no preference pairs"):
        train_reward_model([], SFT, out)
    with pytest.raises(CourseError, match="eval pairs"):
        train_reward_model(ps, SFT, out, eval_pairs=[{"prompt": "P", "chosen": "a"}])
    with pytest.raises(CourseError, match="did you mean 'tiny-sft'"):
        train_reward_model(ps, "tiny-sf", out)
    assert not out.exists()


def test_train_save_reload_safetensors_only(pairs, tmp_path):
    ps = pairs[0]
    m, met = train_reward_model(
        ps,
        base=SFT,
        out_dir=tmp_path / "rm",
        max_steps=4,
        batch_size=8,
        eval_pairs=ps[:16],
        eval_steps=2,
        logging_steps=1,
        progress=False,
    )
    assert met["steps"] == 4 and met["nonfinite_steps"] == 0 and 0 <= met["eval_accuracy"] <= 1
    assert met["config"] == dataclasses.asdict(RewardConfig(max_steps=4, batch_size=8, eval_steps=2, logging_steps=1))
    assert any("eval_accuracy" in h for h in met["log_history"])
    files = {f.name for f in (tmp_path / "rm").iterdir()}
    assert {"model.safetensors", "reward_config.json", "config.json", "tokenizer.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    m2, tk2 = load_reward_model(tmp_path / "rm")
    a = m.score([ps[0]["prompt"]], [ps[0]["chosen"]], tk2)
    b = m2.score([ps[0]["prompt"]], [ps[0]["chosen"]], tk2)
    assert abs(a[0] - b[0]) < 1e-5
    with pytest.raises(CourseError, match="not a saved RewardModel"):
        RewardModel.from_pretrained(SFT)


def test_a_config_object_and_overrides_train_alike(pairs, tmp_path):
    ps = pairs[0][:32]
    cfg = RewardConfig(max_steps=2, batch_size=8, logging_steps=1)
    m1, met1 = train_reward_model(ps, SFT, tmp_path / "a", cfg, progress=False)
    m2, met2 = train_reward_model(ps, SFT, tmp_path / "b", max_steps=2, batch_size=8, logging_steps=1, progress=False)
    assert met1["config"] == met2["config"] and met1["train_accuracy"] == met2["train_accuracy"]
    assert all(torch.equal(x, y) for x, y in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_training_raises_accuracy(pairs, tok, tmp_path):
    ps = pairs[0]
    seed_everything(0)
    before = pairwise_accuracy(RewardModel.from_sft(SFT).eval(), tok, ps)
    m, met = train_reward_model(ps, base=SFT, out_dir=tmp_path / "rm", max_steps=15, batch_size=16, progress=False)
    assert met["train_accuracy"] > before and met["train_accuracy"] >= 0.8, (before, met["train_accuracy"])


def test_nonfinite_reward_step_is_skipped_and_counted(pairs, tok, tmp_path):
    seed_everything(0)
    model = RewardModel.from_sft(SFT)
    calls = {"n": 0}
    fwd = model.forward

    def flaky(*a, **k):
        calls["n"] += 1
        r = fwd(*a, **k)
        return r * float("nan") if calls["n"] == 2 else r

    model.forward = flaky
    args = reward_training_arguments(tmp_path, {"max_steps": 4, "batch_size": 4, "logging_steps": 1}, progress=False)
    tr = RewardModelTrainer(
        model=model,
        args=args,
        train_dataset=tokenize_pairs(pairs[0], tok),
        processing_class=tok,
        data_collator=RewardPairCollator(tok),
    )
    tr.train()
    assert tr.nonfinite_steps == 1 and tr.state.global_step == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---------------------------------------------------------------- measurement


class _Oracle:
    "A stand-in reward model that scores with the gold labeler (or against it)."

    def __init__(self, table, sign=1.0):
        self.table, self.sign = table, sign

    def score(self, prompts, responses, tokenizer=None, batch_size=64, **_):
        return [self.sign * self.table[(p, r)] for p, r in zip(prompts, responses)]


def _gold_table(ps):
    table = {}
    for p in ps:
        table[(p["prompt"], p["chosen"])] = p["gold_chosen"]
        table[(p["prompt"], p["rejected"])] = p["gold_rejected"]
    return table


def test_gold_agreement_perfect_and_reversed(pairs):
    ps = pairs[0]
    table = _gold_table(ps)
    good, bad = gold_agreement(_Oracle(table), None, ps), gold_agreement(_Oracle(table, -1.0), None, ps)
    assert good["top1_agreement"] == 1.0 and abs(good["kendall_tau"] - 1) < 1e-9 and good["pearson"] > 0.99
    assert bad["top1_agreement"] < 0.5 and bad["kendall_tau"] < 0 and bad["pearson"] < -0.99
    assert pairwise_accuracy(_Oracle(table), None, ps) == 1.0
    assert pairwise_accuracy(_Oracle(table, -1.0), None, ps) == 0.0
    with pytest.raises(CourseError, match="gold_chosen"):
        gold_agreement(_Oracle(table), None, [{"prompt": "P", "chosen": "a", "rejected": "b"}])


def test_evaluate_reward_model_breaks_accuracy_down(pairs):
    ps = pairs[0]
    ev = evaluate_reward_model(_Oracle(_gold_table(ps)), None, ps)
    assert ev["accuracy"] == 1.0 and set(ev["per_task"].values()) == {1.0}
    assert set(ev["per_rejected_source"]) == {str(p["source_rejected"]) for p in ps}
    assert ev["pairs"] == len(ev["chosen_rewards"]) == len(ps) and ev["prompts"] == len({p["group"] for p in ps})
    no_task = [{k: v for k, v in p.items() if k != "task"} for p in ps]  # a missing key is one bucket, not NaN
    assert evaluate_reward_model(_Oracle(_gold_table(ps)), None, no_task)["per_task"] == {"None": 1.0}


def test_calibration_table_tells_calibrated_from_overconfident():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(4000, generator=g) * 2
    y = torch.rand(4000, generator=g) < torch.sigmoid(d)  # outcomes drawn from the predicted probabilities
    rc = torch.where(y, d, -d)
    rr = torch.zeros(4000)  # orient each pair so that the chosen one is first
    calibrated = calibration_table(rc.numpy(), rr.numpy())["ece"]
    over = calibration_table(5 * rc.numpy(), rr.numpy())["ece"]
    assert calibrated < 0.03 < over


def test_plot_calibration_draws_the_metrics_table():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rc, rr = [3.0, 2.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0]
    ax, tab = plot_calibration(rc, rr, n_bins=5)
    assert tab == calibration_table(rc, rr, 5) and "ECE" in ax.get_title()
    plt.close(ax.figure)


# ---------------------------------------------------------------- the shipped reward model


def test_shipped_tiny_rm(tiny_rm, tok):
    d = shipped_model_dir("tiny-rm")
    assert sum(f.stat().st_size for f in d.iterdir()) < 6 * 2**20
    stats = shipped_rm_stats()
    # 87.5% on the demo's SFT model, 90.1% on the earlier 700-step one (lab notes, 06c)
    assert stats["heldout"]["accuracy"] >= 0.85 and stats["eval"]["split"].endswith("['heldout_instances']")
    m, tk = tiny_rm
    assert tk.get_vocab() == tok.get_vocab()
    rec = {
        "instruction": "Convert the text to uppercase.",
        "input": "red cat",
        "response": "RED CAT",
        "task": "uppercase",
    }
    p = format_prompt(rec["instruction"], rec["input"])
    s = m.score([p] * 3, ["RED CAT", "RED CAT\nInstruction: Convert", "RED CAT CAT CAT CAT CAT CAT CAT"], tk)
    assert s[0] > s[1] and s[0] > s[2], s


def test_reward_models_resolve_through_models(tmp_path):
    m, _ = load_reward_model("tiny-rm", device=None)
    m2 = RewardModel.from_pretrained(shipped_model_dir("tiny-rm"))
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))
    with pytest.raises(CourseError, match="not a saved RewardModel"):
        load_reward_model("tiny-sft")
    with pytest.raises(CourseError, match="load_reward_model needs a model"):
        load_reward_model(None)
    with pytest.raises(CourseError, match="did you mean 'tiny-rm'"):
        load_reward_model("tiny-r")
    with pytest.raises(CourseError, match="does not exist"):
        load_reward_model(str(tmp_path / "nowhere"))
    with pytest.raises(CourseError, match="load_reward_model"):  # and the causal-LM loader points here
        load_model("tiny-rm")


def test_saved_reward_model_is_a_transformers_sequence_classifier(tmp_path):
    "AutoModelForSequenceClassification alone loads it; its logits are our rewards minus the head's bias."
    from transformers import AutoModelForSequenceClassification

    rm, tok = load_reward_model("tiny-rm")
    rm.save_pretrained(tmp_path, tok)
    seq = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    bias = json.loads((tmp_path / "reward_config.json").read_text())["score_bias"]
    assert seq.config.architectures == ["LlamaForSequenceClassification"] and seq.config.num_labels == 1
    prompts = [format_prompt("Reverse the words.", "red cat sits"), format_prompt("Say hi.")]
    ids = rm.encode(prompts, ["sits cat red", "hi"], tok)
    batch = pad_batch(ids, tok.pad_token_id, "right")
    with torch.no_grad():
        ours = rm(**batch)
        theirs = seq(**batch).logits.squeeze(-1)
    assert torch.allclose(theirs + bias, ours, atol=1e-5)
    assert abs(bias) > 0  # the shipped head has a bias, so the check above is not vacuous
    assert not torch.allclose(theirs, ours, atol=1e-5)


def test_reward_loss_matches_trl_reward_trainer(tmp_path):
    "TRL's RewardTrainer.compute_loss and compute_reward_loss agree on the same batch (centering term included)."
    from datasets import Dataset
    from trl import RewardConfig as TRLRewardConfig
    from trl import RewardTrainer

    rm, tok = load_reward_model("tiny-rm")
    seq, bias = rm.to_sequence_classifier()
    prompts = [
        format_prompt("Reverse the words.", "red cat sits"),
        format_prompt("Say hi."),
        format_prompt("Sum 2 and 3."),
    ]
    chosen = rm.encode(prompts, ["sits cat red", "hi", "5"], tok)
    rejected = rm.encode(prompts, ["red cat sits", "hello there friend", "6"], tok)
    data = Dataset.from_list([{"chosen_ids": c, "rejected_ids": r} for c, r in zip(chosen, rejected)])
    args = TRLRewardConfig(
        output_dir=str(tmp_path),
        center_rewards_coefficient=0.01,
        per_device_train_batch_size=3,
        report_to=[],
        bf16=False,
        use_cpu=True,
    )
    trainer = RewardTrainer(model=seq, args=args, train_dataset=data, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    seq.eval()
    with torch.no_grad():
        trl_loss = trainer.compute_loss(seq, dict(batch)).item()
        rewards = rm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]) - bias  # our model
    n = len(prompts)
    ours = compute_reward_loss(rewards[:n], rewards[n:], center_weight=0.01).item()
    assert abs(ours - trl_loss) < 1e-6
    swapped = compute_reward_loss(rewards[n:], rewards[:n], center_weight=0.01).item()
    assert abs(swapped - trl_loss) > 1e-3  # the check can fail: chosen and rejected swapped gives another loss
