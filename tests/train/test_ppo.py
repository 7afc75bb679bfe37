"""train.ppo: padding invariance of experience and loss, the advantage floor, the config (validation, unknown keys),
the training loop (non-finite rewards skipped, determinism, RM-initialised values, PPO-ptx), bad input named."""

import math

import pytest
import torch

from instruct_course.core import CourseError, seed_everything
from instruct_course.data.masking import format_prompt
from instruct_course.train.ppo import HISTORY_KEYS, PPOConfig, make_experience, ppo_loss, train_ppo
from instruct_course.train.ppo_rollout import PolicyWithValueHead, load_policy, rollout


def test_padding_changes_nothing(tiny_sft, tok, records, repad):
    lm = tiny_sft
    seed_everything(0)
    model = PolicyWithValueHead(lm)
    torch.nn.init.normal_(model.v_head.weight, std=0.1)
    model.eval()
    ref = load_policy("tiny-sft")[0]
    with torch.no_grad():  # a reference that differs from the policy, so the KL term is not zero
        for p in ref.parameters():
            p.add_(0.01 * torch.randn_like(p))
    prompts = [format_prompt(r["instruction"], r["input"]) for r in records[:6]]
    ro = rollout(lm, tok, prompts, max_new_tokens=16, temperature=1.0)
    ro2 = repad(ro, tok.pad_token_id)
    # the score goes on the last real response token, which is EOS whenever the response ended
    last = ro["response_mask"].sum(1) - 1
    ends = ro["response"][torch.arange(6), last]
    assert (
        ro["has_eos"].any()
        and (ends[ro["has_eos"]] == tok.eos_token_id).all()
        and (ends[~ro["has_eos"]] != tok.eos_token_id).all()
    )
    cfg = PPOConfig(batch_size=6, mini_batch_size=6)
    scores = torch.linspace(-1, 1, 6)
    e1, e2 = make_experience(model, ref, ro, scores, 0.1, cfg), make_experience(model, ref, ro2, scores, 0.1, cfg)
    R = ro["response"].shape[1]
    m = ro["response_mask"].bool()
    for k in ("old_logp", "old_values", "advantages", "returns", "rewards"):
        assert torch.allclose(e1[k][m], e2[k][:, :R][m], atol=1e-5), k
        assert e2[k][:, R:].abs().sum() == 0 or k in ("old_logp", "ref_logp")
    assert torch.allclose(e1["seq_kl"], e2["seq_kl"], atol=1e-4)
    idx = torch.arange(6)
    l1, s1 = ppo_loss(model, ro, e1, idx, cfg)
    l2, s2 = ppo_loss(model, ro2, e2, idx, cfg)
    assert abs(l1.item() - l2.item()) < 1e-5
    assert e1["seq_kl"].abs().sum() > 0


def test_advantage_floor_clamps_only_the_whitened_advantages(tiny_sft, tok, records):
    lm = tiny_sft
    seed_everything(0)
    model = PolicyWithValueHead(lm).eval()
    ro = rollout(
        lm, tok, [format_prompt(r["instruction"], r["input"]) for r in records[:8]], max_new_tokens=12, temperature=1.0
    )
    scores, m = torch.linspace(-1, 1, 8), ro["response_mask"].bool()
    plain = make_experience(model, lm, ro, scores, 0.1, PPOConfig(batch_size=8, mini_batch_size=8))
    for floor in (0.0, -0.5):
        e = make_experience(
            model, lm, ro, scores, 0.1, PPOConfig(batch_size=8, mini_batch_size=8, advantage_floor=floor)
        )
        assert (
            torch.allclose(e["advantages"][m], plain["advantages"][m].clamp(min=floor))
            and e["advantages"][~m].abs().sum() == 0
        )
        assert torch.equal(e["returns"], plain["returns"])  # the value targets are untouched
    assert (plain["advantages"][m] < -0.5).any()  # so both floors above really clamped something
    assert PPOConfig().advantage_floor is None  # the non-standard option is off by default
    for bad in (0.5, float("nan"), "0"):
        with pytest.raises(CourseError, match="advantage_floor"):
            PPOConfig(advantage_floor=bad)


def test_config_validation():
    with pytest.raises(CourseError, match="kl_estimator"):
        PPOConfig(kl_estimator="k2")
    with pytest.raises(CourseError, match="mini_batch_size"):
        PPOConfig(batch_size=10, mini_batch_size=4)
    with pytest.raises(CourseError, match="temperature"):
        PPOConfig(temperature=0.0)
    for bad in (dict(steps=0), dict(ppo_epochs=1.5), dict(horizon=True), dict(value_init="critic"), dict(lam=1.5)):
        with pytest.raises(CourseError, match="PPOConfig"):
            PPOConfig(**bad)
    for bad in (dict(kl_coef=-0.1), dict(vf_coef=float("nan"))):
        with pytest.raises(CourseError, match=">= 0"):
            PPOConfig(**bad)


def test_config_overrides_refuse_unknown_keys(records):
    cfg = PPOConfig.from_overrides(steps=3, kl_coef=0.2)
    assert (cfg.steps, cfg.kl_coef, cfg.cliprange) == (3, 0.2, 0.2)
    with pytest.raises(CourseError, match=r"unknown PPOConfig setting\(s\): 'init_kl_coef'.*Valid: steps"):
        PPOConfig.from_overrides(init_kl_coef=0.2)  # TRL's old name: ours is kl_coef, and the message lists it
    with pytest.raises(CourseError, match="kl_coef"):
        PPOConfig.from_overrides(init_kl_coef=0.2)
    with pytest.raises(CourseError, match="unknown PPOConfig setting"):  # a dict config goes through the same check
        train_ppo("tiny-sft", lambda r, t: [0.0] * len(t), records, {"stpes": 1}, progress=False)
    with pytest.raises(CourseError, match="must be a PPOConfig"):
        train_ppo("tiny-sft", lambda r, t: [0.0] * len(t), records, config=[1], progress=False)


def test_nan_reward_step_is_skipped_and_counted(records):
    calls = {"n": 0}

    def reward(recs, texts):
        calls["n"] += 1
        return [float("nan") if calls["n"] == 2 and i == 0 else float(len(t.split())) for i, t in enumerate(texts)]

    cfg = PPOConfig(steps=3, batch_size=4, mini_batch_size=4, ppo_epochs=1, max_new_tokens=8)
    with pytest.warns(UserWarning, match="skipped"):
        _, h = train_ppo("tiny-sft", reward, records, cfg, progress=False)
    assert h["skipped_nonfinite"] == [0, 1, 1] and len(h["step"]) == 3
    assert math.isnan(h["rm_reward"][1]) and not math.isnan(h["rm_reward"][2])


def test_train_is_deterministic_and_moves_the_policy(records):
    cfg = PPOConfig(steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=8, learning_rate=1e-3)
    reward = lambda recs, texts: [float(len(t)) for t in texts]
    p1, h1 = train_ppo("tiny-sft", reward, records, cfg, progress=False)
    _, h2 = train_ppo("tiny-sft", reward, records, cfg, progress=False)
    assert h1["rm_reward"] == h2["rm_reward"] and h1["pg_loss"] == h2["pg_loss"]
    assert set(HISTORY_KEYS) <= set(h1) and all(len(h1[k]) == 2 for k in HISTORY_KEYS)
    base = load_policy("tiny-sft")[0]
    assert any(not torch.equal(a, b) for a, b in zip(p1.parameters(), base.parameters()))
    assert not hasattr(p1, "v_head")


def test_value_model_from_rm_and_ptx_run(tiny_rm, records):
    rm, rm_tok = tiny_rm
    before = [p.detach().clone() for p in rm.parameters()]
    cfg = PPOConfig(
        steps=2,
        batch_size=4,
        mini_batch_size=4,
        ppo_epochs=1,
        max_new_tokens=8,
        value_init="rm",
        ptx_coef=0.5,
        ptx_batch_size=2,
    )
    _, h = train_ppo("tiny-sft", rm, records, cfg, progress=False, reward_tokenizer=rm_tok)
    assert h["value_model"] == "copy of the reward model" and all(
        math.isfinite(x) for x in h["ptx_loss"] + h["vf_loss"]
    )
    assert all(torch.equal(a, b) for a, b in zip(before, rm.parameters()))  # the reward model itself is not trained


def test_tokenizer_mismatch_refused(splits, records):
    from instruct_course.models import train_tokenizer

    other = train_tokenizer([r["instruction"] + " " + r["response"] for r in splits["train"][:200]], vocab_size=300)

    class TinyRM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(1, 1)

        def forward(self, input_ids, attention_mask):
            return input_ids.float().mean(1)

    with pytest.raises(CourseError, match="different tokenizers"):
        train_ppo(
            "tiny-sft",
            TinyRM(),
            records,
            PPOConfig(steps=1, batch_size=4, mini_batch_size=4),
            progress=False,
            reward_tokenizer=other,
        )


def test_bad_inputs_named():
    with pytest.raises(CourseError, match="reward_model"):
        train_ppo("tiny-sft", None, [{"instruction": "x"}], progress=False)
    with pytest.raises(CourseError, match="empty"):
        train_ppo("tiny-sft", lambda r, t: [0.0] * len(t), [], progress=False)
    with pytest.raises(CourseError, match=r"prompts_records\[1\]"):
        train_ppo("tiny-sft", lambda r, t: [0.0] * len(t), [{"instruction": "a"}, {"text": "b"}], progress=False)
    with pytest.raises(TypeError):  # no default policy: the caller names one
        train_ppo(reward_model=lambda r, t: [0.0] * len(t), prompts_records=[{"instruction": "a"}])
    with pytest.raises(CourseError, match="model name or a causal LM"):
        train_ppo(None, lambda r, t: [0.0] * len(t), [{"instruction": "a"}], progress=False)
