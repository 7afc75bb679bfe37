"Reward model: gold labeler, C(K,2) pairs grouped per prompt, preference-file errors, -logsigmoid loss (pitfall 8), last-token reading (pitfall 7), training."

import json
import math
import random

import pytest
import torch
import torch.nn.functional as F

import instruct_course.train.reward as R
from instruct_course.core import CourseError, assets_dir, seed_everything
from instruct_course.data.masking import format_prompt
from instruct_course.models import load_model, load_tokenizer
from instruct_course.train.reward import (
    CORRUPTIONS,
    GOLD_WEIGHTS,
    GroupedPairSampler,
    RewardModel,
    RewardModelTrainer,
    RewardPairCollator,
    build_preference_data,
    calibration_table,
    compute_reward_loss,
    corrupt,
    expand_rankings,
    gold_agreement,
    gold_rank,
    gold_reward,
    gold_reward_parts,
    last_token_index,
    load_preferences,
    load_reward_model,
    pad_batch,
    pairwise_accuracy,
    reward_training_arguments,
    save_preferences,
    tokenize_pairs,
    train_reward_model,
    validate_preferences,
)
from instruct_course.data.world import make_splits

SFT = str(assets_dir() / "tiny-sft")


@pytest.fixture(scope="module")
def splits():
    return make_splits(seed=0)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(SFT)


@pytest.fixture(scope="module")
def policy():
    return load_model(SFT, device="cpu")


@pytest.fixture(scope="module")
def pairs(policy, tok, splits):
    recs = splits["train"][:24]
    return (
        build_preference_data(policy, tok, recs, k=4, seed=0, progress=False),
        dict(build_preference_data.last_stats),
        recs,
    )


# ---------------------------------------------------------------- gold labeler


def test_reference_beats_every_corruption_in_every_family(splits):
    rng = random.Random(0)
    recs = splits["heldout_instances"] + splits["heldout_families"] + splits["heldout_templates"]
    assert {r["task"] for r in recs} >= {"qa", "arithmetic", "code", "compare", "antonym", "translate"}
    for r in recs:
        assert gold_reward(r, r["response"]) == 1.0
        for k in CORRUPTIONS:
            c = corrupt(r, k, rng)
            assert c != r["response"] and gold_reward(r, c) < 1.0, (k, r, c)
            if k == "wrong_answer":
                assert gold_reward(r, c) <= 1 - GOLD_WEIGHTS["correct"] + 1e-9  # correct beats wrong, always


def test_gold_rank_orders_and_detects_reversal(splits):
    r = next(x for x in splits["train"] if x["task"] == "arithmetic")
    wrong = corrupt(r, "wrong_answer", random.Random(0))
    assert gold_rank(r, [wrong, r["response"]]) == [1, 0]
    assert gold_rank(r, [r["response"], wrong]) == [0, 1]
    parts = gold_reward_parts(r, wrong)
    assert parts["correct"] == 0 and parts["format"] == 1  # the subtle corruption: steps kept, final number changed


def test_labeler_without_correctness_fails_the_check(splits, monkeypatch):
    # failure side: a labeler that ignores correctness cannot tell a plausible wrong answer from the reference
    monkeypatch.setitem(R.GOLD_WEIGHTS, "correct", 0.0)
    rng = random.Random(0)
    ties = 0
    for r in splits["heldout_instances"]:
        c = corrupt(r, "wrong_answer", rng)
        ties += gold_reward(r, c) >= gold_reward(r, r["response"]) - 1e-9
    assert ties > 0


def test_gold_and_corrupt_refuse_bad_input():
    with pytest.raises(CourseError, match="'task'"):
        gold_reward({"response": "x"}, "x")
    with pytest.raises(CourseError, match="unknown task family"):
        gold_reward({"task": "nope", "response": "x"}, "x")
    with pytest.raises(CourseError, match="unknown corruption"):
        corrupt({"task": "plural", "response": "the cats"}, "shuffled", random.Random(0))


# ---------------------------------------------------------------- pairs


def test_expand_rankings_counts_pairs_and_ties():
    p, st = expand_rankings(
        [
            {"prompt": "A", "responses": list("abcde"), "scores": [5, 4, 3, 2, 1]},
            {"prompt": "B", "responses": list("abcd"), "scores": [1, 1, 0, 0]},
        ]
    )
    assert len([x for x in p if x["prompt"] == "A"]) == math.comb(5, 2)
    assert len([x for x in p if x["prompt"] == "B"]) == math.comb(4, 2) - 2 and st["ties_dropped"] == 2
    assert all(x["gold_chosen"] > x["gold_rejected"] for x in p)
    assert {x["group"] for x in p} == {0, 1}


def test_build_preference_data_expands_k_choose_2_grouped(pairs):
    ps, st, recs = pairs
    assert st["pairs"] + st["ties_dropped"] == len(recs) * math.comb(4, 2)  # every pair kept or counted
    assert st["prompts"] + st["prompts_without_pairs"] == len(recs)
    by = {}
    for i, p in enumerate(ps):
        by.setdefault(p["group"], []).append(i)
    assert all(max(v) - min(v) + 1 == len(v) for v in by.values())  # a prompt's pairs are contiguous
    assert all(1 <= len(v) <= math.comb(4, 2) for v in by.values())
    for p in ps:
        rec = recs[p["group"]]
        assert p["prompt"] == format_prompt(rec["instruction"], rec["input"]) and p["task"] == rec["task"]
        assert p["chosen"] != p["rejected"] and p["gold_chosen"] > p["gold_rejected"]
        assert (
            gold_reward(p, p["chosen"]) == p["gold_chosen"] and gold_reward(p, p["rejected"]) == p["gold_rejected"]
        )  # recomputable
    assert any(p["source_rejected"].startswith("sample@") or p["source_chosen"].startswith("sample@") for p in ps)


def test_build_preference_data_other_k_and_determinism(policy, tok, splits):
    recs = splits["train"][30:36]
    a = build_preference_data(policy, tok, recs, k=5, seed=3, progress=False)
    st = build_preference_data.last_stats
    assert st["pairs"] + st["ties_dropped"] == len(recs) * math.comb(5, 2)
    assert a == build_preference_data(policy, tok, recs, k=5, seed=3, progress=False)
    with pytest.raises(CourseError, match="k must be"):
        build_preference_data(policy, tok, recs, k=1, progress=False)
    with pytest.raises(CourseError, match="'task'"):
        build_preference_data(policy, tok, [{"instruction": "x", "response": "y"}], progress=False)


def test_grouped_sampler_keeps_groups_together():
    groups = [0, 0, 0, 1, 1, 2, 3, 3, 3]
    order = list(GroupedPairSampler(groups, seed=0))
    assert sorted(order) == list(range(len(groups)))
    seen = [groups[i] for i in order]
    assert all(seen.count(g) == sum(1 for j in range(len(seen)) if seen[j] == g) for g in set(seen))
    runs = [g for j, g in enumerate(seen) if j == 0 or seen[j - 1] != g]
    assert len(runs) == len(set(groups))  # each group is one contiguous run


# ---------------------------------------------------------------- preference files: bad input


def test_preference_files_round_trip_and_errors(pairs, tmp_path):
    ps = pairs[0]
    save_preferences(ps, tmp_path / "p.jsonl")
    assert load_preferences(tmp_path / "p.jsonl") == ps
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "P", "chosen": "a", "rejected": "b"}\n{"prompt": "P", "chosen": "same", "rejected": " same "}\n'
    )
    with pytest.raises(CourseError, match=r"bad.jsonl:2: chosen == rejected"):
        load_preferences(bad)
    bad.write_text('{"prompt": "P", "chosen": "a", "rejected": "b"}\n\n{"prompt": "P", "chosen": "a"}\n')
    with pytest.raises(CourseError, match=r"bad.jsonl:3: missing field 'rejected'"):
        load_preferences(bad)
    bad.write_text('{"prompt": "P", "chosen": "a", "rejected": 3}\n')
    with pytest.raises(CourseError, match=r"field 'rejected' must be a string"):
        load_preferences(bad)
    bad.write_text('{"prompt": "P", "responses": ["a", "b", "c"], "scores": [1, 1, 1]}\n')
    with pytest.raises(CourseError, match=r"bad.jsonl:1: prompt has no pairs"):
        load_preferences(bad)
    bad.write_text('{"prompt": "P", "responses": ["a", "b"], "scores": [1]}\n')
    with pytest.raises(CourseError, match=r"2 responses but 1 scores"):
        load_preferences(bad)
    bad.write_text("\n")
    with pytest.raises(CourseError, match="no preference pairs"):
        load_preferences(bad)
    with pytest.raises(CourseError, match="no preference pairs"):
        validate_preferences([])
    good = tmp_path / "rank.jsonl"
    good.write_text('{"prompt": "P", "responses": ["a", "b", "c"], "scores": [3, 2, 1]}\n')
    assert len(load_preferences(good)) == 3


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


# ---------------------------------------------------------------- last real token (pitfall 7)


def test_last_token_index_both_sides():
    assert last_token_index(torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])).tolist() == [2, 4, 4]
    with pytest.raises(CourseError, match="no real token"):
        last_token_index(torch.tensor([[0, 0]]))


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
    # rotary embeddings (Llama) are shift-invariant; GPT-2's learned absolute positions are not: the fix must be there for them
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


# ---------------------------------------------------------------- training


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
    assert any("eval_accuracy" in h for h in met["log_history"])
    files = {f.name for f in (tmp_path / "rm").iterdir()}
    assert {"model.safetensors", "reward_head.safetensors", "config.json", "tokenizer.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    m2, tk2 = load_reward_model(tmp_path / "rm")
    a = m.score([ps[0]["prompt"]], [ps[0]["chosen"]], tk2)
    b = m2.score([ps[0]["prompt"]], [ps[0]["chosen"]], tk2)
    assert abs(a[0] - b[0]) < 1e-5
    with pytest.raises(CourseError, match="not a saved RewardModel"):
        RewardModel.from_pretrained(SFT)


def test_training_raises_accuracy(pairs, tmp_path):
    ps = pairs[0]
    seed_everything(0)
    tok = load_tokenizer(SFT)
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


def test_gold_agreement_perfect_and_reversed(pairs):
    ps = pairs[0]
    table = {}
    for p in ps:
        table[(p["prompt"], p["chosen"])] = p["gold_chosen"]
        table[(p["prompt"], p["rejected"])] = p["gold_rejected"]
    good, bad = gold_agreement(_Oracle(table), None, ps), gold_agreement(_Oracle(table, -1.0), None, ps)
    assert good["top1_agreement"] == 1.0 and abs(good["kendall_tau"] - 1) < 1e-9 and good["pearson"] > 0.99
    assert bad["top1_agreement"] < 0.5 and bad["kendall_tau"] < 0 and bad["pearson"] < -0.99
    assert (
        pairwise_accuracy(_Oracle(table), None, ps) == 1.0 and pairwise_accuracy(_Oracle(table, -1.0), None, ps) == 0.0
    )


def test_calibration_table_tells_calibrated_from_overconfident():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(4000, generator=g) * 2
    y = torch.rand(4000, generator=g) < torch.sigmoid(d)  # outcomes drawn from the predicted probabilities
    rc = torch.where(y, d, -d)
    rr = torch.zeros(4000)  # orient each pair so that the chosen one is first
    calibrated = calibration_table(rc.numpy(), rr.numpy())["ece"]
    over = calibration_table(5 * rc.numpy(), rr.numpy())["ece"]
    assert calibrated < 0.03 < over


# ---------------------------------------------------------------- the shipped reward model


def test_shipped_tiny_rm():
    d = assets_dir() / "tiny-rm"
    assert sum(f.stat().st_size for f in d.iterdir()) < 6 * 2**20
    stats = json.loads((d / "rm_stats.json").read_text())
    assert stats["heldout"]["accuracy"] >= 0.90 and stats["eval"]["split"].endswith("['heldout_instances']")
    m, tk = load_reward_model("tiny-rm")
    assert tk.get_vocab() == load_tokenizer(SFT).get_vocab()
    rec = {
        "instruction": "Convert the text to uppercase.",
        "input": "red cat",
        "response": "RED CAT",
        "task": "uppercase",
    }
    p = format_prompt(rec["instruction"], rec["input"])
    s = m.score([p] * 3, ["RED CAT", "RED CAT\nInstruction: Convert", "RED CAT CAT CAT CAT CAT CAT CAT"], tk)
    assert s[0] > s[1] and s[0] > s[2], s
